"""Neighbour lists (one function, backed by vesin)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vesin


@dataclass(frozen=True)
class Edges:
    """A full (directed) neighbour list: ``r_ij = pos[j] - pos[i] + shift_cells @ cell``."""

    i: np.ndarray  # [E] int64, centre atoms
    j: np.ndarray  # [E] int64, neighbours
    shift_cells: np.ndarray  # [E, 3] int64, integer periodic shifts

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def shifts(self, cell: np.ndarray) -> np.ndarray:
        """Cartesian shift vectors for ``cell`` (rows are cell vectors)."""
        return self.shift_cells.astype(np.float64) @ np.asarray(cell, dtype=np.float64)


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> Edges:
    """All directed pairs ``i != j`` (or images of ``i`` itself) within ``cutoff`` (Å).

    ``pbc`` is a bool or three bools; non-periodic directions need no cell vector (a zero
    cell is fine for an isolated molecule). Cells smaller than twice the cutoff give many images.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc3 = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = calc.compute(positions, box, [bool(p) for p in pbc3], quantities="ijS")
    return Edges(i=i.astype(np.int64), j=j.astype(np.int64), shift_cells=s.astype(np.int64))
