"""Stillinger-Weber silicon as an mlffd artifact (the artifact contract, no learned weights).

The energy is LAMMPS' ``pair_style sw`` form (Stillinger & Weber, PRB 31, 5262 (1985)):

    E = sum_{i<j} phi2(r_ij) + sum_i sum_{j<k, j,k != i} phi3(r_ij, r_ik, theta_jik)
    phi2(r) = A eps (B (sigma/r)^p - (sigma/r)^q) exp(sigma / (r - a sigma))
    phi3 = lambda eps (cos theta_jik - cos0)^2 exp(gamma sigma/(r_ij - a sigma)) exp(gamma sigma/(r_ik - a sigma))

with the standard silicon parameters of LAMMPS' ``potentials/Si.sw``. The module has the same
``forward(positions, species, edge_index, shifts, energy_mask)`` signature and outputs as a
student; the three-body terms come from pairs of edges that share a centre, so an atom's energy
depends only on its neighbours within ``a sigma`` (3.77118 Å) and ``interaction_range = cutoff``.
Per-atom energies: half of each pair term to each atom, each three-body term to its centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor, nn

from mlffd.models.outputs import conservative_outputs, edge_vectors


@dataclass(frozen=True)
class SWParameters:
    """One-element Stillinger-Weber parameters (LAMMPS ``Si.sw`` order and names)."""

    element: str = "Si"
    epsilon: float = 2.1683
    sigma: float = 2.0951
    a: float = 1.80
    lambda_: float = 21.0
    gamma: float = 1.20
    cos0: float = -1.0 / 3.0
    A: float = 7.049556277
    B: float = 0.6022245584
    p: float = 4.0
    q: float = 0.0
    tol: float = 0.0

    @property
    def cutoff(self) -> float:
        return self.a * self.sigma

    def lammps_file(self) -> str:
        """The parameter file for LAMMPS' ``pair_style sw`` (``pair_coeff * * FILE Si``)."""
        el = self.element
        values = [self.epsilon, self.sigma, self.a, self.lambda_, self.gamma, self.cos0, self.A, self.B, self.p, self.q, self.tol]
        body = " ".join(repr(float(v)) for v in values)
        return (
            "# Stillinger-Weber silicon (standard parameters), written by mlffd.reference.sw\n"
            "# element1 element2 element3 epsilon sigma a lambda gamma costheta0 A B p q tol\n"
            f"{el} {el} {el} {body}\n"
        )


SILICON = SWParameters()


class StillingerWeber(nn.Module):
    """Stillinger-Weber energy, forces and virials under the mlffd artifact contract."""

    def __init__(self, params: SWParameters = SILICON) -> None:
        super().__init__()
        self.epsilon = float(params.epsilon)
        self.sigma = float(params.sigma)
        self.a = float(params.a)
        self.lambda_ = float(params.lambda_)
        self.gamma = float(params.gamma)
        self.cos0 = float(params.cos0)
        self.A = float(params.A)
        self.B = float(params.B)
        self.p = float(params.p)
        self.q = float(params.q)
        self.cutoff = float(params.cutoff)

    def atomic_energies(self, vectors: Tensor, edge_index: Tensor, n_atoms: int) -> Tensor:
        """Per-atom energies ``[N]`` from edge vectors ``[E, 3]`` (``r_j - r_i``, full list)."""
        r_all = torch.linalg.vector_norm(vectors, dim=1)
        keep = torch.nonzero(r_all.detach() < self.cutoff).squeeze(1)
        vec = vectors.index_select(0, keep)
        r = r_all.index_select(0, keep)
        center = edge_index[0].index_select(0, keep)
        energies = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)

        # two-body: each directed edge carries half of phi2 to its centre
        sr = self.sigma / r
        phi2 = self.A * self.epsilon * (self.B * torch.pow(sr, self.p) - torch.pow(sr, self.q)) * torch.exp(
            self.sigma / (r - self.cutoff)
        )
        energies = energies.index_add(0, center, 0.5 * phi2)

        # three-body: unordered pairs of edges with the same centre
        n_edges = int(keep.shape[0])
        if n_edges > 1:
            order = torch.argsort(center, stable=True)
            c_sorted = center.index_select(0, order)
            counts = torch.bincount(c_sorted, minlength=n_atoms)
            start = torch.cumsum(counts, 0) - counts
            pos = torch.arange(n_edges, device=vectors.device)
            rank_in_group = pos - start.index_select(0, c_sorted)
            partners = counts.index_select(0, c_sorted) - 1 - rank_in_group
            first = torch.repeat_interleave(pos, partners)
            offsets = torch.cumsum(partners, 0) - partners
            k = torch.arange(first.shape[0], device=vectors.device) - torch.repeat_interleave(offsets, partners)
            second = first + 1 + k
            e1 = order.index_select(0, first)
            e2 = order.index_select(0, second)
            v1 = vec.index_select(0, e1)
            v2 = vec.index_select(0, e2)
            r1 = r.index_select(0, e1)
            r2 = r.index_select(0, e2)
            cos = (v1 * v2).sum(1) / (r1 * r2)
            radial = torch.exp(self.gamma * self.sigma / (r1 - self.cutoff) + self.gamma * self.sigma / (r2 - self.cutoff))
            phi3 = self.lambda_ * self.epsilon * (cos - self.cos0) ** 2 * radial
            energies = energies.index_add(0, center.index_select(0, e1), phi3)
        return energies

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
    ) -> Dict[str, Tensor]:
        vectors = edge_vectors(positions, edge_index, shifts)
        atom_energies = self.atomic_energies(vectors, edge_index, positions.shape[0])
        return conservative_outputs(positions, vectors, atom_energies, energy_mask, edge_index, False)


def export_sw(path: str | Path, params: SWParameters = SILICON, dtype: torch.dtype = torch.float64) -> Path:
    """Write Stillinger-Weber as an ``NAME.mlffd.pt`` artifact (no parameters, one 'layer')."""
    from mlffd.artifact import build_metadata, export

    model = {"name": "stillinger-weber", **asdict(params)}
    meta = build_metadata(
        elements=[params.element],
        cutoff=params.cutoff,
        num_interactions=1,
        dtype=dtype,
        num_parameters=0,
        model=model,
        teacher="none",
        metrics={},
        reference="Stillinger & Weber, Phys. Rev. B 31, 5262 (1985); parameters of LAMMPS potentials/Si.sw",
    )
    return export(StillingerWeber(params), path, meta)
