"""Built-in structures for an element: the standard crystal prototypes a potential is judged on
(they live in :mod:`mlffd.prototypes`, shared with the sampler, and are re-exported here), and
the supercell sizes the property sections build from them. Every structure is relaxed by each
calculator before it is used."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from mlffd.prototypes import MELTING_K, PROTOTYPES, bond_length, melting_temperature, nearest_distance, prototype


def diagonal_repeats(atoms: Atoms, target: int) -> tuple[int, int, int]:
    """Repeats (n1, n2, n3) of ``atoms``' cell giving about ``target`` atoms in a supercell of
    roughly equal widths (each cell's height across its face, so oblique cells work too)."""
    volume = abs(atoms.cell.volume)
    if volume <= 0 or len(atoms) == 0:
        raise ValueError(f"cannot repeat a cell of volume {volume} with {len(atoms)} atoms")
    a = atoms.cell.array
    heights = [volume / np.linalg.norm(np.cross(a[(i + 1) % 3], a[(i + 2) % 3])) for i in range(3)]
    width = (volume * target / len(atoms)) ** (1.0 / 3.0)
    return tuple(max(1, int(round(width / h))) for h in heights)  # type: ignore[return-value]


def unit_cell_counts() -> dict[str, int]:
    """Atoms per built-in prototype cell (documentation and tests)."""
    return {name: len(builder("Si")) for name, builder in PROTOTYPES.items()}


__all__ = ["PROTOTYPES", "MELTING_K", "prototype", "diagonal_repeats", "nearest_distance", "bond_length", "melting_temperature",
           "unit_cell_counts", "np"]
