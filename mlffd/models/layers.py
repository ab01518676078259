"""The student's layers: radial basis, envelope, MLPs and the moment interaction.

Each interaction layer builds, for every atom ``i`` and channel ``k``, Cartesian moments of its
neighbourhood up to rank 2,

    A0_ik = sum_j R0_k(r_ij, z_j)
    A1_ik = sum_j R1_k(r_ij, z_j) u_ij               (vector)
    A2_ik = sum_j R2_k(r_ij, z_j) (u_ij u_ij - I/3)  (traceless symmetric tensor)

(``u_ij`` the unit vector, ``z_j`` the neighbour's element (first layer) or a learned projection
of its features (later layers), ``R`` learned linear functions of a Bessel basis times a smooth
polynomial envelope, one per channel and rank). Their rotation invariants - A0, |A1|^2, |A2|^2,
A1.A2.A1 and tr(A2^3) - feed a residual MLP update of the atom features.

Mirrored in C++: ``kernels/src/density.h`` and ``kernels/src/kernels.cpp`` compute the same
neighbour density (:meth:`Interaction.density`, :class:`RadialBasis`, :func:`polynomial_envelope`:
``moment_density``, ``edge_geometry``) and invariants (:func:`cubic_invariants`:
``moment_invariants``); tests/model/test_kernels.py compares them. A change of the math here is a
change there, and a new kernel operator set (``mlffd/kernels.py``).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor, nn

from mlffd import kernels


def polynomial_envelope(x: Tensor, p: int) -> Tensor:
    """Smooth cutoff of DimeNet/NequIP: 1 at x=0, 0 with two vanishing derivatives at x>=1.

    ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, evaluated as
    ``1 + x^p (c0 + x (c1 + c2 x))`` (one power instead of three)."""
    pf = float(p)
    c0 = -(pf + 1.0) * (pf + 2.0) / 2.0
    c1 = pf * (pf + 2.0)
    c2 = -pf * (pf + 1.0) / 2.0
    env = 1.0 + torch.pow(x, p) * (c0 + x * (c1 + c2 * x))
    return torch.where(x < 1.0, env, torch.zeros_like(x))


def cubic_invariants(a1: Tensor, a2s: Tensor) -> List[Tensor]:
    """``A1.A2.A1`` and ``tr(A2^3)`` per atom and channel from ``a1 [3, N, K]`` and the symmetric
    ``a2s [6, N, K]`` (xx yy zz xy xz yz), component-major: closed forms on ``[3, N, K]`` blocks
    instead of ``[3, 3, 3, N, K]`` intermediates (the fused kernel ``moment_invariants`` computes
    the same formulas).

    With diagonal ``d`` and off-diagonal ``o = (xy, xz, yz)``:
    ``A1.A2.A1 = sum_a d_a x_a^2 + 2 (xy x y + xz x z + yz y z)`` and
    ``tr(A2^3) = sum_a d_a^3 + 3 (|o|^2 tr(A2) - sum_a d_a o_opp(a)^2) + 6 xy xz yz`` where
    ``o_opp`` pairs xx with yz, yy with xz and zz with xy."""
    d = a2s[0:3]
    o = a2s[3:6]
    pairs = a1[[0, 0, 1]] * a1[[1, 2, 2]]  # x y, x z, y z
    a1a2a1 = (d * a1 * a1).sum(0) + 2.0 * (o * pairs).sum(0)
    o2 = o * o
    tr3 = (
        (d * d * d).sum(0)
        + 3.0 * (o2.sum(0) * d.sum(0) - (d * o2.flip(0)).sum(0))
        + 6.0 * o[0] * o[1] * o[2]
    )
    return [a1a2a1, tr3]


class RadialBasis(nn.Module):
    """Bessel basis sin(n pi r / rc) / r times the polynomial envelope: ``[E] -> [E, n]``."""

    def __init__(self, cutoff: float, num_basis: int, envelope_p: int) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_p = int(envelope_p)
        # exact in float64 (rounded once when the model is cast): the fused kernel computes the same
        # frequencies as multiples of pi / cutoff
        self.register_buffer("freqs", torch.arange(1, num_basis + 1, dtype=torch.float64) * (math.pi / cutoff))
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        x = r / self.cutoff
        env = polynomial_envelope(x, self.envelope_p)
        r_safe = r.clamp(min=1e-6)
        weight = (self.prefactor * env / r_safe).unsqueeze(-1)  # one [E] factor, not [E, n] divisions
        return torch.sin(self.freqs * r_safe.unsqueeze(-1)) * weight


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

    def messages(self, h: Tensor, onehot: Tensor) -> Tensor:
        """What each atom sends its neighbours: ``[N, S]`` element one-hot (first layer) or ``[N, D]``."""
        if self.first:
            return onehot
        return self.project(h)

    def density(self, z_nb: Tensor, ang_t: Tensor, radial: Tensor, pad_index: Tensor) -> Tensor:
        """The normalised neighbour density ``rho [10, n, B * D]`` (component-major) of ``n``
        centre atoms (PyTorch).

        ``z_nb`` holds each edge's neighbour message (:meth:`messages` gathered by neighbour);
        ``ang_t`` is ``[n, 10, M]``: the angular components of each centre's ``M`` neighbour
        slots, ``radial`` the ``[n, M, B]`` radial basis (both zero in empty slots);
        ``pad_index`` maps each edge to its slot ``centre * M + slot``.
        """
        n_atoms = ang_t.shape[0]
        max_nbrs = ang_t.shape[2]
        z_pad = torch.zeros(n_atoms * max_nbrs, self.in_dim, dtype=z_nb.dtype, device=z_nb.device)
        z_pad = z_pad.index_copy(0, pad_index, z_nb).view(n_atoms, max_nbrs, self.in_dim)
        # einsum's outer product back-propagates as two contractions (faster than broadcasting)
        radial_z = torch.einsum("nmb,nmd->nmbd", radial, z_pad).reshape(n_atoms, max_nbrs, self.num_basis * self.in_dim)
        # rho[i, l, (b, d)] = sum_j Y_l(u_ij) basis_b(r_ij) z_jd, as a batched matrix product
        return (torch.bmm(ang_t, radial_z) * self.norm).transpose(0, 1)

    def fused_density(self, vectors: Tensor, messages: Tensor, neighbor: Tensor, offsets: Tensor,
                      cutoff: float, envelope_p: int, geometry: Optional[Tensor] = None) -> List[Tensor]:
        """:meth:`density` by the fused CPU kernel ``mlffd_kernels::moment_density`` from edge
        vectors sorted by centre (centre ``i`` owns edges ``offsets[i]:offsets[i + 1]``), the
        messages of all atoms and each edge's neighbour: no per-edge tensor besides the vectors
        (and ``geometry``, the edges' ``edge_geometry`` when several passes share it).
        Split by rank as :meth:`mix` takes it: ``[rho[0], rho[1:4], rho[4:10]]``."""
        if geometry is None:
            return kernels.moment_density(vectors, messages, neighbor, offsets, cutoff, self.num_basis, envelope_p, self.norm)
        return kernels.moment_density_geometry(vectors, geometry, messages, neighbor, offsets, cutoff, self.num_basis,
                                               envelope_p, self.norm)

    def mix(self, h: Tensor, rho: List[Tensor], fused: bool) -> Tensor:
        """Updated features ``h [n, F]`` from the density by rank ``[rho[0] [n, BD], rho[1:4]
        [3, n, BD], rho[4:10] [6, n, BD]]``: moments, invariants (by the fused kernel
        ``moment_invariants`` when ``fused``), residual MLP."""
        a0 = torch.matmul(rho[0], self.w0)  # [N, K]
        a1 = torch.matmul(rho[1], self.w1)  # [3, N, K]
        a2s = torch.matmul(rho[2], self.w2)  # [6, N, K] symmetric storage
        if fused:
            inv = torch.cat([a0, kernels.moment_invariants(a1, a2s), h], dim=1)
        else:
            b1 = (a1 * a1).sum(0)
            b2 = (a2s * a2s * self.sym_weight.view(6, 1, 1)).sum(0)
            b3, b4 = cubic_invariants(a1, a2s)
            inv = torch.cat([a0, b1, b2, b3, b4, h], dim=1)
        return h + self.update(inv)

    def forward(self, h: Tensor, z_nb: Tensor, ang_t: Tensor, radial: Tensor, pad_index: Tensor) -> Tensor:
        """Updated features of the ``n`` centre atoms ``h [n, F]`` (PyTorch path, see :meth:`density`)."""
        rho = self.density(z_nb, ang_t, radial, pad_index)
        return self.mix(h, [rho[0], rho[1:4], rho[4:10]], False)
