"""The student potential: an equivariant moment message-passing network.

Each interaction layer builds, for every atom ``i`` and channel ``k``, Cartesian moments of its
neighbourhood up to rank 2,

    A0_ik = sum_j R0_k(r_ij) x_jk
    A1_ik = sum_j R1_k(r_ij) x_jk u_ij               (vector)
    A2_ik = sum_j R2_k(r_ij) x_jk (u_ij u_ij - I/3)  (traceless symmetric tensor)

(``u_ij`` the unit vector, ``x_j`` a learned projection of the neighbour's features, ``R`` learned
radial functions of a Bessel basis times a smooth polynomial envelope). Their rotation
invariants - A0, |A1|^2, |A2|^2, A1.A2.A1 and tr(A2^3) - are up to four-body in the atomic
positions (like MACE with L = 2 and correlation order 3) and feed a residual MLP update of the
atom features. The energy is a per-atom readout plus per-element reference energies; forces and
virials come from autograd with respect to the edge vectors, so they are exactly conservative.
Energy and forces go continuously to zero at the cutoff (the envelope's first two derivatives
vanish there).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from mlffd.models.config import ModelConfig


def polynomial_envelope(x: Tensor, p: int) -> Tensor:
    """Smooth cutoff of DimeNet/NequIP: 1 at x=0, 0 with two vanishing derivatives at x>=1."""
    pf = float(p)
    env = (
        1.0
        - (pf + 1.0) * (pf + 2.0) / 2.0 * torch.pow(x, p)
        + pf * (pf + 2.0) * torch.pow(x, p + 1)
        - pf * (pf + 1.0) / 2.0 * torch.pow(x, p + 2)
    )
    return torch.where(x < 1.0, env, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """Bessel basis sin(n pi r / rc) / r times the polynomial envelope: ``[E] -> [E, n]``."""

    def __init__(self, cutoff: float, num_basis: int, envelope_p: int) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_p = int(envelope_p)
        self.register_buffer("freqs", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        x = r / self.cutoff
        env = polynomial_envelope(x, self.envelope_p)
        r_safe = r.clamp(min=1e-6)
        basis = self.prefactor * torch.sin(self.freqs * r_safe.unsqueeze(-1)) / r_safe.unsqueeze(-1)
        return basis * env.unsqueeze(-1)


class MLP(nn.Module):
    """Linear -> SiLU -> ... -> Linear."""

    def __init__(self, sizes: List[int]) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for k in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[k], sizes[k + 1]))
            if k < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Interaction(nn.Module):
    """One message-passing layer: neighbourhood moments -> invariants -> residual update."""

    def __init__(self, features: int, channels: int, num_basis: int, hidden: int, avg_num_neighbors: float) -> None:
        super().__init__()
        self.channels = channels
        self.radial = nn.Linear(num_basis, 3 * channels, bias=False)
        self.project = nn.Linear(features, channels, bias=False)
        self.update = MLP([5 * channels + features, hidden, features])
        self.norm = 1.0 / math.sqrt(float(avg_num_neighbors))
        # Radial weights start O(1) so that the moments, and the invariants built from their
        # products, start O(0.1..1) rather than vanishing.
        nn.init.normal_(self.radial.weight, std=2.0 / math.sqrt(num_basis))
        nn.init.normal_(self.project.weight, std=1.0 / math.sqrt(features))

    def forward(self, h: Tensor, basis: Tensor, y1: Tensor, y2: Tensor, center: Tensor, neighbor: Tensor) -> Tensor:
        n_atoms = h.shape[0]
        k = self.channels
        x = self.project(h).index_select(0, neighbor)  # [E, K]
        radial = self.radial(basis).view(-1, 3, k) * x.unsqueeze(1)  # [E, 3, K]
        # moments per edge: [E, 1 + 3 + 9, K]
        m = torch.cat(
            [
                radial[:, 0:1, :],
                y1.unsqueeze(-1) * radial[:, 1:2, :],
                y2.unsqueeze(-1) * radial[:, 2:3, :],
            ],
            dim=1,
        )
        a = torch.zeros(n_atoms, 13, k, dtype=m.dtype, device=m.device).index_add_(0, center, m) * self.norm
        a0 = a[:, 0, :]
        a1 = a[:, 1:4, :]  # [N, 3, K]
        a2 = a[:, 4:13, :].view(n_atoms, 3, 3, k)  # [N, 3, 3, K]
        b1 = (a1 * a1).sum(1)
        b2 = (a2 * a2).sum((1, 2))
        a2a1 = (a2 * a1.unsqueeze(1)).sum(2)  # [N, 3, K]: (A2 . A1)_a
        b3 = (a2a1 * a1).sum(1)
        a2a2 = (a2.unsqueeze(3) * a2.unsqueeze(1)).sum(2)  # [N, 3, 3, K]: (A2 A2)_ac
        b4 = (a2a2 * a2.transpose(1, 2)).sum((1, 2))
        inv = torch.cat([a0, b1, b2, b3, b4, h], dim=1)
        return h + self.update(inv)


class StudentPotential(nn.Module):
    """Energy model with conservative forces and virials; the artifact's scripted entry point."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.cutoff = float(config.cutoff)
        self.num_elements = len(config.elements)
        self.embedding = nn.Embedding(self.num_elements, config.features)
        self.basis = RadialBasis(config.cutoff, config.num_basis, config.envelope_p)
        self.interactions = nn.ModuleList(
            [
                Interaction(config.features, config.channels, config.num_basis, config.hidden, config.avg_num_neighbors)
                for _ in range(config.num_interactions)
            ]
        )
        self.readout = MLP([config.features, config.readout_hidden, 1])
        self.register_buffer("reference_energies", torch.zeros(self.num_elements, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.ones((), dtype=torch.get_default_dtype()))
        self.register_buffer("shift", torch.zeros((), dtype=torch.get_default_dtype()))

    def atomic_energies(self, vectors: Tensor, species: Tensor, edge_index: Tensor) -> Tensor:
        """Per-atom energies ``[N]`` from edge vectors ``[E, 3]`` (``r_j - r_i``)."""
        center = edge_index[0]
        neighbor = edge_index[1]
        r = torch.linalg.vector_norm(vectors, dim=1)
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, self.cutoff))
        u = vectors / r_safe.unsqueeze(-1)
        basis = self.basis(r_safe)  # zero for edges at or beyond the cutoff
        eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device)
        y2 = (u.unsqueeze(2) * u.unsqueeze(1) - eye / 3.0).reshape(-1, 9)
        h = self.embedding(species)
        for layer in self.interactions:
            h = layer(h, basis, u, y2, center, neighbor)
        out = self.readout(h).squeeze(-1)
        return out * self.scale + self.shift + self.reference_energies.index_select(0, species)

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
    ) -> Dict[str, Tensor]:
        center = edge_index[0]
        neighbor = edge_index[1]
        vectors = positions.index_select(0, neighbor) - positions.index_select(0, center) + shifts
        if not vectors.requires_grad:
            vectors.requires_grad_(True)
        atom_energies = self.atomic_energies(vectors, species, edge_index)
        atom_energies = torch.where(energy_mask, atom_energies, torch.zeros_like(atom_energies))
        energy = atom_energies.sum()
        grad_outputs: List[Optional[Tensor]] = [torch.ones_like(energy)]
        grads = torch.autograd.grad([energy], [vectors], grad_outputs=grad_outputs, create_graph=self.training, allow_unused=True)
        g = grads[0]
        if g is None:
            g = torch.zeros_like(vectors)
        n_atoms = positions.shape[0]
        forces = torch.zeros_like(positions).index_add_(0, center, g).index_add_(0, neighbor, -g)
        edge_virial = -vectors.unsqueeze(2) * g.unsqueeze(1)  # [E, 3, 3]
        half = 0.5 * edge_virial.reshape(-1, 9)
        atom_virial = (
            torch.zeros(n_atoms, 9, dtype=positions.dtype, device=positions.device)
            .index_add_(0, center, half)
            .index_add_(0, neighbor, half)
            .view(n_atoms, 3, 3)
        )
        virial = edge_virial.sum(0)
        return {
            "energy": energy,
            "atom_energies": atom_energies,
            "forces": forces,
            "virial": virial,
            "atom_virial": atom_virial,
        }
