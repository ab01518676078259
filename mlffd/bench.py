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
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mlffd.allocator import GLIBC_TUNABLES

SCHEMA = "mlffd-bench/1"
RESULT_MARKER = "MLFFD-BENCH-RESULT "
LATTICE_SI = 5.43

#: teacher name -> how to load it (see :func:`_load_teacher_for_bench`)
TEACHERS: dict[str, dict[str, Any]] = {
    "sevennet-7net-0": {"spec": "sevennet:7net-0", "weights": "shipped"},
    "orb-v3-conservative": {"spec": "orb:orb-v3-conservative-inf-omat", "weights": "random", "max_num_neighbors": 120},
    "orb-v3-direct": {"spec": "orb:orb-v3-direct-20-omat", "weights": "random", "max_num_neighbors": 20},
}

CLASSICAL = ("sw", "tersoff")

#: LAMMPS potential files (metal units), the standard published parameters as shipped with LAMMPS
SI_SW = """\
# Stillinger-Weber silicon: F. H. Stillinger and T. A. Weber, Phys. Rev. B 31, 5262 (1985)
# (as LAMMPS' potentials/Si.sw) -- written by mlffd bench
# element1 element2 element3 epsilon sigma a lambda gamma costheta0 A B p q tol
Si Si Si 2.1683 2.0951 1.80 21.0 1.20 -0.333333333333
         7.049556277 0.6022245584 4.0 0.0 0.0
"""
SI_TERSOFF = """\
# Tersoff silicon: J. Tersoff, Phys. Rev. B 37, 6991 (1988) (as LAMMPS' potentials/Si.tersoff)
# -- written by mlffd bench
# element1 element2 element3 m gamma lambda3 c d costheta0 n beta lambda2 B R D lambda1 A
Si Si Si 3.0 1.0 1.3258 4.8381 2.0417 0.0000 22.956
         0.33675 1.3258 95.373 3.0 0.2 3.2394 3264.7
"""

#: The issue's targets, per student preset (cost vs SW <=, speed-up vs Orb-v3 conservative >=,
#: speed-up vs 7net-0 >=, peak memory at 32,768 atoms <= GB)
TARGETS: dict[str, dict[str, float]] = {
    "ultra-tiny": {"vs_sw": 30.0, "vs_orb": 1000.0, "vs_7net": 200.0, "mem_gb": 0.4},
    "tiny": {"vs_sw": 75.0, "vs_orb": 400.0, "vs_7net": 100.0, "mem_gb": 0.6},
    "original": {"vs_sw": 375.0, "vs_orb": 80.0, "vs_7net": 20.0, "mem_gb": 2.0},
}
FLATNESS_LIMIT = 1.2  # cost(32,768) / cost(512)
PLUGIN_OVERHEAD_LIMIT = 1.10  # lammps-mlffd (1 rank) / artifact at 4,096 atoms
BATCH_SPEEDUP_TARGET = 10.0


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What ``mlffd bench`` measures. :meth:`quick` gives the small set used by tests."""

    sizes: tuple[int, ...] = (64, 512, 4096, 32768)
    models: tuple[str, ...] = ("ultra-tiny", "tiny", "original")
    threads: int = 2
    repeats: int = 5
    warmup: int = 3  #: untimed calls first (TorchScript's profiling executor optimises over ~3 calls)
    min_time: float = 0.5  #: seconds per timed block (k calls)
    students: bool = True  #: artifact + calculator paths
    teachers: bool = True
    teacher_names: tuple[str, ...] = tuple(TEACHERS)
    teacher_sizes: tuple[int, ...] = (64, 512)
    lammps: bool = True
    lammps_students: bool = True  #: pair_style mlffd (else only the classical floor)
    ranks: tuple[int, ...] = (1, 2)
    classical: tuple[str, ...] = CLASSICAL
    batch: bool = True
    batch_count: int = 64
    batch_cell: int = 2  #: batch cells are n x n x n conventional cells (2 -> 64 atoms)
    allocator: bool = True
    allocator_model: str = "tiny"
    allocator_sizes: tuple[int, ...] = (512, 4096)
    allocator_methods: tuple[str, ...] = ("artifact",)
    allocator_rounds: int = 1  #: interleaved default/mlffd pairs per size (order alternates between rounds)
    dtype: str = "float32"  #: dtype of random-weight students
    timeout: float = 3600.0  #: seconds per worker
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchConfig":
        """A run of a few seconds per measurement (64 atoms), for tests and smoke checks."""
        base = dict(
            sizes=(64,),
            models=("ultra-tiny",),
            repeats=2,
            warmup=3,
            min_time=0.02,
            teacher_sizes=(64,),
            batch_count=8,
            allocator_model="ultra-tiny",
            allocator_sizes=(64,),
            timeout=600.0,
            quick=True,
        )
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.threads < 1 or self.repeats < 1 or self.warmup < 0 or self.allocator_rounds < 1:
            raise ValueError("threads, repeats and allocator_rounds must be >= 1, warmup >= 0")
        for name in ("sizes", "teacher_sizes", "allocator_sizes"):
            if any(int(n) < 8 for n in getattr(self, name)):
                raise ValueError(f"{name}: atom counts must be >= 8 (diamond-Si supercells of 8 n^3 atoms)")
        unknown = set(self.teacher_names) - set(TEACHERS)
        if unknown:
            raise ValueError(f"unknown teachers {sorted(unknown)}; known: {', '.join(TEACHERS)}")
        if set(self.allocator_methods) - {"artifact", "calculator", "lammps"}:
            raise ValueError(f"allocator_methods must be among artifact, calculator, lammps; got {list(self.allocator_methods)}")
        unknown = set(self.classical) - set(CLASSICAL)
        if unknown:
            raise ValueError(f"unknown classical potentials {sorted(unknown)}; known: {', '.join(CLASSICAL)}")


def supercell_reps(n_atoms: int) -> int:
    """Repetitions ``n`` of the 8-atom conventional cell whose ``8 n^3`` is closest to ``n_atoms``."""
    return max(1, int(round((n_atoms / 8.0) ** (1.0 / 3.0))))


def si_supercell(n_atoms: int, rattle: float = 0.0, seed: int = 0):
    """Diamond Si, ``n x n x n`` conventional cells (``8 n^3`` atoms, closest to ``n_atoms``)."""
    from ase.build import bulk

    n = supercell_reps(n_atoms)
    atoms = bulk("Si", "diamond", a=LATTICE_SI, cubic=True) * (n, n, n)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


# -- statistics and memory -------------------------------------------------------------------


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min, max and count of ``samples``."""
    import numpy as np

    a = np.asarray(list(samples), dtype=float)
    if a.size == 0:
        return {"median": math.nan, "q1": math.nan, "q3": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def _rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return math.nan


def _maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kb = resource.getrusage(who).ru_maxrss  # KB on Linux
    return kb * (1.0 if sys.platform != "darwin" else 1.0 / 1024.0) / 1e3


def _time_steps(step: Callable[[], float], n_atoms: int, warmup: int, repeats: int, min_time: float) -> tuple[list[float], int]:
    """Run ``warmup`` untimed steps, then ``repeats`` blocks of ``k`` steps; µs/atom-step per block.

    ``step()`` performs one step and returns the seconds of its timed part.
    """
    last = None
    for _ in range(warmup):
        last = step()
    if last is None:
        last = step()  # calibration call, not counted
    k = max(1, min(100000, int(math.ceil(min_time / max(last, 1e-9)))))
    samples = []
    for _ in range(repeats):
        total = 0.0
        for _ in range(k):
            total += step()
        samples.append(total / k / n_atoms * 1e6)
    return samples, k


class _MDWalk:
    """Positions that move as in MD: an Ornstein-Uhlenbeck walk around the lattice sites.

    Stationary spread ``sigma`` per component (~ the 300 K vibration amplitude of Si), correlation
    ``rho`` per step (moves of ~ sigma * sqrt(2 (1 - rho)) = 0.011 Å per step).
    """

    def __init__(self, positions, sigma: float = 0.08, rho: float = 0.99, seed: int = 0) -> None:
        import numpy as np

        self.base = np.array(positions, dtype=float)
        self.rng = np.random.default_rng(seed)
        self.sigma, self.rho = sigma, rho
        self.disp = self.rng.normal(scale=sigma, size=self.base.shape)

    def next(self):
        noise = self.rng.normal(scale=self.sigma * math.sqrt(1.0 - self.rho**2), size=self.base.shape)
        self.disp = self.rho * self.disp + noise
        return self.base + self.disp


# -- workers (each runs in its own process) ---------------------------------------------------


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


def _configure_allocator() -> dict:
    """The product's allocator settings (as ``DistilledCalculator`` applies them), for the raw artifact path."""
    from mlffd.allocator import configure_allocator

    return configure_allocator().to_dict()


def _artifact_inputs(atoms, artifact):
    import numpy as np
    import torch

    from mlffd.neighbors import neighbor_list

    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, artifact.cutoff)
    dtype = artifact.dtype
    species_of = {s: k for k, s in enumerate(artifact.elements)}
    return (
        torch.as_tensor(atoms.positions, dtype=dtype),
        torch.as_tensor(np.array([species_of[s] for s in atoms.get_chemical_symbols()]), dtype=torch.int64),
        torch.as_tensor(np.stack([edges.i, edges.j]), dtype=torch.int64),
        torch.as_tensor(edges.shifts(atoms.cell.array), dtype=dtype),
        torch.ones(len(atoms), dtype=torch.bool),
    ), len(edges)


def _worker_artifact(case: dict) -> dict:
    from mlffd.artifact import load

    alloc = _configure_allocator()
    _set_threads(case["threads"])
    artifact = load(case["path"])
    atoms = si_supercell(case["atoms"], rattle=0.05, seed=1)
    args, n_edges = _artifact_inputs(atoms, artifact)
    module = artifact.module
    rss0 = _rss_mb()

    def step() -> float:
        t = time.perf_counter()
        out = module(*args)
        out["forces"].sum().item()
        return time.perf_counter() - t

    samples, k = _time_steps(step, len(atoms), case["warmup"], case["repeats"], case["min_time"])
    return {"samples_us": samples, "calls_per_repeat": k, "atoms": len(atoms), "edges": n_edges, "rss_before_mb": rss0, "allocator": alloc}


def _ase_steps(atoms, calc, case: dict) -> tuple[list[float], int, float, int]:
    walk = _MDWalk(atoms.positions, seed=2)
    atoms.calc = calc
    calls = [0]

    def step() -> float:
        atoms.positions = walk.next()
        t = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        dt = time.perf_counter() - t
        calls[0] += 1
        return dt

    rss0 = _rss_mb()
    samples, k = _time_steps(step, len(atoms), case["warmup"], case["repeats"], case["min_time"])
    return samples, k, rss0, calls[0]


def _worker_calculator(case: dict) -> dict:
    from mlffd.calculator import DistilledCalculator

    _set_threads(case["threads"])
    calc = DistilledCalculator(case["path"])  # applies the allocator settings itself
    from mlffd.allocator import allocator_status

    status = allocator_status()
    alloc = status.to_dict() if status else {"applied": False, "reason": os.environ.get("MLFFD_MALLOC", "not applied")}
    atoms = si_supercell(case["atoms"])
    builds0 = calc.nl_builds
    samples, k, rss0, calls = _ase_steps(atoms, calc, case)
    return {
        "samples_us": samples,
        "calls_per_repeat": k,
        "atoms": len(atoms),
        "rss_before_mb": rss0,
        "allocator": alloc,
        "nl_builds_per_step": (calc.nl_builds - builds0) / max(calls, 1),
        "skin": calc.skin,
    }


def _load_teacher_for_bench(name: str, workdir: Path):
    """The teacher's ASE calculator; Orb with a random-weight checkpoint from orb-models' builders."""
    from mlffd.teachers import load_teacher

    info = TEACHERS[name]
    if info["weights"] == "shipped":
        return load_teacher(info["spec"])
    from mlffd.testing import random_orb_checkpoint

    variant = "conservative" if "conservative" in name else "direct"
    path = workdir / f"{info['spec'].split(':', 1)[1]}-random.ckpt"
    random_orb_checkpoint(path, variant, max_num_neighbors=info["max_num_neighbors"])
    return load_teacher(f"{info['spec']}@{path}")


def _num_parameters(calc) -> int | None:
    model = getattr(calc, "model", None)
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - calculators differ
        return None


def _worker_teacher(case: dict) -> dict:
    _set_threads(case["threads"])
    calc = _load_teacher_for_bench(case["model"], Path(case["workdir"]))
    atoms = si_supercell(case["atoms"])
    samples, k, rss0, _ = _ase_steps(atoms, calc, case)
    return {
        "samples_us": samples,
        "calls_per_repeat": k,
        "atoms": len(atoms),
        "rss_before_mb": rss0,
        "num_parameters": _num_parameters(calc),
        "allocator": {"applied": False, "reason": "teacher process (mlffd not involved)"},
    }


def _worker_batch(case: dict) -> dict:
    from mlffd.calculator import DistilledCalculator

    _set_threads(case["threads"])
    calc = DistilledCalculator(case["path"])
    from mlffd.allocator import allocator_status

    status = allocator_status()
    alloc = status.to_dict() if status else {"applied": False, "reason": os.environ.get("MLFFD_MALLOC", "not applied")}
    cells = [si_supercell(8 * case["batch_cell"] ** 3, rattle=0.1, seed=s) for s in range(case["batch_count"])]
    n_total = sum(len(a) for a in cells)
    if case["mode"] == "batch":

        def step() -> float:
            t = time.perf_counter()
            calc.calculate_batch(cells)
            return time.perf_counter() - t

    else:
        for a in cells:
            a.calc = calc

        def step() -> float:
            t = time.perf_counter()
            for a in cells:
                a.get_potential_energy()  # different structure each call: a full evaluation
            return time.perf_counter() - t

    rss0 = _rss_mb()
    samples, k = _time_steps(step, n_total, case["warmup"], case["repeats"], case["min_time"])
    return {
        "samples_us": samples,
        "calls_per_repeat": k,
        "atoms": n_total,
        "structures": len(cells),
        "atoms_per_structure": len(cells[0]),
        "rss_before_mb": rss0,
        "allocator": alloc,
    }


_LOOP = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def parse_loop_times(log: str) -> list[tuple[float, int, int, int]]:
    """``(seconds, procs, steps, atoms)`` of every "Loop time" line of a LAMMPS log."""
    return [(float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))) for m in _LOOP.finditer(log)]


def lammps_pair(pair: str, workdir: Path, model_path: str | None = None) -> list[str]:
    """pair_style / pair_coeff lines for ``mlffd``, ``sw`` or ``tersoff`` (potential files written to ``workdir``)."""
    if pair == "mlffd":
        return ["pair_style mlffd", f"pair_coeff * * {model_path} Si"]
    if pair == "sw":
        (workdir / "Si.sw").write_text(SI_SW)
        return ["pair_style sw", "pair_coeff * * Si.sw Si"]
    if pair == "tersoff":
        (workdir / "Si.tersoff").write_text(SI_TERSOFF)
        return ["pair_style tersoff", "pair_coeff * * Si.tersoff Si"]
    raise ValueError(f"unknown LAMMPS pair {pair!r}")


def _worker_lammps(case: dict) -> dict:
    from mlffd.lammps import run_deck, write_data

    work = Path(case["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    atoms = si_supercell(case["atoms"])
    write_data(atoms, work / "atoms.data", ["Si"])
    pair = lammps_pair(case["pair"], work, case.get("path"))
    steps, warm = int(case["steps"]), int(case["warmup_steps"])
    deck = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "read_data atoms.data",
        *pair,
        "timestep 0.001",
        "velocity all create 300.0 4928459 mom yes rot yes dist gaussian",
        "fix md all nve",
        f"thermo {max(steps, warm) * 10}",
        f"run {warm}",
        *[f"run {steps}" for _ in range(case["repeats"])],
    ]
    ranks, threads = int(case["ranks"]), int(case["threads"])
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, threads // ranks))
    log = run_deck("\n".join(deck) + "\n", work, nprocs=ranks, env=env, timeout=case["timeout"])
    loops = parse_loop_times(log)
    if len(loops) != case["repeats"] + 1:
        raise RuntimeError(f"expected {case['repeats'] + 1} 'Loop time' lines in the LAMMPS log, found {len(loops)}")
    timed = loops[1:]
    samples = [sec / st / n * 1e6 for sec, _, st, n in timed]
    version = re.search(r"LAMMPS \(([^)]*)\)", log)
    return {
        "samples_us": samples,
        "calls_per_repeat": steps,
        "steps_per_repeat": steps,
        "warmup_steps": warm,
        "atoms": len(atoms),
        "omp_threads": int(env["OMP_NUM_THREADS"]),
        "rss_before_mb": math.nan,
        "peak_rss_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "peak_rss_scope": "largest single process (one MPI rank)",
        "lammps_version": version.group(1) if version else None,
        "allocator": {"applied": "glibc.malloc." in env.get("GLIBC_TUNABLES", ""), "reason": "LAMMPS process: the plugin does not call mallopt; "
                      f"GLIBC_TUNABLES={env.get('GLIBC_TUNABLES', '')!r}"},
    }


_WORKERS: dict[str, Callable[[dict], dict]] = {
    "artifact": _worker_artifact,
    "calculator": _worker_calculator,
    "teacher": _worker_teacher,
    "batch": _worker_batch,
    "one-by-one": _worker_batch,
    "lammps": _worker_lammps,
}


def run_worker(case: dict) -> dict:
    """Run one measurement in this process (called by ``python -m mlffd.bench worker``)."""
    t0 = time.perf_counter()
    res = _WORKERS[case["method"]](case)
    res.setdefault("peak_rss_mb", _maxrss_mb())
    res["worker_wall_s"] = time.perf_counter() - t0
    return res


# -- the orchestrator ------------------------------------------------------------------------


@dataclass
class _Student:
    name: str
    path: str
    weights: str  # "shipped" | "random"
    num_parameters: int
    dtype: str


def prepare_students(models: Iterable[str], directory: Path, dtype: str = "float32") -> dict[str, _Student]:
    """The shipped artifact for each name in the registry, else a random-weight artifact of that preset."""
    import torch

    from mlffd.artifact import read_metadata
    from mlffd.models import PRESETS, export_student
    from mlffd.registry import REGISTRY, resolve
    from mlffd.testing import random_student

    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, _Student] = {}
    for name in models:
        if name in REGISTRY:
            path, weights = resolve(name), "shipped"
        elif name in PRESETS:
            # energy_scale 1: gentle random forces, so short LAMMPS MD keeps the crystal intact
            model, cfg = random_student(name, dtype=getattr(torch, dtype), energy_scale=1.0)
            path = export_student(model, cfg, directory / f"{name}-random.mlffd.pt", teacher="none")
            weights = "random"
        else:
            raise ValueError(f"model {name!r} is neither shipped ({', '.join(sorted(REGISTRY)) or 'none'}) nor a size preset ({', '.join(PRESETS)})")
        meta = read_metadata(path)
        out[name] = _Student(name, str(path), weights, int(meta["num_parameters"]), str(meta["dtype"]))
    return out


def _spawn(case: dict, env_overrides: dict[str, str | None], timeout: float) -> dict:
    env = dict(os.environ)
    for k, v in env_overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, "-m", "mlffd.bench", "worker", json.dumps(case)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            res = json.loads(line[len(RESULT_MARKER) :])
            res["process_wall_s"] = wall
            return res
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return {"error": f"worker exited with {proc.returncode}: {tail}"}


def measurement_id(method: str, model: str, atoms: int, par: str, section: str = "main", malloc: str | None = None) -> str:
    parts = [method, model, str(atoms), par]
    if section != "main":
        parts = [section] + parts + ([malloc] if malloc else [])
    return "/".join(parts)


def _series_key(m: dict) -> str:
    """Name of the curve a measurement belongs to (method, model, parallelism)."""
    return f"{m['method']}:{m['model']}:{m['parallel']}" + (f":{m['malloc']}" if m.get("section") == "allocator" else "")


def _estimate_lammps_us(pair: str, artifact_us: float | None, n_atoms: int, interaction_range: float) -> float:
    """A generous guess of µs per atom-step, to size the LAMMPS runs."""
    if pair != "mlffd":
        return 2.0
    side = supercell_reps(n_atoms) * LATTICE_SI
    ghost = min(((side + 2 * (interaction_range + 2.0)) / side) ** 3, 40.0)  # ghost shell R + skin
    return (artifact_us or 500.0) * max(1.0, 0.5 * ghost)


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        info["cpu"] = None
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = int(fh.readline().split()[1]) / 1e6
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    from importlib import metadata

    for pkg in ("mlffd", "torch", "ase", "vesin", "lammps", "mlffd-lammps", "sevenn", "orb-models"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    info["libc"] = "-".join(platform.libc_ver())
    info["env"] = {k: os.environ.get(k) for k in ("GLIBC_TUNABLES", "LD_PRELOAD", "MLFFD_MALLOC", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return info


def run_bench(config: BenchConfig, out_dir: str | Path, progress: Callable[[str], None] | None = None) -> dict:
    """Run every measurement of ``config`` (one subprocess each); write JSON, Markdown and PNG to ``out_dir``.

    Returns the results dict (also in ``out_dir/bench.json``).
    """
    say = progress or (lambda s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out))
    started = _dt.datetime.now(_dt.timezone.utc)
    host = host_info()
    models = sorted(set(config.models) | ({config.allocator_model} if config.allocator else set()), key=list(config.models + (config.allocator_model,)).index)
    students = prepare_students(models, out / "artifacts", config.dtype) if (config.students or config.lammps_students or config.batch or config.allocator) else {}
    ranges: dict[str, float] = {}
    for name, st in students.items():
        from mlffd.artifact import read_metadata

        ranges[name] = float(read_metadata(st.path)["interaction_range"])

    measurements: list[dict] = []
    threads = config.threads
    base_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    common = {"threads": threads, "repeats": config.repeats, "warmup": config.warmup, "min_time": config.min_time}

    def record(case: dict, meta: dict, env: dict[str, str | None] | None = None) -> dict:
        env_all = {**base_env, **(env or {})}
        res = _spawn({**common, **case}, env_all, config.timeout)
        m = {
            "id": measurement_id(meta["method"], meta["model"], meta["atoms_requested"], meta["parallel"], meta.get("section", "main"), meta.get("malloc"))
            + (f"/round{meta['round']}" if config.allocator_rounds > 1 and "round" in meta else ""),
            "section": "main",
            **meta,
            "threads": threads if meta.get("ranks") in (None, 1) else max(1, threads // meta["ranks"]),
            "repeats": config.repeats,
            "warmup": config.warmup if meta["method"] not in ("lammps-mlffd", "lammps-sw", "lammps-tersoff") else 1,
            "error": res.get("error"),
        }
        m["atoms"] = res.get("atoms", supercell_reps(meta["atoms_requested"]) ** 3 * 8)
        samples = res.get("samples_us", [])
        m["us_per_atom_step"] = summarize(samples)
        med = m["us_per_atom_step"]["median"]
        m["atom_steps_per_s"] = 1e6 / med if med and med == med and med > 0 else math.nan
        m["samples_us"] = samples
        for key in ("calls_per_repeat", "steps_per_repeat", "warmup_steps", "edges", "nl_builds_per_step", "skin", "structures",
                    "atoms_per_structure", "omp_threads", "lammps_version", "peak_rss_scope", "allocator", "worker_wall_s", "process_wall_s"):
            if key in res:
                m[key] = res[key]
        if res.get("num_parameters") is not None:
            m["num_parameters"] = res["num_parameters"]
        m["peak_rss_mb"] = _num(res.get("peak_rss_mb"))
        m["rss_before_mb"] = _num(res.get("rss_before_mb"))
        m["peak_increment_mb"] = m["peak_rss_mb"] - m["rss_before_mb"]  # nan where unknown
        measurements.append(m)
        if m["error"]:
            say(f"  {m['id']:<44s} FAILED: {m['error'].splitlines()[-1] if m['error'] else ''}")
        else:
            s = m["us_per_atom_step"]
            say(f"  {m['id']:<44s} {s['median']:12.3f} µs/atom-step  [{s['q1']:.3g}-{s['q3']:.3g}]  peak {m['peak_rss_mb']:.0f} MB")
        return m

    def student_meta(name: str, method: str, n: int, parallel: str, **extra) -> dict:
        st = students[name]
        return {"method": method, "model": name, "kind": "student", "weights": st.weights, "num_parameters": st.num_parameters,
                "dtype": st.dtype, "atoms_requested": n, "parallel": parallel, "ranks": extra.pop("ranks", None), **extra}

    par = f"t{threads}"
    artifact_cost: dict[tuple[str, int], float] = {}
    # 1. students: raw artifact and DistilledCalculator
    if config.students:
        say("students (raw artifact call, DistilledCalculator):")
        for n in config.sizes:
            for name in config.models:
                case = {"method": "artifact", "path": students[name].path, "atoms": n}
                m = record(case, student_meta(name, "artifact", n, par))
                artifact_cost[(name, n)] = m["us_per_atom_step"]["median"]
                record({"method": "calculator", "path": students[name].path, "atoms": n}, student_meta(name, "calculator", n, par))
    # 2. LAMMPS: the classical floor, then pair_style mlffd
    if config.lammps:
        say("LAMMPS (loop time of 'run'):")
        for n in config.sizes:
            for pair in config.classical:
                for ranks in config.ranks:
                    est = _estimate_lammps_us(pair, None, n, 0.0)
                    steps = _lammps_steps(est, n, config)
                    case = {"method": "lammps", "pair": pair, "atoms": n, "ranks": ranks, "steps": steps, "warmup_steps": max(1, steps // 5),
                            "workdir": str(work / f"{pair}-{n}-r{ranks}"), "timeout": config.timeout}
                    meta = {"method": f"lammps-{pair}", "model": pair, "kind": "classical", "weights": "published", "atoms_requested": n,
                            "parallel": f"r{ranks}", "ranks": ranks}
                    record(case, meta)
            if config.lammps_students:
                for name in config.models:
                    for ranks in config.ranks:
                        est = _estimate_lammps_us("mlffd", artifact_cost.get((name, n)), n, ranges[name])
                        steps = _lammps_steps(est, n, config)
                        case = {"method": "lammps", "pair": "mlffd", "path": students[name].path, "atoms": n, "ranks": ranks, "steps": steps,
                                "warmup_steps": 1, "workdir": str(work / f"mlffd-{name}-{n}-r{ranks}"), "timeout": config.timeout}
                        record(case, student_meta(name, "lammps-mlffd", n, f"r{ranks}", ranks=ranks))
    # 3. teachers
    if config.teachers:
        say("teachers (ASE):")
        for n in config.teacher_sizes:
            for name in config.teacher_names:
                case = {"method": "teacher", "model": name, "atoms": n, "workdir": str(work)}
                meta = {"method": "teacher", "model": name, "kind": "teacher", "weights": TEACHERS[name]["weights"], "atoms_requested": n,
                        "parallel": par, "ranks": None, "spec": TEACHERS[name]["spec"]}
                record(case, meta)
    # 4. batched small structures vs one by one
    if config.batch:
        say(f"batch ({config.batch_count} x {8 * config.batch_cell ** 3}-atom cells):")
        for name in config.models:
            for mode in ("one-by-one", "batch"):
                case = {"method": mode, "mode": mode, "path": students[name].path, "batch_count": config.batch_count, "batch_cell": config.batch_cell}
                record(case, student_meta(name, mode, config.batch_count * 8 * config.batch_cell**3, par))
    # 5. allocator settings: glibc defaults vs mlffd's, interleaved, each in its own process
    if config.allocator:
        say(f"allocator ({config.allocator_model}; MLFFD_MALLOC=default vs mlffd settings):")
        name = config.allocator_model
        for n in config.allocator_sizes:
            for method, rnd, malloc in (
                (method, rnd, malloc)
                for method in config.allocator_methods
                for rnd in range(config.allocator_rounds)
                for malloc in (("default", "mlffd") if rnd % 2 == 0 else ("mlffd", "default"))
            ):  # one interleaved default/mlffd pair per round, the order alternating
                env = {"GLIBC_TUNABLES": None, "MLFFD_MALLOC": "default" if malloc == "default" else None}
                if method == "lammps":  # the plugin does not call mallopt (yet): the same settings via GLIBC_TUNABLES
                    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES if malloc == "mlffd" else None
                    est = _estimate_lammps_us("mlffd", artifact_cost.get((name, n)), n, ranges[name])
                    case = {"method": "lammps", "pair": "mlffd", "path": students[name].path, "atoms": n, "ranks": 1,
                            "steps": _lammps_steps(est, n, config), "warmup_steps": 1, "workdir": str(work / f"alloc-{name}-{n}-{malloc}-{rnd}"),
                            "timeout": config.timeout}
                    meta = student_meta(name, "lammps-mlffd", n, "r1", ranks=1, section="allocator", malloc=malloc, round=rnd)
                else:
                    case = {"method": method, "path": students[name].path, "atoms": n}
                    meta = student_meta(name, method, n, par, section="allocator", malloc=malloc, round=rnd)
                record(case, meta, env)

    finished = _dt.datetime.now(_dt.timezone.utc)
    host["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": started.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "host": host,
        "config": _jsonable(asdict(config)),
        "models": {k: asdict(v) for k, v in students.items()},
        "teachers": {k: {"spec": v["spec"], "weights": v["weights"]} for k, v in TEACHERS.items() if config.teachers and k in config.teacher_names},
        "measurements": measurements,
    }
    result["ratios"] = compute_ratios(result)
    result["targets"] = check_targets(result)
    write_outputs(result, out)
    _rmtree(work)
    return result


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _lammps_steps(est_us: float, n: int, config: BenchConfig) -> int:
    per_step = est_us * n * 1e-6
    return int(max(1, min(200000, round(max(config.min_time, 0.05) / max(per_step, 1e-9)))))


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- ratios and targets ----------------------------------------------------------------------


def _ok(m: dict | None) -> bool:
    return bool(m) and not m.get("error") and m["us_per_atom_step"]["median"] == m["us_per_atom_step"]["median"]


def _cost(m: dict) -> float:
    return float(m["us_per_atom_step"]["median"])


def _index(measurements: Iterable[dict]) -> dict[tuple, dict]:
    idx = {}
    for m in measurements:
        if _ok(m):
            idx[(m.get("section", "main"), m["method"], m["model"], m["atoms"], m["parallel"], m.get("malloc"))] = m
    return idx


RATIO_KINDS = ("vs_sw", "vs_tersoff", "speedup_vs_teacher", "plugin_vs_artifact", "batched_speedup", "size_scaling", "allocator_default_vs_mlffd", "allocator_growth")


def compute_ratios(result: dict) -> list[dict]:
    """Every ratio between measurements of the same run (same atom count unless the kind says otherwise).

    Kinds: ``vs_sw`` / ``vs_tersoff`` (student cost / classical cost with ``threads`` ranks),
    ``speedup_vs_teacher`` (teacher cost / student cost), ``plugin_vs_artifact`` (LAMMPS
    ``pair_style mlffd`` / raw artifact call), ``batched_speedup`` (one-by-one / batched cost),
    ``size_scaling`` (cost at N / cost at the reference size, 512 when measured, for each curve),
    ``allocator_default_vs_mlffd`` (glibc defaults / mlffd settings) and ``allocator_growth``
    (cost at N / cost at the smallest allocator size, per setting).
    """
    ms = [m for m in result["measurements"] if _ok(m)]
    idx = _index(ms)
    threads = result["config"]["threads"]
    ratios: list[dict] = []

    def add(kind: str, num: dict, den: dict, description: str, invert: bool = False, **extra) -> None:
        a, b = (_cost(den), _cost(num)) if invert else (_cost(num), _cost(den))
        ratios.append({"kind": kind, "model": num["model"], "atoms": num["atoms"], "value": a / b if b > 0 else math.nan,
                       "numerator": (den if invert else num)["id"], "denominator": (num if invert else den)["id"], "description": description, **extra})

    main = [m for m in ms if m.get("section", "main") == "main"]
    students = [m for m in main if m.get("kind") == "student" and m["method"] in ("artifact", "calculator", "lammps-mlffd")]
    ref_ranks = f"r{min(threads, max([m['ranks'] for m in main if m['method'] == 'lammps-sw'] or [threads]))}"
    for pot in ("sw", "tersoff"):
        for s in students:
            ref = idx.get(("main", f"lammps-{pot}", pot, s["atoms"], ref_ranks, None))
            if ref:
                add(f"vs_{pot}", s, ref, f"student cost / LAMMPS {pot} ({ref_ranks[1:]} ranks)")
    teachers = [m for m in main if m.get("kind") == "teacher"]
    for t in teachers:
        for s in students:
            if s["atoms"] == t["atoms"]:
                add("speedup_vs_teacher", s, t, f"{t['model']} cost / student cost", invert=True, teacher=t["model"])
    for s in students:
        if s["method"] == "lammps-mlffd":
            ref = idx.get(("main", "artifact", s["model"], s["atoms"], f"t{threads}", None))
            if ref:
                add("plugin_vs_artifact", s, ref, "LAMMPS pair_style mlffd / raw artifact call")
    for b in main:
        if b["method"] == "batch":
            one = idx.get(("main", "one-by-one", b["model"], b["atoms"], b["parallel"], None))
            if one:
                add("batched_speedup", b, one, "one-by-one cost / batched cost", invert=True)
    series: dict[str, list[dict]] = {}
    for m in main:
        if m["method"] not in ("batch", "one-by-one"):
            series.setdefault(_series_key(m), []).append(m)
    for key, group in series.items():
        group = sorted(group, key=lambda m: m["atoms"])
        ref = next((m for m in group if m["atoms"] == 512), None) or next((m for m in group if m["atoms"] >= 512), None) or group[0]
        for m in group:
            if m is not ref and m["atoms"] > ref["atoms"]:
                add("size_scaling", m, ref, f"cost at {m['atoms']} atoms / cost at {ref['atoms']} atoms")
    # allocator: rounds of the same (method, size, setting) pool into the median of their medians
    groups: dict[tuple, list[dict]] = {}
    for m in ms:
        if m.get("section") == "allocator":
            groups.setdefault((m["method"], m["model"], m["atoms"], m["parallel"], m.get("malloc")), []).append(m)

    def pooled(key: tuple) -> tuple[float, str, list[float]] | None:
        g = groups.get(key)
        if not g:
            return None
        costs = [_cost(m) for m in g]
        gid = g[0]["id"].split("/round")[0]
        return summarize(costs)["median"], gid, costs

    def add_pooled(kind: str, a: tuple, b: tuple, description: str, **extra) -> None:
        (ca, ida, la), (cb, idb, lb) = a, b
        ratios.append({"kind": kind, "model": extra.pop("model"), "atoms": extra.pop("atoms"), "value": ca / cb if cb > 0 else math.nan,
                       "numerator": ida, "denominator": idb, "description": description, "rounds": [len(la), len(lb)], **extra})

    for key in sorted(groups, key=lambda k: (k[0], k[2])):
        method, model, atoms, parallel, malloc = key
        if malloc != "default":
            continue
        a, b = pooled(key), pooled((method, model, atoms, parallel, "mlffd"))
        if a and b:
            per_round = [x / y for x, y in zip(a[2], b[2])]
            add_pooled("allocator_default_vs_mlffd", a, b, "cost with glibc defaults / cost with mlffd's malloc settings",
                       model=model, atoms=atoms, method=method, per_round=per_round)
    for setting in ("default", "mlffd"):
        for method in sorted({k[0] for k in groups}):
            keys = sorted((k for k in groups if k[0] == method and k[4] == setting), key=lambda k: k[2])
            for k in keys[1:]:
                if k[2] > keys[0][2]:
                    add_pooled("allocator_growth", pooled(k), pooled(keys[0]), f"cost at {k[2]} / cost at {keys[0][2]} atoms ({setting} malloc)",
                               model=k[1], atoms=k[2], malloc=setting, method=method)
    return [_jsonable(r) for r in ratios]


def check_targets(result: dict) -> list[dict]:
    """The issue's targets for each student, evaluated on this run (``value`` None where not measured).

    Student cost is the raw artifact call (``threads`` threads) against LAMMPS SW on ``threads``
    ranks at the largest size both have; the teacher speed-ups are ASE-to-ASE
    (``DistilledCalculator`` vs the teacher's calculator) at the largest teacher size.
    """
    ratios = result.get("ratios") or compute_ratios(result)
    ms = {m["id"]: m for m in result["measurements"] if _ok(m)}
    out = []

    def pick(kind: str, model: str, method: str | None = None, teacher: str | None = None, atoms: int | None = None, prefer="max"):
        cands = [r for r in ratios if r["kind"] == kind and r["model"] == model and r["value"] is not None]
        if method:
            cands = [r for r in cands if ms.get(r["numerator"], {}).get("method") == method or ms.get(r["denominator"], {}).get("method") == method]
        if teacher:
            cands = [r for r in cands if r.get("teacher") == teacher]
        if atoms is not None:
            cands = [r for r in cands if r["atoms"] == atoms]
        if not cands:
            return None
        return max(cands, key=lambda r: r["atoms"]) if prefer == "max" else min(cands, key=lambda r: r["atoms"])

    def entry(model, name, r, limit, op, **extra):
        value = None if r is None else r["value"]
        ok = None if value is None else (value <= limit if op == "<=" else value >= limit)
        out.append({"model": model, "target": name, "value": value, "limit": limit, "op": op, "pass": ok,
                    "atoms": None if r is None else r["atoms"], "ratio": r, **extra})

    for model in result.get("models", {}):
        t = TARGETS.get(model)
        if t is None:
            continue
        entry(model, "cost_vs_sw", pick("vs_sw", model, "artifact"), t["vs_sw"], "<=")
        entry(model, "speedup_vs_orb_v3_conservative", pick("speedup_vs_teacher", model, "calculator", "orb-v3-conservative"), t["vs_orb"], ">=")
        entry(model, "speedup_vs_7net0", pick("speedup_vs_teacher", model, "calculator", "sevennet-7net-0"), t["vs_7net"], ">=")
        big = [m for m in ms.values() if m["model"] == model and m["method"] == "artifact" and m.get("section") == "main" and m["atoms"] >= 32768]
        mem = {"value": big[0]["peak_rss_mb"] / 1e3, "atoms": big[0]["atoms"], "id": big[0]["id"]} if big else None
        out.append({"model": model, "target": "peak_memory_gb_32768", "value": None if mem is None else mem["value"], "limit": t["mem_gb"], "op": "<=",
                    "pass": None if mem is None else mem["value"] <= t["mem_gb"], "atoms": None if mem is None else mem["atoms"], "ratio": mem})
        scal = [r for r in ratios if r["kind"] == "size_scaling" and r["model"] == model and ms.get(r["numerator"], {}).get("method") == "artifact"
                and ms.get(r["denominator"], {}).get("atoms") == 512]
        entry(model, "flat_per_atom_512_to_max", max(scal, key=lambda r: r["atoms"]) if scal else None, FLATNESS_LIMIT, "<=")
        plug = [r for r in ratios if r["kind"] == "plugin_vs_artifact" and r["model"] == model and ms.get(r["numerator"], {}).get("ranks") == 1]
        plug4k = [r for r in plug if r["atoms"] == 4096] or plug
        entry(model, "plugin_overhead_vs_artifact", max(plug4k, key=lambda r: r["atoms"]) if plug4k else None, PLUGIN_OVERHEAD_LIMIT, "<=")
        entry(model, "batched_speedup", pick("batched_speedup", model), BATCH_SPEEDUP_TARGET, ">=")
    return [_jsonable(e) for e in out]


# -- outputs ---------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or x != x:
        return "–"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _label(m: dict) -> str:
    if m["method"] == "teacher":
        return f"teacher {m['model']} ({m['weights']} weights)"
    if m["method"].startswith("lammps-") and m.get("kind") == "classical":
        return f"LAMMPS {m['model']} ({m['ranks']} rank{'s' if m['ranks'] > 1 else ''})"
    if m["method"] == "lammps-mlffd":
        return f"{m['model']}: LAMMPS mlffd ({m['ranks']} rank{'s' if m['ranks'] > 1 else ''})"
    return f"{m['model']}: {m['method']}"


def markdown_report(result: dict) -> str:
    """Markdown tables of a results dict: cost, throughput, memory, ratios, allocator, targets."""
    ms = [m for m in result["measurements"]]
    cfg = result["config"]
    host = result["host"]
    lines = [
        f"mlffd bench — {result['created']} — {host.get('cpu') or '?'}, {host.get('cpu_count')} CPUs, "
        f"threads {cfg['threads']}, repeats {cfg['repeats']}, load average {_fmt((host.get('load_average') or [math.nan])[0])} → "
        f"{_fmt((host.get('load_average_end') or [math.nan])[0])}",
        "",
    ]
    models = result.get("models", {})
    if models:
        lines.append("Students: " + "; ".join(f"{k} ({v['num_parameters']:,} params, {v['dtype']}, {v['weights']} weights)" for k, v in models.items()))
        lines.append("")
    main = [m for m in ms if m.get("section", "main") == "main" and m["method"] not in ("batch", "one-by-one")]
    sizes = sorted({m["atoms"] for m in main})
    order = {"artifact": 0, "calculator": 1, "lammps-mlffd": 2, "lammps-sw": 3, "lammps-tersoff": 4, "teacher": 5}
    rows: dict[str, dict[int, dict]] = {}
    model_order = {name: k for k, name in enumerate(models)}
    for m in sorted(main, key=lambda m: (m.get("kind") != "student", order.get(m["method"], 9), model_order.get(m["model"], 99), m["model"], m.get("ranks") or 0)):
        rows.setdefault(_label(m), {})[m["atoms"]] = m

    def table(title: str, cell: Callable[[dict], str]) -> None:
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| method | " + " | ".join(f"{n:,} atoms" for n in sizes) + " |")
        lines.append("| --- |" + " --- |" * len(sizes))
        for label, by in rows.items():
            lines.append(f"| {label} | " + " | ".join(cell(by[n]) if n in by else "" for n in sizes) + " |")
        lines.append("")

    def cost_cell(m: dict) -> str:
        if m.get("error"):
            return "failed"
        s = m["us_per_atom_step"]
        return f"{_fmt(s['median'])} ({_fmt(s['q1'])}–{_fmt(s['q3'])})"

    lines += summary_table(result)
    if main:
        table("Cost, µs per atom-step: median (IQR)", cost_cell)
        table("Throughput, atom-steps per second (median)", lambda m: "failed" if m.get("error") else _fmt(m["atom_steps_per_s"]))
        table("Peak memory, MB (ru_maxrss of the measuring process; LAMMPS: largest rank)", lambda m: "failed" if m.get("error") else _fmt(m["peak_rss_mb"]))
        table(
            "Peak memory of the evaluation, MB (peak minus the process's RSS before the first call: torch, the structure and its neighbour list excluded)",
            lambda m: "failed" if m.get("error") else _fmt(m.get("peak_increment_mb")),
        )
    ratios = result.get("ratios", [])
    if any(r["kind"] not in ("allocator_default_vs_mlffd", "allocator_growth") for r in ratios):
        lines.append("### Ratios (same run)")
        lines.append("")
        lines.append("| kind | numerator | denominator | ratio |")
        lines.append("| --- | --- | --- | --- |")
        for r in ratios:
            if r["kind"] in ("allocator_default_vs_mlffd", "allocator_growth"):
                continue
            lines.append(f"| {r['kind']} | {r['numerator']} | {r['denominator']} | {_fmt(r['value'])} |")
        lines.append("")
    batch = [m for m in ms if m["method"] in ("batch", "one-by-one")]
    if batch:
        lines.append("### Many small structures")
        lines.append("")
        lines.append("| model | mode | structures × atoms | µs per atom-step (IQR) | atom-steps/s | peak MB |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for m in batch:
            lines.append(f"| {m['model']} | {m['method']} | {m.get('structures', '?')} × {m.get('atoms_per_structure', '?')} | {cost_cell(m)} | "
                         f"{_fmt(m['atom_steps_per_s'])} | {_fmt(m['peak_rss_mb'])} |")
        lines.append("")
    alloc = [m for m in ms if m.get("section") == "allocator"]
    if alloc:
        lines.append("### Allocator: glibc defaults (MLFFD_MALLOC=default) vs mlffd's settings")
        lines.append("")
        lines.append("| model | method | atoms | malloc | round | µs per atom-step (IQR) | peak MB |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for m in alloc:
            lines.append(f"| {m['model']} | {m['method']} | {m['atoms']:,} | {m['malloc']} | {m.get('round', 0)} | {cost_cell(m)} | {_fmt(m['peak_rss_mb'])} |")
        lines.append("")
        for r in ratios:
            if r["kind"] in ("allocator_default_vs_mlffd", "allocator_growth"):
                rounds = f"; median over {r['rounds'][0]} rounds, per round {', '.join(_fmt(v) for v in r['per_round'])}" if r.get("per_round") and len(r["per_round"]) > 1 else ""
                lines.append(f"- {r['description']}: **{_fmt(r['value'])}** ({r['numerator']} / {r['denominator']}{rounds})")
        lines.append("")
    targets = result.get("targets", [])
    if any(t["value"] is not None for t in targets):
        lines.append("### Targets of the performance issue (this run)")
        lines.append("")
        lines.append("| model | target | value | limit | at atoms | pass |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for t in targets:
            verdict = "–" if t["pass"] is None else ("yes" if t["pass"] else "no")
            lines.append(f"| {t['model']} | {t['target']} | {_fmt(t['value'])} | {t['op']} {_fmt(t['limit'])} | {t['atoms'] or '–'} | {verdict} |")
        lines.append("")
    failed = [m for m in ms if m.get("error")]
    if failed:
        lines.append("### Failed measurements")
        lines.append("")
        for m in failed:
            lines.append(f"- {m['id']}: {m['error'].splitlines()[-1][:300]}")
        lines.append("")
    return "\n".join(lines)


def summary_table(result: dict) -> list[str]:
    """Markdown lines: per student, the headline ratios of this run (a digest of ``ratios``)."""
    ratios = result.get("ratios", [])
    ms = {m["id"]: m for m in result["measurements"]}
    students = list(result.get("models", {}))
    if not students or not ratios:
        return []

    def method_of(r: dict, side: str) -> dict:
        return ms.get(r[side], {})

    def best(kind: str, model: str, method: str, ranks: int | None = None, teacher: str | None = None, atoms: int | None = None):
        cands = []
        for r in ratios:
            if r["kind"] != kind or r["model"] != model or r["value"] is None:
                continue
            side = "denominator" if kind == "speedup_vs_teacher" else "numerator"
            m = method_of(r, side)
            if m.get("method") != method or (ranks is not None and m.get("ranks") != ranks):
                continue
            if teacher and r.get("teacher") != teacher:
                continue
            if atoms is not None and r["atoms"] != atoms:
                continue
            cands.append(r)
        return max(cands, key=lambda r: r["atoms"]) if cands else None

    def cell(r) -> str:
        return "–" if r is None else f"{_fmt(r['value'])} ({r['atoms']:,})"

    teachers = sorted({r["teacher"] for r in ratios if r["kind"] == "speedup_vs_teacher"})
    head = ["student", "artifact / SW", "calculator / SW", "LAMMPS 1 rank / SW", "LAMMPS 2 ranks / SW"]
    head += [f"{t} / calculator" for t in teachers]
    head += ["plugin 1 rank / artifact", "one-by-one / batched"]
    threads = result["config"]["threads"]
    lines = [f"### Summary (ratios of this run; SW = LAMMPS sw on {threads} rank{'s' if threads > 1 else ''}; "
             "in brackets the atom count, the largest measured)", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model in students:
        row = [model, cell(best("vs_sw", model, "artifact")), cell(best("vs_sw", model, "calculator")),
               cell(best("vs_sw", model, "lammps-mlffd", 1)), cell(best("vs_sw", model, "lammps-mlffd", 2))]
        row += [cell(best("speedup_vs_teacher", model, "calculator", teacher=t)) for t in teachers]
        plug = best("plugin_vs_artifact", model, "lammps-mlffd", 1, atoms=4096) or best("plugin_vs_artifact", model, "lammps-mlffd", 1)
        row += [cell(plug), cell(next((r for r in ratios if r["kind"] == "batched_speedup" and r["model"] == model), None))]
        if any(c != "–" for c in row[1:]):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines if len(lines) > 5 else []


def plot(result: dict, path: str | Path) -> Path:
    """Log-log plot of µs per atom-step versus atoms (one curve per method, model and parallelism)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.0, 6.5))
    curves: dict[str, list[dict]] = {}
    for m in result["measurements"]:
        if _ok(m) and m.get("section", "main") == "main" and m["method"] not in ("batch", "one-by-one"):
            curves.setdefault(_label(m), []).append(m)
    palette = {"ultra-tiny": "tab:blue", "tiny": "tab:orange", "original": "tab:green", "sw": "black", "tersoff": "dimgray",
               "sevennet-7net-0": "tab:red", "orb-v3-conservative": "tab:purple", "orb-v3-direct": "tab:brown"}
    extra = iter(["tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 10)
    markers = {"artifact": "o", "calculator": "s", "lammps-mlffd": "^", "lammps-sw": "v", "lammps-tersoff": "D", "teacher": "x"}

    def style(m: dict) -> str:
        if m["kind"] == "teacher":
            return ":"
        if m["method"].startswith("lammps"):
            return (0, (3, 1, 1, 1, 1, 1)) if (m.get("ranks") or 1) > 1 else (0, (3, 1, 1, 1))
        return "-" if m["method"] == "artifact" else (0, (6, 2))

    for label, group in curves.items():
        group.sort(key=lambda m: m["atoms"])
        first = group[0]
        if first["model"] not in palette:
            palette[first["model"]] = next(extra)
        x = [m["atoms"] for m in group]
        y = [_cost(m) for m in group]
        lo = [max(0.0, _cost(m) - m["us_per_atom_step"]["q1"]) for m in group]
        hi = [max(0.0, m["us_per_atom_step"]["q3"] - _cost(m)) for m in group]
        ax.errorbar(x, y, yerr=[lo, hi], label=label, linestyle=style(first), color=palette[first["model"]],
                    marker=markers.get(first["method"], "o"), capsize=2, markersize=4,
                    fillstyle="none" if (first.get("ranks") or 1) > 1 else "full")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (diamond Si)")
    ax.set_ylabel("µs per atom-step (median, IQR bars)")
    cfg = result["config"]
    ranks = ", ".join(str(r) for r in cfg.get("ranks") or []) or "-"
    ax.set_title(f"mlffd bench {result['created'][:10]}: torch threads {cfg['threads']}, LAMMPS ranks {ranks}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    """``bench.json``, ``bench.md`` and ``bench_cost.png`` in ``out``."""
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench_cost.png"}
    paths["json"].write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    paths["markdown"].write_text(markdown_report(result) + "\n")
    plot(result, paths["plot"])
    return paths


#: top-level fields of the results JSON and of each measurement (tests check them)
RESULT_FIELDS = ("schema", "created", "duration_s", "host", "config", "models", "teachers", "measurements", "ratios", "targets")
MEASUREMENT_FIELDS = (
    "id", "section", "method", "model", "kind", "weights", "atoms", "atoms_requested", "parallel", "ranks", "threads", "repeats",
    "warmup", "error", "us_per_atom_step", "atom_steps_per_s", "samples_us", "peak_rss_mb", "rss_before_mb", "peak_increment_mb",
)


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "worker":
        case = json.loads(argv[1])
        res = run_worker(case)
        sys.stdout.write(RESULT_MARKER + json.dumps(_jsonable(res)) + "\n")
        sys.stdout.flush()
        return 0
    sys.stderr.write("usage: python -m mlffd.bench worker CASE_JSON (internal; use 'mlffd bench')\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
