"""Geometry guards: the structures every engine accepts, checked before any list is built.

The limits are :data:`mlffd.contract.GEOMETRY` (``contract.json``), the same numbers the fused
kernels and the LAMMPS plugin are built with. Two checks:

- :func:`check_structure`, before a neighbour list is built: finite coordinates within
  ``max_abs_coordinate_A``, a finite, non-degenerate cell along periodic directions, and the
  work and memory that the pair search would need (periodic images to visit, neighbours per atom
  estimated from the density) within the limits: a cell vector of 1e-6 Å is an error here, not
  an out-of-memory kill later.
- :func:`check_edges`, after: no atom closer than ``min_pair_distance_A`` to another atom or to
  an image of itself (overlapping atoms make every potential meaningless or NaN), no atom with
  more than ``max_neighbors_per_atom`` neighbours, no more than ``max_edges`` edges.

Errors are :class:`GeometryError` (a ``ValueError``) naming the atoms and values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase.geometry import complete_cell

from mlffd.contract import GEOMETRY


class GeometryError(ValueError):
    """A structure outside the documented geometry limits (docs/calculator.md)."""


def _cross(a: list[float], b: list[float]) -> list[float]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def periodic_images(cell: np.ndarray, pbc, cutoff: float) -> tuple[int, list[float], float]:
    """The periodic images a pair search within ``cutoff`` visits (``prod(2 n_k + 1)``, with
    ``n_k = ceil(cutoff / h_k)`` images along periodic direction ``k`` whose cell height is
    ``h_k``; -1 when unbounded), the heights (Å; ``inf`` along non-periodic directions) and the
    cell's volume (Å^3).
    Plain floats: this runs for every structure of a batch, where numpy's per-call cost dominates."""
    rows = np.asarray(cell, dtype=np.float64).reshape(3, 3).tolist()
    volume = abs(sum(x * y for x, y in zip(rows[0], _cross(rows[1], rows[2]))))
    heights, count = [math.inf] * 3, 1.0
    for k in range(3):
        if not pbc[k]:
            continue
        area = math.sqrt(sum(x * x for x in _cross(rows[(k + 1) % 3], rows[(k + 2) % 3])))
        heights[k] = volume / area if area > 0 and volume > 0 else 0.0
        count = count * (2 * math.ceil(cutoff / heights[k]) + 1) if heights[k] > 0 else math.inf
    return (int(count) if math.isfinite(count) else -1), heights, volume


def check_positions(positions: np.ndarray) -> None:
    """Raise :class:`GeometryError` unless every coordinate is finite and within
    ``max_abs_coordinate_A`` (one pass over the array: cheap enough for every MD step)."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    limit = GEOMETRY.max_abs_coordinate_A
    if pos.size == 0 or np.abs(pos).max() <= limit:  # NaN fails the comparison too
        return
    finite = np.isfinite(pos)
    if not finite.all():
        bad = np.unique(np.nonzero(~finite)[0])
        raise GeometryError(f"positions of atom(s) {bad[:10].tolist()} are NaN or infinite; expected finite coordinates in Å")
    big = np.abs(pos).max(axis=1)
    bad = np.nonzero(big > limit)[0]
    raise GeometryError(f"atom(s) {bad[:10].tolist()} have coordinates up to {big.max():.3g} Å; "
                        f"mlffd accepts |x| <= {limit:.0e} Å (geometry.max_abs_coordinate_A)")


def check_cell(cell: np.ndarray, pbc, cutoff: float, n_atoms: int) -> None:
    """Raise :class:`GeometryError` unless ``cell`` is finite and, along periodic directions,
    non-degenerate, with the periodic images and neighbours per atom (estimated from the
    density of ``n_atoms`` atoms) of a pair search within ``cutoff`` (Å) within the limits."""
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise GeometryError(f"cutoff {cutoff!r} Å: expected a finite positive number")
    rows = np.asarray(cell, dtype=np.float64).reshape(3, 3).tolist()
    pbc3 = [bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]
    if not all(math.isfinite(x) for row in rows for x in row):
        raise GeometryError(f"cell {rows} contains NaN or infinite entries")
    if not any(pbc3):
        return
    for k in range(3):
        if pbc3[k] and not any(rows[k]):
            raise GeometryError(f"cell vector {k} is zero but the structure is periodic along it (pbc={pbc3})")
    images, heights, volume = periodic_images(rows, pbc3, cutoff)
    if min(heights) == 0:
        raise GeometryError(f"cell {rows} is singular (its vectors are coplanar) but periodic along {pbc3}")
    if images < 0 or images > GEOMETRY.max_periodic_images:
        k = heights.index(min(heights))
        raise GeometryError(
            f"cell too thin for the cutoff: its height along cell vector {k} is {heights[k]:.3g} Å, so a "
            f"{cutoff:g} Å pair search would visit {'over 1e18' if images < 0 else images} periodic images "
            f"(limit {GEOMETRY.max_periodic_images}, geometry.max_periodic_images)")
    if all(pbc3) and n_atoms:  # the heights above proved the volume non-zero
        estimate = n_atoms / volume * 4.0 / 3.0 * math.pi * cutoff**3
        if estimate > GEOMETRY.max_neighbors_per_atom:
            raise GeometryError(
                f"{n_atoms} atoms in a cell of {volume:.4g} Å^3 give ~{estimate:.0f} neighbours per atom within "
                f"{cutoff:g} Å (limit {GEOMETRY.max_neighbors_per_atom}, geometry.max_neighbors_per_atom); "
                "is the cell in Å and the structure not collapsed?")
        if estimate * n_atoms > GEOMETRY.max_edges:
            raise GeometryError(f"~{estimate * n_atoms:.3g} edges expected within {cutoff:g} Å, more than one "
                                f"structure may hold ({GEOMETRY.max_edges:.3g}, geometry.max_edges)")


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> None:
    """:func:`check_positions` and :func:`check_cell`: everything that can be checked before
    a pair search within ``cutoff`` (Å)."""
    check_positions(positions)
    check_cell(cell, pbc, cutoff, len(np.asarray(positions).reshape(-1, 3)))


def check_edges(positions: np.ndarray, index: np.ndarray, shifts: np.ndarray, n_atoms: int, first_atom: int = 0) -> None:
    """Raise :class:`GeometryError` if a built neighbour list (``index [2, E]`` grouped by
    centre, Cartesian ``shifts [E, 3]``) has a pair closer than ``min_pair_distance_A`` or an atom
    with more than ``max_neighbors_per_atom`` neighbours. Atom numbers in messages are
    relative to ``first_atom`` (a structure's first atom in a joined batch)."""
    n_edges = index.shape[1]
    if n_edges > GEOMETRY.max_edges:
        raise GeometryError(f"{n_edges} edges, more than one structure may hold ({GEOMETRY.max_edges}, geometry.max_edges)")
    if n_edges == 0:
        return
    # torch's index_select gathers whole rows in one pass; numpy's fancy indexing goes element by element
    ij = torch.from_numpy(np.ascontiguousarray(index))
    counts = torch.bincount(ij[0], minlength=first_atom + n_atoms)
    worst = int(torch.argmax(counts))
    if counts[worst] > GEOMETRY.max_neighbors_per_atom:
        raise GeometryError(f"atom {worst - first_atom} has {int(counts[worst])} neighbours within the cutoff "
                            f"(limit {GEOMETRY.max_neighbors_per_atom}, geometry.max_neighbors_per_atom)")
    pos = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))
    d = pos.index_select(0, ij[1]) - pos.index_select(0, ij[0]) + torch.from_numpy(np.ascontiguousarray(shifts, dtype=np.float64))
    r2 = (d * d).sum(1)
    closest = int(torch.argmin(r2))
    limit = GEOMETRY.min_pair_distance_A
    if r2[closest] < limit * limit:
        i, j = int(index[0, closest]) - first_atom, int(index[1, closest]) - first_atom
        other = "an image of itself" if i == j else f"atom {j}"
        raise GeometryError(f"atom {i} is {math.sqrt(float(r2[closest])):.3g} Å from {other}: overlapping atoms "
                            f"(closest legal approach {limit} Å, geometry.min_pair_distance_A)")


def lattice_inverse(cell: np.ndarray) -> np.ndarray:
    """The inverse of ``cell`` with zero (non-periodic) vectors completed: fractional
    coordinates are ``positions @ lattice_inverse(cell)``."""
    return np.linalg.inv(complete_cell(np.asarray(cell, dtype=np.float64).reshape(3, 3)))


def far_images(positions: np.ndarray, inverse: np.ndarray, pbc) -> np.ndarray | None:
    """Integer lattice offsets ``n [N, 3]`` that bring atoms lying more than one cell outside
    the box (fractional coordinate outside ``[-1, 2)`` along a periodic direction) back next to
    it, or ``None`` when there is none (the usual case: positions are then used as given).
    ``inverse`` is :func:`lattice_inverse` of the cell.

    ``positions - n @ cell`` describes the same periodic structure; the model sees edge vectors
    of size ~cutoff either way, but float32 loses them when they are differences of large
    coordinates (an atom displaced by 1e8 Å), so such atoms are brought back first.
    """
    pbc3 = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc3.any() or len(positions) == 0:
        return None
    frac = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ inverse
    frac[:, ~pbc3] = 0.0
    if frac.min() >= -1.0 and frac.max() < 2.0:
        return None
    far = (frac < -1.0) | (frac >= 2.0)
    return np.where(far, np.floor(frac), 0.0).astype(np.int64)


def reports_stress(cell_rank: int, pbc) -> bool:
    """Whether a stress is reported for a structure: a cell of rank 3, periodic along at least one
    direction (a slab's stress is its in-plane response; a molecule, periodic nowhere, has none
    even when a box is set around it)."""
    return int(cell_rank) == 3 and bool(np.any(pbc))
