"""The student potential: an equivariant moment message-passing network.

Each interaction layer builds, for every atom ``i`` and channel ``k``, Cartesian moments of its
neighbourhood up to rank 2,

    A0_ik = sum_j R0_k(r_ij, z_j)
    A1_ik = sum_j R1_k(r_ij, z_j) u_ij               (vector)
    A2_ik = sum_j R2_k(r_ij, z_j) (u_ij u_ij - I/3)  (traceless symmetric tensor)

(``u_ij`` the unit vector, ``z_j`` the neighbour's element (first layer) or a learned projection
of its features (later layers), ``R`` learned linear functions of a Bessel basis times a smooth
polynomial envelope, one per channel and rank). Their rotation
invariants - A0, |A1|^2, |A2|^2, A1.A2.A1 and tr(A2^3) - are up to four-body in the atomic
positions (like MACE with L = 2 and correlation order 3) and feed a residual MLP update of the
atom features. The energy is a per-atom readout plus per-element reference energies; forces and
virials come from autograd with respect to the edge vectors, so they are exactly conservative.
Energy and forces go continuously to zero at the cutoff (the envelope's first two derivatives
vanish there).
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import Tensor, nn

from mlffd.models.config import ModelConfig
from mlffd.models.outputs import conservative_outputs, edge_vectors


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
    """One message-passing layer: neighbour density -> moments -> invariants -> residual update.

    The per-edge work is factorised so that it does not grow with the channel count: each edge
    contributes the outer product ``Y_l(u) ⊗ basis_b(r) ⊗ z_j`` (10 angular components, B
    radial functions, D neighbour features) to a per-atom density ``rho[i, l, (b, d)]``; the
    learned radial/channel mixing ``W_rank`` is then a per-atom matrix product. For the first
    layer ``z_j`` is the one-hot element of the neighbour.
    """

    def __init__(
        self,
        features: int,
        channels: int,
        num_basis: int,
        hidden: int,
        avg_num_neighbors: float,
        num_elements: int,
        message_dim: int,
        first: bool,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.first = first
        self.in_dim = num_elements if first else message_dim
        self.num_basis = num_basis
        width = num_basis * self.in_dim
        self.w0 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        self.w1 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        self.w2 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        # the first layer carries the element one-hot instead (an empty, frozen projection)
        self.project = nn.Linear(features, message_dim, bias=False)
        if first:  # unused: keep it out of the parameter count and of optimisers
            self.project.weight.requires_grad_(False)
        self.update = MLP([5 * channels + features, hidden, features])
        self.norm = 2.0 / math.sqrt(float(avg_num_neighbors))
        self.register_buffer("sym_weight", torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.get_default_dtype()))

    def forward(self, h: Tensor, onehot: Tensor, ang_basis: Tensor, pad_index: Tensor, neighbor: Tensor) -> Tensor:
        """One layer.

        ``ang_basis`` is ``[N, 10 * B, M]``: per centre atom and neighbour slot, the angular
        components times the radial basis (zero in empty slots); ``pad_index`` maps each edge to
        its slot ``centre * M + slot``; ``onehot`` is the element one-hot ``[N, S]``.
        """
        n_atoms = h.shape[0]
        max_nbrs = ang_basis.shape[2]
        if self.first:
            z = onehot.index_select(0, neighbor)  # [E, S]
        else:
            z = self.project(h).index_select(0, neighbor)  # [E, D]
        z_pad = torch.zeros(n_atoms * max_nbrs, self.in_dim, dtype=h.dtype, device=h.device)
        z_pad = z_pad.index_copy(0, pad_index, z).view(n_atoms, max_nbrs, self.in_dim)
        # rho[i, (l, b), d] = sum_j Y_l(u_ij) basis_b(r_ij) z_jd, as a batched matrix product
        rho = torch.bmm(ang_basis, z_pad).view(n_atoms, 10, self.num_basis * self.in_dim)
        rho = rho * self.norm
        k = self.channels
        a0 = torch.matmul(rho[:, 0, :], self.w0)  # [N, K]
        a1 = torch.matmul(rho[:, 1:4, :], self.w1)  # [N, 3, K]
        a2s = torch.matmul(rho[:, 4:10, :], self.w2)  # [N, 6, K] symmetric storage
        b1 = (a1 * a1).sum(1)
        b2 = (a2s * a2s * self.sym_weight.view(1, 6, 1)).sum(1)
        a2 = a2s[:, [0, 3, 4, 3, 1, 5, 4, 5, 2], :].view(n_atoms, 3, 3, k)  # full symmetric tensor
        a2a1 = (a2 * a1.unsqueeze(1)).sum(2)  # [N, 3, K]: (A2 . A1)_a
        b3 = (a2a1 * a1).sum(1)
        a2a2 = (a2.unsqueeze(3) * a2.unsqueeze(1)).sum(2)  # [N, 3, 3, K]: (A2 A2)_ac
        b4 = (a2a2 * a2).sum((1, 2))
        inv = torch.cat([a0, b1, b2, b3, b4, h], dim=1)
        return h + self.update(inv)


class StudentPotential(nn.Module):
    """Energy model with conservative forces and virials; the artifact's scripted entry point."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.cutoff = float(config.cutoff)
        self.num_elements = len(config.elements)
        self.embedding = nn.Embedding(self.num_elements, config.features)
        self.num_basis = int(config.num_basis)
        self.basis = RadialBasis(config.cutoff, config.num_basis, config.envelope_p)
        self.interactions = nn.ModuleList(
            [
                Interaction(
                    config.features,
                    config.channels,
                    config.num_basis,
                    config.hidden,
                    config.avg_num_neighbors,
                    self.num_elements,
                    config.message_dim,
                    first=(t == 0),
                )
                for t in range(config.num_interactions)
            ]
        )
        self.readout = MLP([config.features, config.readout_hidden, 1])
        self.register_buffer("reference_energies", torch.zeros(self.num_elements, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.ones((), dtype=torch.get_default_dtype()))
        self.register_buffer("shift", torch.zeros((), dtype=torch.get_default_dtype()))

    @torch.jit.unused
    def unused_parameters(self) -> List[str]:
        """Names of parameters the energy does not depend on (the first layer's projection)."""
        return ["interactions.0.project.weight"]

    def atomic_energies(self, vectors: Tensor, species: Tensor, edge_index: Tensor) -> Tensor:
        """Per-atom energies ``[N]`` from edge vectors ``[E, 3]`` (``r_j - r_i``)."""
        center = edge_index[0]
        neighbor = edge_index[1]
        r = torch.linalg.vector_norm(vectors, dim=1)
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, self.cutoff))
        u = vectors / r_safe.unsqueeze(-1)
        basis = self.basis(r_safe)  # [E, B], zero for edges at or beyond the cutoff
        # angular components: 1 | u (3) | traceless u u^T stored as xx yy zz xy xz yz (6)
        x, y, z = u[:, 0], u[:, 1], u[:, 2]
        third = 1.0 / 3.0
        ang = torch.stack(
            [torch.ones_like(x), x, y, z, x * x - third, y * y - third, z * z - third, x * y, x * z, y * z], dim=1
        )
        edge_ang = (ang.unsqueeze(-1) * basis.unsqueeze(1)).reshape(-1, 10 * self.num_basis)  # [E, 10 B]
        # padded neighbour layout: edge e -> (centre, slot); the sums over neighbours become
        # batched matrix products that never materialise per-edge x channel tensors
        n_atoms = species.shape[0]
        n_edges = center.shape[0]
        counts = torch.bincount(center, minlength=n_atoms)
        max_nbrs = int(counts.max().item()) if n_edges > 0 else 0
        order = torch.argsort(center, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot_sorted = torch.arange(n_edges, device=center.device) - starts.index_select(0, center.index_select(0, order))
        slot = torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
        pad_index = center * max_nbrs + slot
        ang_basis = torch.zeros(n_atoms * max_nbrs, 10 * self.num_basis, dtype=vectors.dtype, device=vectors.device)
        ang_basis = ang_basis.index_copy(0, pad_index, edge_ang).view(n_atoms, max_nbrs, 10 * self.num_basis).transpose(1, 2)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(vectors.dtype)
        h = self.embedding(species)
        for layer in self.interactions:
            h = layer(h, onehot, ang_basis, pad_index, neighbor)
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
        vectors = edge_vectors(positions, edge_index, shifts)
        atom_energies = self.atomic_energies(vectors, species, edge_index)
        return conservative_outputs(positions, vectors, atom_energies, energy_mask, edge_index, self.training)
