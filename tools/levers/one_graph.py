"""One graph against blocks on the CPU: the measurement behind ``mlffd.artifact.ONE_GRAPH_EDGES``.

For each student and atom count, the raw artifact call (energy, forces, stress) alternates
between the blocked evaluation (the artifact's ``chunk_atoms`` per torch thread) and one graph
(``chunk_atoms`` set to the atom count), in one process, so machine drift between processes
cannot bias the ratio. Prints the medians over the alternations, µs per atom-step.

Usage: ``OMP_NUM_THREADS=2 .venv/bin/python tools/levers/one_graph.py --sizes 2048,4096,8192,16384``
"""

from __future__ import annotations

import statistics
import time

import click
import torch

from mlffd import artifact as _artifact
from mlffd.bench.workers import si_supercell
from mlffd.calculator import DistilledCalculator


def _us_per_atom_step(call, n_atoms: int, min_time: float) -> float:
    call()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_time:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls / n_atoms * 1e6


@click.command()
@click.option("--models", default="ultra-tiny,tiny,original", show_default=True)
@click.option("--sizes", default="2048,4096,8192,16384", show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--pairs", default=6, show_default=True, help="alternations per size")
@click.option("--min-time", default=0.4, show_default=True, help="seconds per timed block")
def main(models: str, sizes: str, threads: int, pairs: int, min_time: float) -> None:
    torch.set_num_threads(threads)
    for name in models.split(","):
        calc = DistilledCalculator(name)
        blocks = _artifact.block_atoms(calc.metadata, "cpu")
        for n in (int(s) for s in sizes.split(",")):
            atoms = si_supercell(n, rattle=0.05, seed=0)
            inputs, _ = calc._inputs([atoms], cache=False)
            args = (inputs.positions, inputs.species, inputs.edge_index, inputs.shifts, inputs.energy_mask)
            times: dict[str, list[float]] = {"blocks": [], "one graph": []}
            for chunk in (blocks, len(atoms)):  # warm-up: TorchScript profiles and optimises each path once
                calc.module.chunk_atoms = chunk
                for _ in range(3):
                    calc.module(*args)
            for p in range(pairs):
                for mode in ("blocks", "one graph") if p % 2 == 0 else ("one graph", "blocks"):
                    calc.module.chunk_atoms = blocks if mode == "blocks" else len(atoms)
                    times[mode].append(_us_per_atom_step(lambda: calc.module(*args), len(atoms), min_time))
            b, o = statistics.median(times["blocks"]), statistics.median(times["one graph"])
            print(f"{name:>10} {len(atoms):>6} atoms: blocks of {blocks} {b:6.2f}, one graph {o:6.2f} µs/atom-step, "
                  f"blocks / one graph {b / o:.2f}", flush=True)


if __name__ == "__main__":
    main()
