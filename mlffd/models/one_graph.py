"""One-graph evaluation of the student in PyTorch: every edge of the system in one autograd
graph, in a padded neighbour layout (edge -> (centre, slot)) so that the sums over neighbours are
batched matrix products that never materialise per-edge x channel tensors.

This is the reference path: training runs it, every other path (fused kernels,
:mod:`mlffd.models.fused`; blocks, :mod:`mlffd.models.blocked`) is tested against it. Its C++
mirror is the fused kernels' forward (``kernels/src/density.h``, ``kernels/src/kernels.cpp``).
Mixed into :class:`mlffd.models.potential.StudentPotential`, whose attributes it reads.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from mlffd.models.layout import centre_layout, in_centre_order, max_neighbours


class OneGraphEvaluation:
    """Per-atom energies of the whole system in one graph (methods of ``StudentPotential``)."""

    def edge_features(self, vectors: Tensor, pair_species: Tensor) -> List[Tensor]:
        """Angular components ``[E, 10]`` (1 | u | traceless u u^T as xx yy zz xy xz yz) and the
        radial basis ``[E, B]`` (zero at and beyond the cutoff) of edge vectors ``[E, 3]`` whose
        centre and neighbour are of the elements ``pair_species [2, E]``; the basis is times the
        network's share of the edges the short-range prior reaches (:meth:`PairRepulsion.network_share`)."""
        r = torch.linalg.vector_norm(vectors, dim=1)
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, self.cutoff))
        u = vectors * (1.0 / r_safe).unsqueeze(-1)
        basis = self.basis(r_safe)
        if self.use_repulsion:  # no branch on the data: torch.compile keeps one graph (the share is 1 beyond the prior's window)
            basis = basis * self.repulsion.network_share(r_safe, pair_species[0], pair_species[1])[0].unsqueeze(-1)
        x, y, z = u[:, 0], u[:, 1], u[:, 2]
        third = 1.0 / 3.0
        ang = torch.stack(
            [torch.ones_like(x), x, y, z, x * x - third, y * y - third, z * z - third, x * y, x * z, y * z], dim=1
        )
        return [ang, basis]

    def padded_features(self, vectors: Tensor, pair_species: Tensor, pad_index: Tensor, n_atoms: int,
                        max_nbrs: int) -> List[Tensor]:
        """Edge features (:meth:`edge_features`) in the padded layout of :meth:`Interaction.forward`:
        ``ang_t [n, 10, M]``, ``radial [n, M, B]``."""
        ang, basis = self.edge_features(vectors, pair_species)
        ang_pad = torch.zeros(n_atoms * max_nbrs, 10, dtype=vectors.dtype, device=vectors.device)
        ang_t = ang_pad.index_copy(0, pad_index, ang).view(n_atoms, max_nbrs, 10).transpose(1, 2)
        radial_pad = torch.zeros(n_atoms * max_nbrs, self.num_basis, dtype=vectors.dtype, device=vectors.device)
        radial = radial_pad.index_copy(0, pad_index, basis).view(n_atoms, max_nbrs, self.num_basis)
        return [ang_t, radial]

    def atomic_energies(self, vectors: Tensor, species: Tensor, edge_index: Tensor,
                        extras: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """Per-atom energies ``[N]`` from edge vectors ``[E, 3]`` (``r_j - r_i``), in one graph."""
        center = edge_index[0]
        neighbor = edge_index[1]
        n_atoms = species.shape[0]
        fused = self.use_fused(vectors.device)
        order, offsets, slot_sorted = centre_layout(center, n_atoms, not fused)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(vectors.dtype)
        h = self.embedding(species)
        if fused:
            return self.fused_energies(in_centre_order(vectors, order), species, in_centre_order(center, order),
                                       in_centre_order(neighbor, order), offsets, extras)
        # padded neighbour layout: edge e -> (centre, slot); the sums over neighbours become
        # batched matrix products that never materialise per-edge x channel tensors
        max_nbrs = max_neighbours(offsets)
        slot = slot_sorted if order.shape[0] == 0 else torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
        pad_index = center * max_nbrs + slot
        pair_species = torch.stack([species.index_select(0, center), species.index_select(0, neighbor)])
        ang_t, radial = self.padded_features(vectors, pair_species, pad_index, n_atoms, max_nbrs)
        for layer in self.interactions:
            z_nb = layer.messages(h, onehot).index_select(0, neighbor)
            h = layer(h, z_nb, ang_t, radial, pad_index)
        return self.atom_energy_from_features(h, species, extras)
