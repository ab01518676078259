"""The bridge to mlffd's fused CPU kernels (``mlffd_kernels``, package ``mlffd-kernels``): the
student's evaluation with the neighbour densities, invariants and edge sums computed in C++.

Mirrors: ``kernels/src/kernels.cpp`` (the operators: ``edge_geometry``, ``moment_density``,
``moment_density_backward_into``, ``moment_invariants``) and ``kernels/src/density.h`` (the
density loops), which compute what :class:`mlffd.models.layers.Interaction` computes in PyTorch
(tests/model/test_kernels.py compares them); ``mlffd/kernels.py`` loads them and names the operator
set an artifact needs. The LAMMPS plugin runs the same scripted calls through the artifact.
Mixed into :class:`mlffd.models.potential.StudentPotential`, whose attributes it reads.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from mlffd import kernels
from mlffd.models.layout import centre_layout, in_centre_order
from mlffd.models.outputs import conservative_outputs


class FusedEvaluation:
    """One-graph evaluation by the fused CPU kernels (methods of ``StudentPotential``)."""

    def use_fused(self, device: torch.device) -> bool:
        """Whether evaluation on ``device`` runs the fused CPU kernel (see :attr:`fused`)."""
        return self.fused and not self.training and device.type == "cpu"

    def fused_energies(self, vectors: Tensor, species: Tensor, center: Tensor, neighbor: Tensor, offsets: Tensor,
                       extras: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """Per-atom energies by the fused CPU kernels from edges sorted by centre (centre ``i``
        owns edges ``offsets[i]:offsets[i + 1]``; ``center``, ``neighbor`` and ``vectors`` in that
        order). The edges' geometry (distances, angular components, radial basis and its
        derivative; the basis switched as :meth:`switched_geometry` says) is computed once for
        all layers' densities and their backward passes."""
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(vectors.dtype)
        h = self.embedding(species)
        # no ``torch.no_grad`` block: TorchScript mishandles values defined in one and used after
        # it, and nothing here records a graph (detached vectors; the kernel is not differentiable)
        geometry = kernels.edge_geometry(vectors.detach(), self.cutoff, self.num_basis, self.envelope_p)
        contacts = self.geometry_in_reach(geometry)
        if contacts:
            geometry = self.switched_geometry(geometry, species, center, neighbor)
        if extras is not None:
            extras["contacts"] = torch.tensor(contacts)
        for layer in self.interactions:
            rho = layer.fused_density(vectors, layer.messages(h, onehot), neighbor, offsets, self.cutoff, self.envelope_p,
                                      geometry)
            h = layer.mix(h, rho, True)
        return self.atom_energy_from_features(h, species, extras)

    def fused_outputs(
        self, positions: Tensor, species: Tensor, edge_index: Tensor, shifts: Tensor, energy_mask: Tensor,
        extras: Optional[Dict[str, Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """:func:`conservative_outputs` in one graph by the fused CPU kernels: the edge vectors,
        sorted by centre, are the autograd leaf (no scatter back to the caller's edge order)."""
        order, offsets, _ = centre_layout(edge_index[0], species.shape[0], False)
        sorted_index = in_centre_order(edge_index, order, 1)
        ci = sorted_index[0]
        nj = sorted_index[1]
        with torch.no_grad():
            v = positions.index_select(0, nj) - positions.index_select(0, ci) + in_centre_order(shifts, order)
        v.requires_grad_(True)
        if extras is not None:  # for the short-range prior, which tests the same edges' lengths
            extras["edge_vectors"] = v
            extras["edge_index"] = sorted_index
        energies = self.fused_energies(v, species, ci, nj, offsets, extras)
        return conservative_outputs(positions, v, energies, energy_mask, sorted_index, False, True)


def density_backward_into(grads: List[Optional[Tensor]], leaves: List[Tensor], vectors: Tensor, geometry: Optional[Tensor],
                          messages: Tensor, center: Tensor, neighbor: Tensor, offsets: Tensor, cutoff: float, num_basis: int,
                          envelope_p: int, norm: float, forces: Tensor, virial: Tensor, atom_virial: Tensor,
                          message_grad: Tensor) -> None:
    """Back-propagate one block's density gradient (``grads`` of the density ``leaves``, None
    where unused) through ``moment_density_backward_into``: edge gradients straight into
    ``forces``, ``virial`` and ``atom_virial``, message gradients onto ``message_grad`` (empty
    for the first layer, whose messages are constants)."""
    g_rho: List[Tensor] = []
    for q in range(3):
        g_q = grads[q]
        g_rho.append(torch.zeros_like(leaves[q]) if g_q is None else g_q)
    kernels.moment_density_backward_into(g_rho, vectors, geometry, messages, center, neighbor, offsets, cutoff, num_basis,
                                         envelope_p, norm, forces, virial, atom_virial, message_grad)
