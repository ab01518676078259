"""Short-range prior: the screened nuclear repulsion of Ziegler, Biersack and Littmark (ZBL),
switched off smoothly before the distances a student was trained on.

A student learns the teacher's energy only where the teacher's data are; two atoms pushed closer
than any training frame meet whatever the network extrapolates, often an attractive well. The
ZBL "universal" potential is the Coulomb repulsion of the two nuclei screened by their electrons,

    E(r) = Z_i Z_j e^2 / (4 pi eps0 r) * phi(r / a),   a = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23),
    phi(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x) + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x),

the short-range law of ion-stopping and radiation-damage simulations (LAMMPS ``pair_style zbl``
uses the same constants). It is multiplied by a switch ``s(r)`` equal to 1 below ``r_inner``
and to 0 above ``r_outer`` (``1 - 10 x^3 + 15 x^4 - 6 x^5`` between, ``x = (r - r_inner) /
(r_outer - r_inner)``): energy, forces and their derivatives stay continuous, and the prior is
exactly zero where the training data are when ``r_outer`` is at most the shortest distance in
them. It has no parameters: training fits the network to the teacher minus the prior. The
network's share of an edge fades by the same switch over the lower half of that window
(:meth:`PairRepulsion.network_share`): on the training data it is whole, and below ``r_inner`` the
prior is the only term of the pair.

Energies and forces are closed forms on the (few) edges shorter than ``r_outer``, no autograd,
so every evaluation path of :class:`~mlffd.models.StudentPotential` (one graph, fused, blocks)
adds the same numbers, and the TorchScript artifact carries them to LAMMPS.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

def zbl(r: Tensor, zi: Tensor, zj: Tensor) -> List[Tensor]:
    """ZBL energy (eV) and its derivative dE/dr (eV/Å) at distances ``r`` (Å) between atoms of
    atomic numbers ``zi`` and ``zj`` (tensors broadcasting with ``r``)."""
    # the ZBL constants of the module docstring, written as literals because TorchScript compiles
    # no Python globals; 0.46850 Å = 0.8854 Bohr radii, 14.3996454784 eV Å = e^2 / (4 pi eps0)
    # (CODATA 2018; LAMMPS metal units agree to 7 digits)
    a = 0.46850 / (torch.pow(zi, 0.23) + torch.pow(zj, 0.23))
    x = r / a
    e1 = 0.18175 * torch.exp(-3.19980 * x)
    e2 = 0.50986 * torch.exp(-0.94229 * x)
    e3 = 0.28022 * torch.exp(-0.40290 * x)
    e4 = 0.02817 * torch.exp(-0.20162 * x)
    phi = e1 + e2 + e3 + e4
    dphi = -(3.19980 * e1 + 0.94229 * e2 + 0.40290 * e3 + 0.20162 * e4)
    coulomb = 14.3996454784 * zi * zj / r
    energy = coulomb * phi
    # d/dr [k phi(r/a) / r] = k (phi'(x) / a - phi(x) / r) / r
    return [energy, coulomb * (dphi / a - phi / r)]


def switch(r: Tensor, r_inner: Tensor, r_outer: Tensor) -> List[Tensor]:
    """The switch s(r) (1 below ``r_inner``, 0 above ``r_outer``, C2 in between) and ds/dr."""
    width = r_outer - r_inner
    x = ((r - r_inner) / width).clamp(0.0, 1.0)
    x2 = x * x
    s = 1.0 - x * x2 * (10.0 - 15.0 * x + 6.0 * x2)
    ds = -30.0 * x2 * (1.0 - x) * (1.0 - x) / width
    return [s, ds]


class PairRepulsion(nn.Module):
    """The switched ZBL prior of every element pair as a per-atom energy and edge gradients.

    Buffers: ``atomic_numbers [S]`` of the model's elements and ``r_inner``, ``r_outer``
    ``[S, S]`` (Å, symmetric). ``r_outer`` of zero turns a pair's prior off; training sets them
    from the shortest distances in its data (:func:`switch_distances`).
    """

    def __init__(self, atomic_numbers: List[int]) -> None:
        super().__init__()
        n = len(atomic_numbers)
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=torch.get_default_dtype()))
        self.register_buffer("r_inner", torch.zeros(n, n, dtype=torch.get_default_dtype()))
        self.register_buffer("r_outer", torch.zeros(n, n, dtype=torch.get_default_dtype()))

    def forward(self, vectors: Tensor, species: Tensor, edge_index: Tensor, energy_mask: Tensor) -> List[Tensor]:
        """Per-atom energies ``[N]``, the indices ``[K]`` of the edges the prior acts on and their
        ``dE/dr_ij [K, 3]``, for edge vectors ``[E, 3]``.

        Each directed edge carries half the pair's energy, on its centre atom: a full neighbour
        list holds every pair twice, and an atom outside ``energy_mask`` (a LAMMPS ghost) counts
        nothing, as its owner counts it. Only the few edges inside the prior's reach are
        returned, so an evaluation without close contacts pays one distance test per edge."""
        atom_energies = torch.zeros(species.shape[0], dtype=vectors.dtype, device=vectors.device)
        # closed forms on detached vectors: nothing here needs autograd (no ``torch.no_grad``
        # block either: TorchScript mishandles values defined in one and used after it)
        vectors = vectors.detach()
        close = torch.nonzero(self.reaches((vectors * vectors).sum(1))).squeeze(1)
        if close.shape[0] == 0:
            return [atom_energies, close, torch.zeros(0, 3, dtype=vectors.dtype, device=vectors.device)]
        # the reach is the largest pair's: keep the edges inside their own pair's r_outer,
        # centred on atoms that count energy
        centre = edge_index[0].index_select(0, close)
        a = species.index_select(0, centre)
        b = species.index_select(0, edge_index[1].index_select(0, close))
        r = torch.linalg.vector_norm(vectors.index_select(0, close), dim=1)
        keep = torch.nonzero((r < self.r_outer[a, b].to(r.dtype)) & energy_mask.index_select(0, centre)).squeeze(1)
        close = close.index_select(0, keep)
        centre = centre.index_select(0, keep)
        a = a.index_select(0, keep)
        b = b.index_select(0, keep)
        r = r.index_select(0, keep)
        v = vectors.index_select(0, close)
        e, de = zbl(r, self.atomic_numbers[a].to(v.dtype), self.atomic_numbers[b].to(v.dtype))
        s, ds = switch(r, self.r_inner[a, b].to(v.dtype), self.r_outer[a, b].to(v.dtype))
        atom_energies.index_add_(0, centre, 0.5 * e * s)
        grad = (0.5 * (de * s + e * ds) / r).unsqueeze(1) * v
        return [atom_energies, close, grad]

    def reaches(self, r2: Tensor) -> Tensor:
        """Mask of the edges of squared length ``r2`` inside the prior's reach (the largest pair's
        ``r_outer``): the only edges it acts on and the only ones whose network share is below 1."""
        reach = self.r_outer.max().to(r2.dtype)
        return r2 < reach * reach

    def network_share(self, r: Tensor, a: Tensor, b: Tensor) -> List[Tensor]:
        """The network's share of edges of length ``r`` between elements ``a`` and ``b`` (indices),
        and its derivative: ``1 - s(r)`` with the switch ``s`` taken from ``r_inner`` to the middle
        of the prior's window, ``(r_inner + r_outer) / 2``: whole there and above, 0 below
        ``r_inner``.

        The network's radial basis is multiplied by it, so below ``r_inner`` the network does not
        see the pair at all and the prior alone sets the wall: the network's invariants are
        polynomials of a basis that grows as ``r`` falls, and far below the data they can
        outweigh any prior by orders of magnitude. Whole down to the middle of the window, it
        leaves frames a little closer than the training data (held-out MD comes within 10 % of
        its shortest distances) to the network as trained. Pairs whose prior is off (``r_outer``
        not above ``r_inner``) keep their full share."""
        inner = self.r_inner[a, b].to(r.dtype)
        outer = self.r_outer[a, b].to(r.dtype)
        on = outer > inner
        s, ds = switch(r, inner, torch.where(on, 0.5 * (inner + outer), inner + 1.0))
        share = torch.where(on, 1.0 - s, torch.ones_like(r))
        return [share, torch.where(on, -ds, torch.zeros_like(r))]


#: the switch starts (``r_inner``) at this fraction of ``r_outer``: a wide window keeps the
#: switch's own force term (E ds/dr, at most 1.875 E / width) small next to the wall it joins
INNER_FRACTION = 0.6


def switch_distances(shortest: Tensor) -> List[Tensor]:
    """``r_inner`` and ``r_outer`` ``[S, S]`` from the shortest distance of each element pair in
    the training data (``inf`` for a pair never seen within the cutoff).

    ``r_outer`` is that distance, so the prior is exactly zero on every training frame; a pair
    the data never brought close takes the shortest distance of any pair (the network knows no
    more about it), and with no pair seen at all the prior stays off."""
    seen = torch.isfinite(shortest)
    fallback = shortest[seen].min() if bool(seen.any()) else torch.zeros((), dtype=shortest.dtype)
    outer = torch.where(seen, shortest, fallback)
    return [INNER_FRACTION * outer, outer]
