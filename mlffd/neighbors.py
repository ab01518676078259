"""Neighbour lists: vesin's cell lists, and mlffd's kernel for many small structures at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import vesin

#: structures of at most this many atoms get their lists from mlffd's pair kernel
#: (``mlffd_kernels::neighbor_lists``, O(N^2), all structures of a call in one pass over threads)
#: when it is installed; larger ones from vesin. Small cells are dominated by vesin's fixed cost
#: per call (and the Python around it), large ones by the pair kernel's O(N^2) work; the two
#: cross over at a few hundred atoms (silicon at 5 A).
SMALL_SYSTEM = 200


@dataclass(frozen=True)
class Edges:
    """A full (directed) neighbour list: ``r_ij = pos[j] - pos[i] + shift_cells @ cell``, edges
    grouped by centre atom (ascending ``i``), the order the students evaluate in."""

    index: np.ndarray  # [2, E] int64: centre atoms i (row 0), neighbours j (row 1)
    shift_cells: np.ndarray  # [E, 3] int32, integer periodic shifts

    @property
    def i(self) -> np.ndarray:
        """Centre atoms ``[E]``."""
        return self.index[0]

    @property
    def j(self) -> np.ndarray:
        """Neighbours ``[E]``."""
        return self.index[1]

    def __len__(self) -> int:
        return int(self.index.shape[1])

    def shifts(self, cell: np.ndarray) -> np.ndarray:
        """Cartesian shift vectors for ``cell`` (rows are cell vectors)."""
        return self.shift_cells.astype(np.float64) @ np.asarray(cell, dtype=np.float64)


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> Edges:
    """All directed pairs ``i != j`` (or images of ``i`` itself) within ``cutoff`` (Å): see
    :func:`neighbor_lists`, of which this is the one-structure case."""
    return neighbor_lists([positions], [cell], [pbc], cutoff)[0]


def neighbor_lists(positions: Sequence[np.ndarray], cells: Sequence[np.ndarray], pbcs: Sequence, cutoff: float) -> list[Edges]:
    """The neighbour list of each structure (``positions[s]``, ``cells[s]``, ``pbcs[s]``): structures
    of at most :data:`SMALL_SYSTEM` atoms together in one call of mlffd's pair kernel when it is
    installed, the others (or all, without it) each with :func:`vesin_neighbor_list`. Same pairs
    and shifts either way; the order within a centre's edges may differ."""
    small = [s for s, p in enumerate(positions) if len(p) <= SMALL_SYSTEM]
    out: list[Edges | None] = [None] * len(positions)
    if small and _pair_kernel():
        for s, edges in zip(small, _kernel_lists([positions[s] for s in small], [cells[s] for s in small],
                                                 [pbcs[s] for s in small], cutoff)):
            out[s] = edges
    return [e if e is not None else vesin_neighbor_list(positions[s], cells[s], pbcs[s], cutoff) for s, e in enumerate(out)]


def _pair_kernel() -> bool:
    from mlffd import kernels

    return kernels.available()


def _starts(positions: Sequence[np.ndarray]) -> np.ndarray:
    """Each structure's first atom when they are numbered in order, and the total (``S + 1``)."""
    return np.concatenate([[0], np.cumsum([len(p) for p in positions], dtype=np.int64)]).astype(np.int64)


def joined_neighbor_list(positions: Sequence[np.ndarray], cells: Sequence[np.ndarray], pbcs: Sequence,
                         cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """The lists of several structures as one graph, atoms numbered across the structures in
    order: ``edge_index [2, E]`` (grouped by centre) and Cartesian shifts ``[E, 3]`` (Å). One
    kernel call and no per-structure arrays when every structure is small (see
    :func:`neighbor_lists`), the per-structure lists joined otherwise."""
    start = _starts(positions)
    if _pair_kernel() and np.diff(start).max(initial=0) <= SMALL_SYSTEM:
        index, shift_cells, bounds = _kernel_call(positions, cells, pbcs, start, cutoff)
    else:
        lists = neighbor_lists(positions, cells, pbcs, cutoff)
        index = np.concatenate([e.index + start[s] for s, e in enumerate(lists)] or [np.zeros((2, 0), np.int64)], axis=1)
        shift_cells = np.concatenate([e.shift_cells for e in lists] or [np.zeros((0, 3), np.int32)])
        bounds = np.concatenate([[0], np.cumsum([len(e) for e in lists])])
    shifts = np.empty(shift_cells.shape, dtype=np.float64)
    for s, cell in enumerate(cells):
        shifts[bounds[s] : bounds[s + 1]] = shift_cells[bounds[s] : bounds[s + 1]] @ np.asarray(cell, dtype=np.float64).reshape(3, 3)
    return index, shifts


def _kernel_call(positions: Sequence[np.ndarray], cells: Sequence[np.ndarray], pbcs: Sequence, start: np.ndarray,
                 cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mlffd_kernels::neighbor_lists`` on numpy arrays (``start``: each structure's first atom,
    ``S + 1`` entries): global edge index, integer shifts and each structure's first edge
    (``S + 1`` bounds)."""
    import torch

    from mlffd import kernels

    index, shift_cells = kernels.neighbor_lists(
        torch.from_numpy(np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in positions])),
        torch.from_numpy(np.stack([np.asarray(c, dtype=np.float64).reshape(3, 3) for c in cells])),
        torch.from_numpy(np.stack([np.broadcast_to(np.asarray(p, dtype=bool), (3,)) for p in pbcs])),
        torch.from_numpy(np.diff(start)),
        float(cutoff),
    )
    index, shift_cells = index.numpy(), shift_cells.numpy()
    return index, shift_cells, np.searchsorted(index[0], start)  # edges grouped by centre, centres ascending


def _kernel_lists(positions: Sequence[np.ndarray], cells: Sequence[np.ndarray], pbcs: Sequence, cutoff: float) -> list[Edges]:
    start = _starts(positions)
    index, shift_cells, bounds = _kernel_call(positions, cells, pbcs, start, cutoff)
    return [
        Edges(index=index[:, bounds[s] : bounds[s + 1]] - start[s], shift_cells=shift_cells[bounds[s] : bounds[s + 1]])
        for s in range(len(positions))
    ]


def vesin_neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> Edges:
    """All directed pairs ``i != j`` (or images of ``i`` itself) within ``cutoff`` (Å).

    ``pbc`` is a bool or three bools; non-periodic directions need no cell vector (a zero
    cell is fine for an isolated molecule). Cells smaller than twice the cutoff give many images.
    The result is copied once out of vesin's buffers (28 bytes per edge; a 32,768-atom silicon
    cell has ~0.9 M edges), so large systems do not hold several copies at once, in centre
    order (a stable sort on ``i`` once per list build: the students would otherwise sort on
    every call).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc3 = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    pairs, s = calc.compute(positions, box, [bool(p) for p in pbc3], quantities="PS", copy=False)
    # views into calc's buffers, valid while calc lives: copy them out here, once
    index = np.empty((2, pairs.shape[0]), dtype=np.int64)
    index[0] = pairs[:, 0]
    index[1] = pairs[:, 1]
    centre = index[0]
    if centre.shape[0] > 1 and not np.all(centre[1:] >= centre[:-1]):
        order = np.argsort(centre, kind="stable")
        index[1] = index[1][order]
        index[0] = np.repeat(np.arange(positions.shape[0]), np.bincount(centre, minlength=positions.shape[0]))
        return Edges(index=index, shift_cells=np.asarray(s[order], dtype=np.int32))
    return Edges(index=index, shift_cells=np.array(s, dtype=np.int32))
