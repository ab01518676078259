"""``mlffd bench``: cost per atom-step, throughput and peak memory of students, teachers and LAMMPS.

Every measurement runs in a fresh Python subprocess (``python -m mlffd.bench worker CASE``), one
at a time, so its peak memory (``ru_maxrss``) is its own and no measurement warms another's
caches. Inside a worker, warm-up calls are excluded; then ``repeats`` blocks of ``k`` calls are
timed (``k`` chosen so that a block lasts at least ``min_time`` seconds) and each block gives one
sample of µs per atom-step. Reported: median, quartiles, min and max of the samples.

What is measured (diamond-Si supercells of ``8 n^3`` atoms):

``artifact``
    The scripted artifact call (energy, forces, virial, per-atom virial) on prebuilt inputs: the
    model alone, positions fixed.
``calculator``
    ``DistilledCalculator`` through ASE, neighbour lists included, positions moved every step as
    in MD (an Ornstein-Uhlenbeck walk around the lattice sites with the 300 K vibration amplitude
    of Si, ~0.08 Å per component, ~0.01 Å per step); the list is rebuilt when the calculator's
    skin criterion says so (``nl_builds_per_step`` is reported).
``lammps-mlffd`` / ``lammps-sw`` / ``lammps-tersoff``
    LAMMPS NVE MD (300 K, 1 fs, LAMMPS' default neighbour settings) with ``pair_style mlffd``
    (the plugin), ``sw`` or ``tersoff`` (Si parameter files written by the bench: Stillinger &
    Weber 1985, Tersoff PRB 37, 6991 (1988), as LAMMPS' ``Si.sw``/``Si.tersoff``). Time is
    LAMMPS' own "Loop time" of each ``run`` (nothing subtracted); the first ``run`` is warm-up.
    1 rank gets ``threads`` OpenMP threads, R ranks get ``threads // R`` each. Peak memory is
    the largest process (one rank).
``teacher``
    SevenNet 7net-0 (weights shipped in ``sevenn``) and Orb v3 conservative / direct with
    random weights built from orb-models' architecture builders (speed does not depend on the
    weights), through their ASE calculators, positions moved as for ``calculator``.
``batch`` / ``one-by-one``
    ``B`` different 64-atom cells through ``DistilledCalculator.calculate_batch`` in one call,
    versus the same cells one after the other through ``atoms.get_potential_energy()``.

Students are the shipped artifacts when :data:`mlffd.registry.REGISTRY` has the name, else a
random-weight artifact of the same size preset (``weights`` in the output says which). Ratios
(vs SW, vs the teachers, plugin vs artifact, batched vs one-by-one, size scaling, allocator) are
computed only from numbers of the same run.

Modules: :mod:`~mlffd.bench.config` (settings), :mod:`~mlffd.bench.workers` (one
measurement per process), :mod:`~mlffd.bench.runner` (:func:`run_bench`),
:mod:`~mlffd.bench.analysis` (ratios, headline numbers), :mod:`~mlffd.bench.report` (tables, plot, files).
"""

from __future__ import annotations

from mlffd.bench.analysis import HEADLINE, RATIO_KINDS, compute_ratios, headline, pool_rounds
from mlffd.bench.config import (
    MEASUREMENT_FIELDS,
    RESULT_FIELDS,
    SCHEMA,
    TEACHERS,
    BenchConfig,
)
from mlffd.bench.report import markdown_report, plot, summary_table, write_outputs
from mlffd.bench.runner import measurement_id, prepare_students, run_bench
from mlffd.bench.workers import lammps_pair, parse_loop_times, run_worker, si_supercell, summarize, supercell_reps

__all__ = [
    "BenchConfig", "MEASUREMENT_FIELDS", "RATIO_KINDS", "RESULT_FIELDS", "SCHEMA", "TEACHERS",
    "HEADLINE", "compute_ratios", "headline", "lammps_pair", "markdown_report", "measurement_id", "parse_loop_times",
    "plot", "pool_rounds", "prepare_students", "run_bench", "run_worker", "si_supercell", "summarize", "summary_table",
    "supercell_reps", "write_outputs",
]
