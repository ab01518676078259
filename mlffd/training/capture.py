"""Evaluate a student frame by frame while capturing what enters one of its submodules."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from mlffd.data import Graph, collate


def captured_inputs(model: torch.nn.Module, module: torch.nn.Module,
                    graphs: Sequence[Graph]) -> Iterator[tuple[Graph, dict[str, Tensor], Tensor]]:
    """For each graph: the graph, ``model``'s outputs on it, and the rows ``[N, F]`` (float64) that
    entered ``module`` (one per atom: the whole frame is evaluated as one block, atoms in order).
    The model's block size is restored and the hook removed however the loop ends."""
    captured: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    dtype = next(iter(model.parameters())).dtype
    chunk, model.chunk_atoms = model.chunk_atoms, 1 << 30  # one call of the module per frame
    try:
        with torch.enable_grad():
            for g in graphs:
                captured.clear()
                out = model(*collate([g], dtype=dtype).inputs())
                z = torch.cat(captured).double()
                if z.shape[0] != g.num_atoms:
                    raise RuntimeError(f"captured {z.shape[0]} feature rows for {g.num_atoms} atoms")
                yield g, out, z
    finally:
        model.chunk_atoms = chunk
        handle.remove()
