"""Close contacts: atoms pushed together inside a structure, and dimers and trimers in vacuum.

A student learns its teacher's repulsion only where the data went. Crystal and liquid MD rarely
bring two atoms much below ~0.8 bond lengths, so without these frames the short-range wall is
whatever the network extrapolates (often a false attraction that collapses an MD run).

Default distance ranges are in units of a pair's bond length ``b`` (:func:`mlffd.prototypes.bond_length`,
the mean of the two elements' for a mixed pair):

- clusters ``[0.65 b, 1.6 b]``: 0.65 b (1.53 Å for Si) is below anything a hot liquid or a 70 %
  volume crystal reaches, where the student's repulsion prior starts to dominate; 1.6 b
  (3.8 Å for Si, the second-neighbour shell) is where the dimer curve has flattened out.
- pushed pairs ``[0.65 b, 0.95 b]``: from the same lower end up to just under the bond, inside a
  crystal or liquid environment (the many-body screening a dimer lacks).
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from mlffd.neighbors import neighbor_list
from mlffd.prototypes import bond_length

#: default distance ranges in bond lengths (see the module docstring)
CLUSTER_RANGE = (0.65, 1.6)
PUSH_RANGE = (0.65, 0.95)


def pair_bond(z1: int, z2: int) -> float:
    """Bond length (Å) of a pair of elements: the mean of their own."""
    return 0.5 * (bond_length(chemical_symbols[int(z1)]) + bond_length(chemical_symbols[int(z2)]))


def contact_bounds(contact_range: tuple[float, float] | None, default: tuple[float, float], z1: int, z2: int) -> tuple[float, float]:
    """``contact_range`` (Å) if given, else ``default`` (bond lengths) for the pair ``z1``-``z2``."""
    if contact_range is not None:
        return float(contact_range[0]), float(contact_range[1])
    b = pair_bond(z1, z2)
    return default[0] * b, default[1] * b


def _pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """i, j, shift cells and distances of all directed pairs within ``cutoff``."""
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    vec = atoms.positions[edges.j] - atoms.positions[edges.i] + edges.shifts(atoms.cell.array)
    return edges.i, edges.j, edges.shift_cells, np.linalg.norm(vec, axis=1)


def push_pair(atoms: Atoms, rng: np.random.Generator, contact_range: tuple[float, float] | None = None,
              pushed: list[tuple[int, int]] | None = None, attempts: int = 50) -> float | None:
    """Move one atom of a random nearest-neighbour pair along their bond so that the pair ends at a
    distance drawn from ``contact_range`` (Å; default :data:`PUSH_RANGE` bond lengths), in place.

    A move is kept only if no other pair (than those in ``pushed``, which it extends) is then closer
    than the drawn distance, so the pushed pair is the structure's shortest; returns that distance,
    or None when ``attempts`` draws found no such move (``atoms`` unchanged).
    """
    pushed = pushed if pushed is not None else []
    earlier = {tuple(sorted(p)) for p in pushed}
    n = len(atoms)
    if n < 2:
        return None
    cutoff = 2.0 * max(pair_bond(z, z) for z in set(atoms.numbers.tolist()))
    i_all, j_all, s_all, d_all = _pairs(atoms, cutoff)
    for _ in range(attempts):
        i = int(rng.integers(n))
        mine = (i_all == i) & (j_all != i)
        if not mine.any():
            continue
        e = int(np.flatnonzero(mine)[np.argmin(d_all[mine])])  # i's nearest neighbour (maybe an image)
        j = int(j_all[e])
        shift = s_all[e].astype(np.float64) @ atoms.cell.array
        lo, hi = contact_bounds(contact_range, PUSH_RANGE, atoms.numbers[i], atoms.numbers[j])
        d = float(rng.uniform(lo, hi))
        direction = (atoms.positions[j] + shift - atoms.positions[i]) / d_all[e]
        trial = atoms.copy()
        trial.positions[j] = atoms.positions[i] + d * direction - shift
        ti, tj, _, td = _pairs(trial, d)
        # every pair now closer than d (another image of i-j too) must be an earlier pushed one
        if any(tuple(sorted((int(ti[k]), int(tj[k])))) not in earlier for k in np.flatnonzero(td < d - 1e-9)):
            continue
        atoms.positions[j] = trial.positions[j]
        pushed.append((i, j))
        return d
    return None


def cluster(k: int, n: int, elements: list[int], contact_range: tuple[float, float] | None, vacuum: float,
            rng: np.random.Generator) -> Atoms:
    """Configuration ``k`` of ``n``: a dimer (even ``k``) or trimer (odd ``k``) of ``elements``,
    ``vacuum`` Å of empty space around it in a periodic box.

    The dimers cycle through the element pairs and their distances are laid out evenly over the
    range (one draw per stratum), so ``n`` configurations cover it; a trimer has two bonds drawn
    from the range (the first laid out the same way) at an angle of 60-180 degrees, so its third
    side is no shorter than the shorter of the two.
    """
    elements = sorted(set(int(z) for z in elements))
    size = 2 if k % 2 == 0 else 3
    m = (n + 1 - size) // 2 + 1 if size == 2 else n // 2  # configurations of this size
    stratum = k // 2
    if size == 2:
        pairs = list(itertools.combinations_with_replacement(elements, 2))
        numbers = list(pairs[stratum % len(pairs)])
    else:
        numbers = [int(rng.choice(elements)) for _ in range(3)]
    lo, hi = contact_bounds(contact_range, CLUSTER_RANGE, numbers[0], numbers[1])
    d1 = lo + (stratum + float(rng.random())) / max(m, 1) * (hi - lo)
    positions = [np.zeros(3), np.array([d1, 0.0, 0.0])]
    if size == 3:
        lo2, hi2 = contact_bounds(contact_range, CLUSTER_RANGE, numbers[0], numbers[2])
        d2 = float(rng.uniform(lo2, hi2))
        theta = np.radians(float(rng.uniform(60.0, 180.0)))
        positions.append(d2 * np.array([np.cos(theta), np.sin(theta), 0.0]))
    atoms = Atoms(numbers=numbers, positions=np.array(positions))
    atoms.rotate(float(rng.uniform(0.0, 360.0)), rng.normal(size=3) + 1e-12, center=(0, 0, 0))
    atoms.center(vacuum=vacuum)
    atoms.pbc = True
    return atoms


__all__ = ["CLUSTER_RANGE", "PUSH_RANGE", "cluster", "contact_bounds", "pair_bond", "push_pair"]
