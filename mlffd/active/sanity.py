"""Physics sanity of a student's prediction, against what its training data covered.

A student is trusted only where its data were. Four flags need no committee and no teacher:
``non_finite`` (energy or forces NaN/inf, or the student could not evaluate the structure),
``short_distance`` (two atoms closer than a fraction of the shortest distance of that element
pair in the training data: where collapses start), ``energy_floor`` (energy per atom, less
the per-element reference energies, below the training minimum by a margin: a false minimum
deeper than anything the teacher showed) and ``large_force`` (a force component above a limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from mlffd.neighbors import neighbor_list

#: sanity reasons, most severe first (a frame's ``reason`` is the first that applies)
REASONS = ("non_finite", "short_distance", "energy_floor", "large_force")


@dataclass(frozen=True)
class Reference:
    """What the sanity checks compare with, from labelled training frames."""

    numbers: tuple[int, ...]  #: atomic numbers of the elements, sorted
    shortest: np.ndarray  #: [S, S] shortest distance (Å) of each element pair in the data (inf: never within the cutoff)
    reference_energies: np.ndarray  #: [S] per-element energies (eV) by least squares
    energy_floor: float  #: the lowest energy per atom (less references) in the data (eV/atom)
    #: the median distance from an atom to its nearest neighbour in the data (Å; 0: unknown): the
    #: bond length, which close-contact frames (dimers, pushed pairs) do not shorten as they do ``shortest``
    nearest_neighbour: float = 0.0

    def index(self, numbers: np.ndarray) -> np.ndarray:
        """Element indices of atomic numbers (ValueError for an element the data lack)."""
        table = np.full(119, -1, dtype=np.int64)
        table[list(self.numbers)] = np.arange(len(self.numbers))
        idx = table[np.asarray(numbers)]
        if (idx < 0).any():
            raise ValueError(f"elements {sorted(set(np.asarray(numbers)[idx < 0].tolist()))} are not in the training data")
        return idx

    def pair_shortest(self, z1: int, z2: int) -> float:
        """The pair's shortest training distance; a pair never within the cutoff takes the shortest of any pair."""
        i, j = self.index(np.array([z1, z2]))
        d = self.shortest[i, j]
        return float(d) if np.isfinite(d) else self.any_shortest

    @property
    def any_shortest(self) -> float:
        finite = self.shortest[np.isfinite(self.shortest)]
        return float(finite.min()) if finite.size else 2.0

    @property
    def bond(self) -> float:
        """The typical first-neighbour distance (Å): :attr:`nearest_neighbour`, else :attr:`any_shortest`."""
        return self.nearest_neighbour if self.nearest_neighbour > 0 else self.any_shortest

    def relative_energy(self, atoms: Atoms, energy: float) -> float:
        """Energy per atom less the per-element references (eV/atom): comparable across compositions."""
        return float((energy - self.reference_energies[self.index(atoms.numbers)].sum()) / max(len(atoms), 1))


def reference_from_frames(frames: Sequence[Atoms], cutoff: float = 6.0) -> Reference:
    """:class:`Reference` of labelled frames (energies from their calculators or info)."""
    from mlffd.data import frame_labels

    numbers = tuple(sorted({int(z) for a in frames for z in a.numbers}))
    ref = Reference(numbers, np.full((len(numbers),) * 2, np.inf), np.zeros(len(numbers)), 0.0)
    counts = np.array([np.bincount(ref.index(a.numbers), minlength=len(numbers)) for a in frames], dtype=float)
    energies = np.array([frame_labels(a)[0] for a in frames])
    e_ref = np.linalg.lstsq(counts, energies, rcond=None)[0]
    shortest = np.full((len(numbers),) * 2, np.inf)
    nearest = []
    for a in frames:
        i, j, d = _pairs(a, cutoff)
        if len(d):
            si, sj = ref.index(a.numbers[i]), ref.index(a.numbers[j])
            np.minimum.at(shortest, (si, sj), d)
            per_atom = np.full(len(a), np.inf)
            np.minimum.at(per_atom, i, d)
            nearest.append(per_atom[np.isfinite(per_atom)])
    shortest = np.minimum(shortest, shortest.T)
    floor = min((e - c @ e_ref) / len(a) for a, e, c in zip(frames, energies, counts))
    bond = float(np.median(np.concatenate(nearest))) if nearest else 0.0
    return Reference(numbers, shortest, e_ref, float(floor), bond)


def _pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    d = np.linalg.norm(atoms.positions[edges.j] - atoms.positions[edges.i] + edges.shifts(atoms.cell.array), axis=1)
    return edges.i, edges.j, d


def distance_limits(reference: Reference, fraction: float, absolute: float | None) -> np.ndarray:
    """[S, S] flag distances: ``absolute`` everywhere when given, else ``fraction`` × the pair's shortest."""
    if absolute is not None:
        return np.full(reference.shortest.shape, float(absolute))
    shortest = np.where(np.isfinite(reference.shortest), reference.shortest, reference.any_shortest)
    return fraction * shortest


def sanity_reasons(atoms: Atoms, energy: float, forces: np.ndarray, reference: Reference, limits: np.ndarray,
                   energy_margin: float, max_force: float) -> list[str]:
    """The :data:`REASONS` that apply to a structure and the student's energy and forces (empty: sane)."""
    reasons = []
    forces = np.asarray(forces, dtype=np.float64)
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
        reasons.append("non_finite")
    if len(atoms) > 1 and np.isfinite(atoms.positions).all():
        try:
            i, j, d = _pairs(atoms, float(limits.max()))
        except ValueError:  # a cell the pair search refuses (degenerate, exploded): the frame is broken
            reasons.append("non_finite")
        else:
            if len(d) and (d < limits[reference.index(atoms.numbers[i]), reference.index(atoms.numbers[j])]).any():
                reasons.append("short_distance")
    if np.isfinite(energy) and reference.relative_energy(atoms, energy) < reference.energy_floor - energy_margin:
        reasons.append("energy_floor")
    if np.isfinite(forces).all() and forces.size and float(np.abs(forces).max()) > max_force:
        reasons.append("large_force")
    return [r for r in REASONS if r in reasons]


def shortest_distance(atoms: Atoms, cutoff: float = 6.0) -> float:
    """The shortest interatomic distance (Å) within ``cutoff`` (inf when none)."""
    _, _, d = _pairs(atoms, cutoff)
    return float(d.min()) if len(d) else float("inf")


__all__ = ["REASONS", "Reference", "distance_limits", "reference_from_frames", "sanity_reasons", "shortest_distance"]
