"""Torsion coverage: rotatable bonds of a molecule and random rotations about them.

MD at a few hundred kelvin crosses few torsional barriers in a short run, so the frames of one
conformer rarely show a molecule's other rotamers. A *twisted* start rotates the part of the
molecule on one side of a rotatable bond (a single, acyclic bond between two atoms that both have
other neighbours) by a random angle; the teacher's MD from there samples that region.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

#: non-bonded atoms (more than three bonds apart) closer than this times the sum of their
#: covalent radii make a twisted start a clash, and another angle is tried
CLASH_FACTOR = 1.1
#: random angles tried per bond before it is left as it is
ANGLE_TRIES = 24


def adjacency(n_atoms: int, bonds: np.ndarray) -> list[list[int]]:
    """Neighbour lists of a bond graph."""
    adj: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in np.asarray(bonds, dtype=int).reshape(-1, 2):
        adj[i].append(int(j))
        adj[j].append(int(i))
    return adj


def side(adj: list[list[int]], j: int, k: int) -> list[int] | None:
    """Atoms reached from ``k`` without crossing the bond ``j``-``k`` (None when the bond is in a ring)."""
    seen = {k}
    queue = deque([k])
    while queue:
        a = queue.popleft()
        for b in adj[a]:
            if a == k and b == j:
                continue
            if b == j:
                return None
            if b not in seen:
                seen.add(b)
                queue.append(b)
    return sorted(seen)


def rotatable_bonds(numbers: np.ndarray, bonds: np.ndarray, orders: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Acyclic bonds between two atoms that each have another heavy-atom neighbour (turning a group
    of hydrogens only is what MD does anyway); with bond ``orders``, single bonds only (a twisted
    double bond is far above anything a molecule visits at these temperatures)."""
    numbers = np.asarray(numbers)
    adj = adjacency(len(numbers), bonds)
    out = []
    pairs = np.asarray(bonds, dtype=int).reshape(-1, 2)
    single = np.ones(len(pairs), bool) if orders is None else np.asarray(orders, float) < 1.5
    for (j, k), ok in zip(pairs, single):
        if not ok:
            continue
        heavy_j = [b for b in adj[j] if b != k and numbers[b] > 1]
        heavy_k = [b for b in adj[k] if b != j and numbers[b] > 1]
        if not heavy_j or not heavy_k:
            continue  # a terminal atom or a group of hydrogens only
        if side(adj, int(j), int(k)) is None:
            continue
        out.append((int(j), int(k)))
    return out


def topological_distances(adj: list[list[int]], limit: int = 4) -> np.ndarray:
    """Bond-count distances between atoms, capped at ``limit``."""
    n = len(adj)
    dist = np.full((n, n), limit, dtype=int)
    for s in range(n):
        dist[s, s] = 0
        queue = deque([s])
        while queue:
            a = queue.popleft()
            if dist[s, a] + 1 >= limit:
                continue
            for b in adj[a]:
                if dist[s, b] > dist[s, a] + 1:
                    dist[s, b] = dist[s, a] + 1
                    queue.append(b)
    return dist


def rotate_about(positions: np.ndarray, moving: list[int], origin: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``positions`` with the atoms ``moving`` rotated by ``angle`` (rad) about ``axis`` through ``origin``."""
    u = axis / np.linalg.norm(axis)
    c, s = np.cos(angle), np.sin(angle)
    rot = c * np.eye(3) + s * np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]]) + (1 - c) * np.outer(u, u)
    out = positions.copy()
    out[moving] = (positions[moving] - origin) @ rot.T + origin
    return out


def clashes(positions: np.ndarray, numbers: np.ndarray, far: np.ndarray) -> bool:
    """Whether two atoms more than three bonds apart (``far``) are closer than the clash distance."""
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    r = covalent_radii[numbers]
    return bool(np.any(far & (d < CLASH_FACTOR * (r[:, None] + r[None]))))


def twist(atoms: Atoms, bonds: np.ndarray, n_bonds: int, rng: np.random.Generator,
          orders: np.ndarray | None = None) -> tuple[Atoms, int]:
    """A copy of the molecule with up to ``n_bonds`` random rotatable bonds each rotated by a random
    angle (no clash); returns it and how many bonds were rotated."""
    out = atoms.copy()
    candidates = rotatable_bonds(atoms.numbers, bonds, orders)
    if not candidates or n_bonds <= 0:
        return out, 0
    adj = adjacency(len(atoms), bonds)
    far = topological_distances(adj) > 3
    pos = out.positions.copy()
    done = 0
    for b in rng.permutation(len(candidates))[: int(n_bonds)]:
        j, k = candidates[int(b)]
        moving = side(adj, j, k)
        if len(moving) > len(atoms) // 2:  # turn the smaller part; the same torsion either way
            j, k = k, j
            moving = side(adj, j, k)
        for _ in range(ANGLE_TRIES):
            trial = rotate_about(pos, moving, pos[k], pos[k] - pos[j], float(rng.uniform(0.25, 2 * np.pi - 0.25)))
            if not clashes(trial, atoms.numbers, far):
                pos = trial
                done += 1
                break
    out.positions = pos
    return out, done
