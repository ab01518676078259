"""Edges grouped by centre atom: the layout every evaluation path (one graph, fused, blocks)
works in. LAMMPS (``lammps_plugin/src/pair_mlffd.cpp`` ``build_graph``) and mlffd's neighbour
lists (``mlffd/neighbors.py``, ``kernels/src/neighbors.cpp``) already give edges in this order,
so the sort here is skipped for them."""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor


def centre_layout(center: Tensor, n_atoms: int, with_slot: bool = True) -> List[Tensor]:
    """Edges grouped by centre atom: ``order`` (stable argsort of ``center``; empty when the
    edges are already sorted by centre, as LAMMPS and the calculator give them), ``offsets
    [N + 1]`` (centre ``i`` owns sorted edges ``offsets[i]:offsets[i + 1]``) and ``slot [E]`` (the
    place of each sorted edge among its centre's neighbours, the basis of the padded layout of
    the PyTorch path; empty unless ``with_slot``)."""
    offsets = torch.zeros(n_atoms + 1, dtype=torch.int64, device=center.device)
    offsets[1:] = torch.cumsum(torch.bincount(center, minlength=n_atoms), 0)
    if bool((center[1:] >= center[:-1]).all()):
        order = torch.zeros(0, dtype=torch.int64, device=center.device)
        sorted_center = center
    else:
        order = torch.argsort(center, stable=True)
        sorted_center = center.index_select(0, order)
    slot = torch.zeros(0, dtype=torch.int64, device=center.device)
    if with_slot:
        slot = torch.arange(center.shape[0], device=center.device) - offsets.index_select(0, sorted_center)
    return [order, offsets, slot]


def in_centre_order(x: Tensor, order: Tensor, dim: int = 0) -> Tensor:
    """``x`` (per edge along ``dim``) in centre order: ``x`` itself when ``order`` is empty."""
    return x if order.shape[0] == 0 else x.index_select(dim, order)


def max_neighbours(offsets: Tensor) -> int:
    """The largest neighbour count (``M`` of the padded layout); 0 without edges."""
    return int((offsets[1:] - offsets[:-1]).max().item()) if offsets.shape[0] > 1 else 0


def block_bounds(offsets: Tensor, n_atoms: int, chunk: int) -> List[List[int]]:
    """Blocks ``[a0, a1, e0, e1]`` of ``chunk`` centre atoms: atoms ``a0:a1`` own the sorted
    edges ``e0:e1`` (``offsets`` of :func:`centre_layout`)."""
    bounds: List[int] = offsets[torch.arange(0, n_atoms + chunk, chunk, device=offsets.device).clamp(max=n_atoms)].tolist()
    blocks: List[List[int]] = []
    for k, a0 in enumerate(range(0, n_atoms, chunk)):
        blocks.append([a0, min(a0 + chunk, n_atoms), bounds[k], bounds[k + 1]])
    return blocks


def block_edges(positions: Tensor, edge_index: Tensor, shifts: Tensor, order: Tensor, offsets: Tensor, block: List[int],
                grad: bool) -> List[Tensor]:
    """The edges of one block ``[a0, a1, e0, e1]`` of centres (atoms ``a0:a1``, sorted edges
    ``e0:e1``): centres, neighbours, edge vectors (an autograd leaf when ``grad``) and the
    block's offsets ``[a1 - a0 + 1]`` into them."""
    a0, a1, e0, e1 = block[0], block[1], block[2], block[3]
    if order.shape[0] == 0:  # edges already in centre order
        ci = edge_index[0, e0:e1]
        nj = edge_index[1, e0:e1]
        sh = shifts[e0:e1]
    else:
        idx = order[e0:e1]
        ci = edge_index[0].index_select(0, idx)
        nj = edge_index[1].index_select(0, idx)
        sh = shifts.index_select(0, idx)
    with torch.no_grad():
        v = positions.index_select(0, nj) - positions.index_select(0, ci) + sh
    v = v.detach().requires_grad_(grad)
    return [ci, nj, v, offsets[a0 : a1 + 1] - e0]
