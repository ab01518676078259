"""Forces and virials from an energy of edge vectors: the artifact's shared output contract."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from mlffd import kernels


def edge_vectors(positions: Tensor, edge_index: Tensor, shifts: Tensor) -> Tensor:
    """``r_ij = pos[j] - pos[i] + shift`` as a leaf that autograd differentiates against."""
    vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts
    if not vectors.requires_grad:
        vectors.requires_grad_(True)
    return vectors


def conservative_outputs(
    positions: Tensor,
    vectors: Tensor,
    atom_energies: Tensor,
    energy_mask: Tensor,
    edge_index: Tensor,
    create_graph: bool,
    fused: bool = False,
) -> Dict[str, Tensor]:
    """Energy, per-atom energies, forces, virial and per-atom virial (see docs/artifact.md).

    Forces are ``-dE/dr`` gathered from the edge gradients ``g = dE/dr_ij``; the virial is
    ``W = -sum_e r_e ⊗ g_e``, each edge's share split half to each end for the per-atom virial.
    ``fused`` sums the edges with the CPU kernel (see :func:`add_edge_gradients`).
    """
    center = edge_index[0]
    neighbor = edge_index[1]
    atom_energies = torch.where(energy_mask, atom_energies, torch.zeros_like(atom_energies))
    energy = atom_energies.sum()
    grad_outputs: List[Optional[Tensor]] = [torch.ones_like(energy)]
    grads = torch.autograd.grad([energy], [vectors], grad_outputs=grad_outputs, create_graph=create_graph, allow_unused=True)
    g = grads[0]
    if g is None:
        g = torch.zeros_like(vectors)
    n_atoms = positions.shape[0]
    forces = torch.zeros_like(positions)
    virial = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
    atom_virial = torch.zeros(n_atoms, 9, dtype=positions.dtype, device=positions.device)
    add_edge_gradients(forces, virial, atom_virial, vectors, g, center, neighbor, fused)
    return output_dict(energy, atom_energies, forces, virial, atom_virial)


def output_dict(energy: Tensor, atom_energies: Tensor, forces: Tensor, virial: Tensor, atom_virial: Tensor) -> Dict[str, Tensor]:
    """The artifact's output record; ``atom_virial`` may come flat as ``[N, 9]``."""
    return {
        "energy": energy,
        "atom_energies": atom_energies,
        "forces": forces,
        "virial": virial,
        "atom_virial": atom_virial.view(-1, 3, 3),
    }


def add_edge_gradients(
    forces: Tensor,
    virial: Tensor,
    atom_virial: Tensor,
    vectors: Tensor,
    g: Tensor,
    center: Tensor,
    neighbor: Tensor,
    fused: bool = False,
) -> None:
    """Add the edges' share to ``forces [N, 3]``, ``virial [3, 3]`` and ``atom_virial [N, 9]`` in place.

    ``g = dE/dr_ij`` per edge: the force on the centre is ``+g``, on the neighbour ``-g``;
    ``W_e = -r_e ⊗ g_e``, half to each end for the per-atom virial. ``fused``: one pass of the
    CPU kernel ``mlffd_kernels::add_edge_gradients`` (no per-edge temporaries; virial summed in
    float64), the caller ensures it is loaded and the tensors are on the CPU.
    """
    if fused:
        kernels.add_edge_gradients(forces, virial, atom_virial, vectors.detach(), g, center, neighbor)
        return
    forces.index_add_(0, center, g).index_add_(0, neighbor, -g)
    edge_virial = -vectors.unsqueeze(2) * g.unsqueeze(1)
    virial += edge_virial.sum(0)
    half = 0.5 * edge_virial.reshape(-1, 9)
    atom_virial.index_add_(0, center, half).index_add_(0, neighbor, half)
