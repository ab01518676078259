"""Teacher-driven sampling: explore configurations with a teacher and write a labelled extxyz dataset.

A run expands the config's tasks (plus, with ``coverage`` on, the default recipe of
:mod:`~mlffd.sampling.coverage` for each one-element crystal seed) into *trajectories* (one teacher
run each: a task at one temperature, one repeat, one split). Each trajectory builds its start
structure from a seed (optionally relaxed by the teacher, scaled in volume, strained, rattled, with
vacancies/interstitials, or cut into a slab), runs teacher MD (NVT Langevin or NPT Berendsen; or
melt → liquid → quench → anneal), single points, dimers and trimers, or a teacher relaxation of a
random cell; keeps every ``sample_every``-th frame, drops near-duplicates by farthest-point
sampling on a cheap descriptor, and adds rattled/strained copies of the kept frames, optionally
with a pair pushed together (one teacher evaluation each). docs/sampling.md is the user guide.

Output, per split (``train``/``test``): an extxyz file whose frames carry energy, forces and
stress (ASE SinglePointCalculator; Voigt order, ASE sign) and ``info`` keys ``config_type``,
``trajectory`` (the trajectory id; test trajectories are separate teacher runs), ``teacher``
(spec), ``teacher_sha256`` (when a checkpoint file is involved), ``temperature`` (K) and ``step``;
a sidecar ``FILE.provenance.json``; and a progress record ``progress.jsonl`` in the output
directory (finished trajectories and the teacher-relaxed seeds). Frames are appended after each finished trajectory; a killed run keeps every finished
trajectory and continues with the next one when started again.

Modules: :mod:`~mlffd.sampling.config` (settings), :mod:`~mlffd.sampling.structures` (plan, start
structures, volumes), :mod:`~mlffd.sampling.contacts` (pushed pairs, clusters),
:mod:`~mlffd.sampling.relax` (teacher relaxations, random cells), :mod:`~mlffd.sampling.coverage`
(the default recipe), :mod:`~mlffd.sampling.molecules` (molecules from SMILES or xyz: conformers,
bonds), :mod:`~mlffd.sampling.torsions` (rotatable bonds, twisted starts),
:mod:`~mlffd.sampling.boxes` (periodic boxes of molecules), :mod:`~mlffd.sampling.frames` (labels, descriptor, selection),
:mod:`~mlffd.sampling.trajectory` (one teacher run), :mod:`~mlffd.sampling.run` (the resumable run).
"""

from __future__ import annotations

from mlffd.sampling.config import SampleConfig, SeedConfig, TaskConfig, load_config
from mlffd.sampling.coverage import coverage_tasks, expand_coverage
from mlffd.sampling.frames import descriptor, select_frames
from mlffd.sampling.run import SampleResult, config_hash, run_sampling, snapshot
from mlffd.sampling.structures import Trajectory, build_seed, plan

__all__ = [
    "SeedConfig",
    "TaskConfig",
    "SampleConfig",
    "Trajectory",
    "SampleResult",
    "load_config",
    "plan",
    "run_sampling",
    "snapshot",
    "config_hash",
    "descriptor",
    "select_frames",
    "build_seed",
    "coverage_tasks",
    "expand_coverage",
]
