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
them. It has no parameters: training fits the network to the teacher minus the prior.

Energies and forces are closed forms on the (few) edges shorter than ``r_outer``, no autograd,
so every evaluation path of :class:`~mlffd.models.StudentPotential` (one graph, fused, blocks)
adds the same numbers, and the TorchScript artifact carries them to LAMMPS.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

#: ZBL screening function phi(x) = sum_k C_k exp(-D_k x)
ZBL_C = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_D = (3.19980, 0.94229, 0.40290, 0.20162)
#: 0.8854 Bohr radii (Å): the ZBL screening length is this over (Z_i^0.23 + Z_j^0.23)
ZBL_SCREENING_A = 0.46850
ZBL_EXPONENT = 0.23
#: e^2 / (4 pi eps0) in eV Å (CODATA 2018; LAMMPS metal units use the same to 7 digits)
COULOMB_EV_A = 14.3996454784


def zbl(r: Tensor, zi: Tensor, zj: Tensor) -> List[Tensor]:
    """ZBL energy (eV) and its derivative dE/dr (eV/Å) at distances ``r`` (Å) between atoms of
    atomic numbers ``zi`` and ``zj`` (tensors broadcasting with ``r``)."""
    a = ZBL_SCREENING_A / (torch.pow(zi, ZBL_EXPONENT) + torch.pow(zj, ZBL_EXPONENT))
    x = r / a
    phi = torch.zeros_like(r)
    dphi = torch.zeros_like(r)
    for c, d in zip(ZBL_C, ZBL_D):
        term = c * torch.exp(-d * x)
        phi = phi + term
        dphi = dphi - d * term
    coulomb = COULOMB_EV_A * zi * zj / r
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
        """Per-atom energies ``[N]`` and ``dE/dr_ij [E, 3]`` of edge vectors ``[E, 3]``.

        Each directed edge carries half the pair's energy, on its centre atom: a full neighbour
        list holds every pair twice, and an atom outside ``energy_mask`` (a LAMMPS ghost) counts
        nothing, as its owner counts it."""
        n_atoms = species.shape[0]
        atom_energies = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)
        grad = torch.zeros_like(vectors)
        if edge_index.shape[1] == 0:
            return [atom_energies, grad]
        with torch.no_grad():
            si = species.index_select(0, edge_index[0])
            sj = species.index_select(0, edge_index[1])
            outer = self.r_outer[si, sj]
            r2 = (vectors.detach() * vectors.detach()).sum(1)
            close = torch.nonzero((r2 < outer * outer) & energy_mask.index_select(0, edge_index[0])).squeeze(1)
        if close.shape[0] == 0:
            return [atom_energies, grad]
        v = vectors.detach().index_select(0, close)
        r = torch.linalg.vector_norm(v, dim=1)
        a, b = si.index_select(0, close), sj.index_select(0, close)
        e, de = zbl(r, self.atomic_numbers[a].to(v.dtype), self.atomic_numbers[b].to(v.dtype))
        s, ds = switch(r, self.r_inner[a, b].to(v.dtype), self.r_outer[a, b].to(v.dtype))
        half_e = 0.5 * e * s
        half_de = 0.5 * (de * s + e * ds)
        atom_energies.index_add_(0, edge_index[0].index_select(0, close), half_e)
        grad.index_copy_(0, close, (half_de / r).unsqueeze(1) * v)
        return [atom_energies, grad]
