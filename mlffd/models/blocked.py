"""Blocked (bounded-memory) evaluation of the student, with a hand-written reverse pass over
the layers: what evaluation of large systems runs (above ``chunk_atoms`` atoms).

Memory does not grow with the per-edge work of all layers at once: a first pass keeps only the
atom features ``h_t`` and messages ``z_t`` of every layer (no autograd graph); then, layer by
layer from the last, each block of centre atoms rebuilds its own small graph (edge vectors,
neighbour messages and its features as leaves) and back-propagates the incoming gradient
``dE/dh_{t+1}``. Edge gradients go straight into forces and virials, message gradients are
scattered to the neighbours and joined with ``dE/dh_t``. Same numbers as the one-graph path
(tests/model/test_model.py and tests/model/test_kernels.py compare them).

Mirrors: the block size is chosen by ``mlffd/artifact.py`` ``block_atoms`` in Python and by
``lammps_plugin/src/pair_mlffd.cpp`` ``configure_blocks`` in LAMMPS (the same policy; blocks
of ghost atoms skip the last layer there); with the fused kernels each block's backward is
``moment_density_backward_into`` (``kernels/src/kernels.cpp``). Mixed into
:class:`mlffd.models.potential.StudentPotential`, whose attributes it reads.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mlffd import kernels
from mlffd.models.fused import density_backward_into
from mlffd.models.layout import block_bounds, block_edges, centre_layout, max_neighbours
from mlffd.models.outputs import add_edge_gradients, output_dict


class BlockedEvaluation:
    """Evaluation in blocks of centre atoms (methods of ``StudentPotential``)."""

    def block_padding(self, ci: Tensor, nj: Tensor, v: Tensor, species: Tensor, slot: Tensor, block: List[int],
                      max_nbrs: int) -> List[Tensor]:
        """The PyTorch path's padded inputs of one block's edges (:func:`block_edges`): padded
        slots, ``ang_t`` and ``radial`` for :meth:`Interaction.forward`."""
        pad = (ci - block[0]) * max_nbrs + slot[block[2] : block[3]]
        pair_species = torch.stack([species.index_select(0, ci), species.index_select(0, nj)])
        ang_t, radial = self.padded_features(v, pair_species, pad, block[1] - block[0], max_nbrs)
        return [pad, ang_t, radial]

    def block_geometry(self, v: Tensor, species: Tensor, ci: Tensor, nj: Tensor, near: bool) -> Optional[Tensor]:
        """The fused kernels' edge geometry of a block's edges, switched (:meth:`switched_geometry`),
        when the short-range prior reaches any of them (``near``, :meth:`blocks_near`); else None
        (the kernels then compute the plain geometry themselves)."""
        if not near:
            return None
        geometry = kernels.edge_geometry(v.detach(), self.cutoff, self.num_basis, self.envelope_p)
        return self.switched_geometry(geometry, species, ci, nj)

    def blocks_near(self, positions: Tensor, edge_index: Tensor, shifts: Tensor, order: Tensor, blocks: List[List[int]],
                    extras: Optional[Dict[str, Tensor]]) -> List[bool]:
        """Whether the short-range prior reaches an edge of each block: one distance test per edge
        for the whole evaluation, whose edge vectors and answer (``extras``) the prior then takes
        instead of testing again."""
        if not self.use_repulsion:
            return [False for _ in blocks]
        vectors = (positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts).detach()
        near = self.repulsion.reaches((vectors * vectors).sum(1))
        if extras is not None:
            extras["edge_vectors"] = vectors
            extras["edge_index"] = edge_index
            extras["contacts"] = near.any()
        out: List[bool] = []
        for block in blocks:
            sel = near[block[2] : block[3]] if order.shape[0] == 0 else near.index_select(0, order[block[2] : block[3]])
            out.append(bool(sel.any()))
        return out

    def chunked_outputs(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
        extras: Optional[Dict[str, Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """The outputs of :func:`conservative_outputs` evaluated in blocks of ``chunk_atoms``
        centre atoms (see the module docstring), peak memory ~ one block's edges plus a few
        numbers per atom and layer.

        With the fused CPU kernels the first pass also keeps each layer's density (``10 B D``
        numbers per atom), the second differentiates the per-atom part from it with autograd
        and hands the density gradient to ``moment_density_backward_into``: each layer's edge work
        runs once forward and once backward.
        """
        n_atoms = species.shape[0]
        fused = self.use_fused(positions.device)
        # edges in centre order: block [a0, a1) of centres owns sorted edges [e0, e1); each block
        # gathers its own edges when it runs (no per-edge copies kept)
        order, offsets, slot = centre_layout(edge_index[0], n_atoms, not fused)
        max_nbrs = 0 if fused else max_neighbours(offsets)  # the padded layout of the PyTorch path
        blocks = block_bounds(offsets, n_atoms, self.chunk_atoms)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(positions.dtype)
        near = self.blocks_near(positions, edge_index, shifts, order, blocks, extras)
        hs, zs, rhos = self.features_pass(positions, species, edge_index, shifts, onehot, order, offsets, slot, max_nbrs,
                                          blocks, near, fused)
        atom_energies = torch.zeros(n_atoms, dtype=positions.dtype, device=positions.device)
        forces = torch.zeros_like(positions)
        virial = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
        atom_virial = torch.zeros(n_atoms, 9, dtype=positions.dtype, device=positions.device)
        head_energies = torch.zeros(n_atoms, max(1, self.ensemble), dtype=positions.dtype, device=positions.device)
        novelty = torch.zeros(n_atoms, dtype=positions.dtype, device=positions.device)
        # from the last layer (with the readout) back to the first; g_h carries dE/dh_{t+1} between layers
        g_h = torch.zeros(0, dtype=positions.dtype, device=positions.device)
        for t in range(len(self.interactions) - 1, -1, -1):
            g_h = self.layer_gradients(t, g_h, hs[t], zs[t], rhos, positions, species, edge_index, shifts, energy_mask, order,
                                       offsets, slot, max_nbrs, blocks, near, fused, [atom_energies, head_energies, forces, virial, atom_virial, novelty])
        if extras is not None and self.ensemble > 1:
            extras["heads"] = head_energies
        if extras is not None and self.use_novelty:
            extras["novelty"] = novelty
        return output_dict(atom_energies.sum(), atom_energies, forces, virial, atom_virial)

    def features_pass(self, positions: Tensor, species: Tensor, edge_index: Tensor, shifts: Tensor, onehot: Tensor,
                      order: Tensor, offsets: Tensor, slot: Tensor, max_nbrs: int, blocks: List[List[int]],
                      near: List[bool], fused: bool) -> Tuple[List[Tensor], List[Tensor], List[List[Tensor]]]:
        """Pass 1, without a graph: the features ``hs`` and messages ``zs`` entering every layer
        and, fused, the densities ``rhos`` of every layer but the last (split by rank)."""
        n_atoms = species.shape[0]
        n_layers = len(self.interactions)
        hs: List[Tensor] = []
        zs: List[Tensor] = []
        rhos: List[List[Tensor]] = []
        with torch.no_grad():
            h = self.embedding(species)
            for t, layer in enumerate(self.interactions):
                z = layer.messages(h, onehot)
                hs.append(h)
                zs.append(z)
                if t < n_layers - 1:
                    h_next = torch.empty_like(h)
                    # fused: the layer's density, kept for pass 2 (the PyTorch path keeps none)
                    width = layer.num_basis * layer.in_dim if fused else 0
                    kept = [
                        torch.empty(n_atoms, width, dtype=positions.dtype, device=positions.device),
                        torch.empty(3, n_atoms, width, dtype=positions.dtype, device=positions.device),
                        torch.empty(6, n_atoms, width, dtype=positions.dtype, device=positions.device),
                    ]
                    for k, block in enumerate(blocks):
                        a0, a1 = block[0], block[1]
                        ci, nj, v_c, off_c = block_edges(positions, edge_index, shifts, order, offsets, block, False)
                        if fused:
                            rho = layer.fused_density(v_c, z, nj, off_c, self.cutoff, self.envelope_p,
                                                      self.block_geometry(v_c, species, ci, nj, near[k]))
                            kept[0][a0:a1] = rho[0]
                            kept[1][:, a0:a1] = rho[1]
                            kept[2][:, a0:a1] = rho[2]
                            h_next[a0:a1] = layer.mix(h[a0:a1], rho, True)
                        else:
                            pad, ang_t, radial = self.block_padding(ci, nj, v_c, species, slot, block, max_nbrs)
                            h_next[a0:a1] = layer(h[a0:a1], z.index_select(0, nj), ang_t, radial, pad)
                    if fused:
                        rhos.append(kept)
                    h = h_next
        return hs, zs, rhos

    # One function for a layer's whole block loop (~75 lines): TorchScript cannot pass a layer
    # (a submodule) to another method, so everything that calls the layer stays inside the loop
    # that picks it; what does not call it is in block_target and fused.density_backward_into.
    def layer_gradients(self, t: int, g_h: Tensor, h_t: Tensor, z_t: Tensor, rhos: List[List[Tensor]], positions: Tensor,
                        species: Tensor, edge_index: Tensor, shifts: Tensor, energy_mask: Tensor, order: Tensor, offsets: Tensor,
                        slot: Tensor, max_nbrs: int, blocks: List[List[int]], near: List[bool], fused: bool,
                        acc: List[Tensor]) -> Tensor:
        """Pass 2 for layer ``t``, block by block: given ``g_h = dE/dh_{t+1}`` (ignored for the last
        layer, which carries the readout), add the layer's edge gradients to the accumulators
        ``acc`` (atom energies, head energies, forces, virial, per-atom virial, novelty) and return
        ``dE/dh_t``."""
        n_layers = len(self.interactions)
        forces, virial, atom_virial = acc[2], acc[3], acc[4]
        no_messages = torch.zeros(0, dtype=positions.dtype, device=positions.device)  # the first layer's messages are constants
        g_prev = torch.zeros_like(h_t)
        # TorchScript cannot index a ModuleList with a variable: pick layer t by enumerating
        for idx, blayer in enumerate(self.interactions):
            if idx == t:
                g_z = torch.zeros_like(z_t)
                for k, block in enumerate(blocks):
                    a0, a1 = block[0], block[1]
                    # blocks that cannot contribute are skipped: no energy-carrying atom in
                    # the last layer (e.g. LAMMPS ghosts), no incoming gradient before it
                    if t == n_layers - 1:
                        if not bool(energy_mask[a0:a1].any()):
                            continue
                    elif not bool((g_h[a0:a1] != 0).any()):
                        continue
                    h_c = h_t[a0:a1].detach()
                    if t > 0:  # the embedding h_0 does not depend on positions
                        h_c.requires_grad_(True)
                    # the first layer's messages are the constant one-hot: no leaf
                    leaves: List[Tensor] = []
                    ci, nj, v_c, off_c = block_edges(positions, edge_index, shifts, order, offsets, block, not fused)
                    geometry: Optional[Tensor] = None
                    if fused:  # leaves: the block's density (kept, or computed), its features
                        if t < n_layers - 1:
                            rho_c = [rhos[t][0][a0:a1], rhos[t][1][:, a0:a1], rhos[t][2][:, a0:a1]]
                            geometry = self.block_geometry(v_c, species, ci, nj, near[k])  # the one its density had
                        else:  # computed here: its forward and backward share the edges' geometry
                            with torch.no_grad():
                                geometry = kernels.edge_geometry(v_c, self.cutoff, blayer.num_basis, self.envelope_p)
                                if near[k]:
                                    geometry = self.switched_geometry(geometry, species, ci, nj)
                                rho_c = blayer.fused_density(v_c, z_t, nj, off_c, self.cutoff, self.envelope_p, geometry)
                        leaves = [r.detach().requires_grad_(True) for r in rho_c]
                        out = blayer.mix(h_c, leaves, True)
                    else:  # leaves: edge vectors, features, per-edge messages
                        pad, ang_t, radial = self.block_padding(ci, nj, v_c, species, slot, block, max_nbrs)
                        z_c = z_t.index_select(0, nj).detach().requires_grad_(not blayer.first)
                        out = blayer(h_c, z_c, ang_t, radial, pad)
                        leaves = [v_c]
                        if not blayer.first:
                            leaves.append(z_c)
                    n_edge_leaves = len(leaves)
                    if t > 0:
                        leaves.append(h_c)
                    block_grad: List[Optional[Tensor]] = []
                    if t == n_layers - 1:
                        target = self.block_target(out, species, energy_mask, block, acc[0], acc[1], acc[5])
                        block_grad.append(torch.ones_like(target))
                    else:
                        target = out
                        block_grad.append(g_h[a0:a1])
                    grads = torch.autograd.grad([target], leaves, grad_outputs=block_grad, allow_unused=True)
                    if t > 0:
                        g_c = grads[n_edge_leaves]
                        if g_c is not None:
                            g_prev[a0:a1] = g_c
                    if fused:  # edge gradients into forces and virials, message gradients onto g_z
                        density_backward_into(grads, leaves, v_c, geometry, z_t, ci, nj, off_c, self.cutoff, blayer.num_basis,
                                              self.envelope_p, blayer.norm, forces, virial, atom_virial,
                                              no_messages if blayer.first else g_z)
                    else:
                        if not blayer.first:
                            g_zc = grads[1]
                            if g_zc is not None:
                                g_z.index_add_(0, nj, g_zc)
                        g_e = grads[0]
                        if g_e is not None:
                            add_edge_gradients(forces, virial, atom_virial, v_c.detach(), g_e, ci, nj)
                if not blayer.first:
                    g_prev = g_prev + torch.matmul(g_z, blayer.project.weight)
        return g_prev

    def block_target(self, out: Tensor, species: Tensor, energy_mask: Tensor, block: List[int], atom_energies: Tensor,
                     head_energies: Tensor, novelty: Tensor) -> Tensor:
        """The last layer's block: its atoms' energies from the features ``out`` (recorded in
        ``atom_energies``, ``head_energies`` and ``novelty``), summed over the energy-carrying
        atoms, the target to differentiate."""
        a0, a1 = block[0], block[1]
        block_extras: Dict[str, Tensor] = {}
        e_c = self.atom_energy_from_features(out, species[a0:a1], block_extras)
        if "heads" in block_extras:
            head_energies[a0:a1] = block_extras["heads"].detach()
        if "novelty" in block_extras:
            novelty[a0:a1] = block_extras["novelty"]
        e_c = torch.where(energy_mask[a0:a1], e_c, torch.zeros_like(e_c))
        atom_energies[a0:a1] = e_c.detach()
        return e_c.sum()
