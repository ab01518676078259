"""Periodic boxes of molecules: liquid-like packings of small molecules at a given density.

Each molecule is a pre-optimised RDKit conformer (:mod:`mlffd.sampling.molecules`), placed at a
random position with a random orientation in a cubic cell sized for ``density``; a placement is
kept only when every atom is at least ``packing_distance`` from every atom of the molecules
placed before (periodic images included), so the box starts without overlaps.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms, units

from mlffd.sampling.molecules import conformers

#: placements tried per molecule before the packing is declared impossible
PLACEMENT_TRIES = 2000


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def box_length(masses_amu: float, density_g_cm3: float) -> float:
    """Edge (Å) of the cube that holds ``masses_amu`` at ``density_g_cm3``."""
    grams = masses_amu / (units.mol)  # amu -> g (units.mol is Avogadro's number)
    return float((grams / density_g_cm3 * 1e24) ** (1.0 / 3.0))


def _min_image_distance(a: np.ndarray, b: np.ndarray, length: float) -> float:
    d = a[:, None, :] - b[None, :, :]
    d -= length * np.round(d / length)
    return float(np.sqrt((d**2).sum(-1)).min())


def pack_box(smiles: Sequence[str], counts: Sequence[int], density: float, packing_distance: float,
             rng: np.random.Generator, where: str = "box") -> Atoms:
    """A periodic cubic box with ``counts[i]`` molecules of ``smiles[i]`` at ``density`` g/cm³
    (largest molecules placed first); ValueError naming ``where`` when they do not fit."""
    templates = []
    for s, n in zip(smiles, counts):
        mol, confs = conformers(s, 1, f"{where}: molecules")
        numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        pos = confs[0] - confs[0].mean(0)
        templates += [(numbers, pos)] * int(n)
    if not templates:
        raise ValueError(f"{where}: the box has no molecules (counts are all 0)")
    from ase.data import atomic_masses

    mass = float(sum(atomic_masses[nums].sum() for nums, _ in templates))
    length = box_length(mass, density)
    for nums, pos in templates:
        extent = np.linalg.norm(pos[:, None] - pos[None], axis=-1).max() if len(pos) > 1 else 0.0
        if extent + packing_distance > length:
            raise ValueError(f"{where}: a molecule of {extent:.1f} Å does not fit the {length:.1f} Å box at density "
                             f"{density:g} g/cm³; add molecules (counts) or lower the density")
    order = sorted(range(len(templates)), key=lambda i: -len(templates[i][0]))
    placed_numbers: list[np.ndarray] = []
    placed: list[np.ndarray] = []
    for i in order:
        nums, pos = templates[i]
        for _ in range(PLACEMENT_TRIES):
            trial = pos @ random_rotation(rng).T + rng.random(3) * length
            if not placed or _min_image_distance(trial, np.concatenate(placed), length) >= packing_distance:
                placed.append(trial)
                placed_numbers.append(nums)
                break
        else:
            raise ValueError(f"{where}: could not place molecule {len(placed) + 1} of {len(templates)} without an atom "
                             f"closer than packing_distance {packing_distance:g} Å at density {density:g} g/cm³; "
                             "lower the density or packing_distance")
    atoms = Atoms(numbers=np.concatenate(placed_numbers), positions=np.concatenate(placed),
                  cell=np.eye(3) * length, pbc=True)
    atoms.wrap()
    return atoms
