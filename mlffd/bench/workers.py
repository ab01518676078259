"""One measurement per process: structures, timing, and the workers (``python -m mlffd.bench worker``)."""

from __future__ import annotations

import json
import math
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from mlffd.bench.config import LATTICE_SI, RESULT_MARKER, SI_SW, SI_TERSOFF, TEACHERS
from mlffd.jsonable import jsonable
from mlffd.lammps import lammps_quote



def supercell_reps(n_atoms: int) -> int:
    """Repetitions ``n`` of the 8-atom conventional cell whose ``8 n^3`` is closest to ``n_atoms``."""
    return max(1, int(round((n_atoms / 8.0) ** (1.0 / 3.0))))


def si_supercell(n_atoms: int, rattle: float = 0.0, seed: int = 0):
    """Diamond Si, ``n x n x n`` conventional cells (``8 n^3`` atoms, closest to ``n_atoms``).

    The cell of ``ase.build.bulk("Si", "diamond", cubic=True)``, written out: ``ase.build``
    imports scipy (~47 MB of resident memory that the measured processes would carry)."""
    import numpy as np
    from ase import Atoms

    n = supercell_reps(n_atoms)
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    basis = np.stack([fcc, fcc + 0.25], axis=1).reshape(8, 3)  # each fcc site, then its (1/4, 1/4, 1/4) partner
    atoms = Atoms("Si8", scaled_positions=basis, cell=np.eye(3) * LATTICE_SI, pbc=True) * (n, n, n)
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


def _artifact_inputs(atoms, artifact, device: str = "cpu"):
    import numpy as np
    import torch

    from mlffd.neighbors import neighbor_list

    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, artifact.cutoff)
    dtype = artifact.dtype
    species_of = {s: k for k, s in enumerate(artifact.elements)}
    t = dict(device=device)
    return (
        torch.as_tensor(atoms.positions, dtype=dtype, **t),
        torch.as_tensor(np.array([species_of[s] for s in atoms.get_chemical_symbols()]), dtype=torch.int64, **t),
        torch.as_tensor(edges.index, dtype=torch.int64, **t),
        torch.as_tensor(edges.shift_cells, **t).to(dtype) @ torch.as_tensor(atoms.cell.array, dtype=dtype, **t),
        torch.ones(len(atoms), dtype=torch.bool, **t),
    ), len(edges)


class _DeviceMemory:
    """Peak GPU memory of the measured calls (MB above what was allocated when started); empty on CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.before = 0.0
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 1e6

    def result(self) -> dict:
        if not self.cuda:
            return {}
        import torch

        return {"peak_device_mb": torch.cuda.max_memory_allocated() / 1e6, "device_before_mb": self.before,
                "device_name": torch.cuda.get_device_name()}


def _worker_artifact(case: dict) -> dict:
    from mlffd.artifact import configure_blocks, load

    device = case.get("device", "cpu")
    alloc = _configure_allocator()
    _set_threads(case["threads"])
    artifact = load(case["path"], device=device)
    atoms = si_supercell(case["atoms"], rattle=0.05, seed=1)
    args, n_edges = _artifact_inputs(atoms, artifact, device)
    module = artifact.module
    block = configure_blocks(module, artifact.metadata, device, case.get("block_atoms") or None, n_atoms=len(atoms),
                             n_edges=n_edges)  # as DistilledCalculator does
    rss0 = _rss_mb()
    memory = _DeviceMemory(device)

    samples, k = _time_steps(_artifact_step(module, args), len(atoms), case["warmup"], case["repeats"], case["min_time"])
    return {"samples_us": samples, "calls_per_repeat": k, "atoms": len(atoms), "edges": n_edges, "rss_before_mb": rss0,
            "allocator": alloc, "block_atoms": block, **memory.result()}


def _ase_steps(atoms, calc, case: dict) -> dict:
    """Time ``calc`` along an MD walk through ASE (energy, forces, stress per step).

    Returns the common measurement fields (samples, calls per repeat, atoms, RSS before the
    first call, peak GPU memory on CUDA) and ``steps``, the number of steps taken.
    """
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

    memory = _DeviceMemory(case.get("device", "cpu"))
    rss0 = _rss_mb()
    samples, k = _time_steps(step, len(atoms), case["warmup"], case["repeats"], case["min_time"])
    return {**memory.result(), "samples_us": samples, "calls_per_repeat": k, "atoms": len(atoms), "rss_before_mb": rss0,
            "steps": calls[0]}


def _student_calculator(case: dict, **options):
    """The measured student's ``DistilledCalculator`` (device and block size from ``case``) and the
    allocator settings it applied."""
    from mlffd.allocator import allocator_status
    from mlffd.calculator import DistilledCalculator

    _set_threads(case["threads"])
    calc = DistilledCalculator(case["path"], device=case.get("device", "cpu"), block_atoms=case.get("block_atoms") or None,
                               **options)  # applies the allocator settings itself
    status = allocator_status()
    alloc = status.to_dict() if status else {"applied": False, "reason": os.environ.get("MLFFD_MALLOC", "not applied")}
    return calc, alloc


def _worker_calculator(case: dict) -> dict:
    calc, alloc = _student_calculator(case, compile=bool(case.get("compile")), uncertainty=bool(case.get("uncertainty")))
    atoms = si_supercell(case["atoms"])
    builds0 = calc.nl_builds
    res = _ase_steps(atoms, calc, case)
    steps = res.pop("steps")
    return {**res, "allocator": alloc, "nl_builds_per_step": (calc.nl_builds - builds0) / max(steps, 1), "skin": calc.skin}


def _load_teacher_for_bench(name: str, workdir: Path, device: str = "cpu"):
    """The teacher's ASE calculator; Orb with a random-weight checkpoint from orb-models' builders."""
    from mlffd.teachers import load_teacher

    info = TEACHERS[name]
    if info["weights"] == "shipped":
        return load_teacher(info["spec"], device=device)
    from mlffd.teachers.orb import random_checkpoint as random_orb_checkpoint

    variant = "conservative" if "conservative" in name else "direct"
    path = workdir / f"{info['spec'].split(':', 1)[1]}-random.ckpt"
    random_orb_checkpoint(path, variant, max_num_neighbors=info["max_num_neighbors"])
    return load_teacher(f"{info['spec']}@{path}", device=device)


def _num_parameters(calc) -> int | None:
    model = getattr(calc, "model", None)
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - calculators differ
        return None


def _worker_teacher(case: dict) -> dict:
    _set_threads(case["threads"])
    calc = _load_teacher_for_bench(case["model"], Path(case["workdir"]), case.get("device", "cpu"))
    res = _ase_steps(si_supercell(case["atoms"]), calc, case)
    res.pop("steps")
    return {
        **res,
        "num_parameters": _num_parameters(calc),
        "allocator": {"applied": False, "reason": "teacher process (mlffd not involved)"},
    }


def _worker_batch(case: dict) -> dict:
    calc, alloc = _student_calculator(case)
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
    memory = _DeviceMemory(case.get("device", "cpu"))
    samples, k = _time_steps(step, n_total, case["warmup"], case["repeats"], case["min_time"])
    return {
        **memory.result(),
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


def lammps_pair(pair: str, workdir: Path, model_path: str | None = None, device: str = "cpu", options: str = "") -> list[str]:
    """pair_style / pair_coeff lines for ``mlffd`` (``options``: more pair_style keywords, e.g.
    ``graph rebuild``), ``sw`` or ``tersoff`` (potential files written to ``workdir``)."""
    if pair == "mlffd":
        style = "pair_style mlffd" + (f" device {device}" if device != "cpu" else "") + (f" {options}" if options else "")
        return [style, f"pair_coeff * * {lammps_quote(model_path, 'model path')} Si"]
    if pair == "sw":
        (workdir / "Si.sw").write_text(SI_SW)
        return ["pair_style sw", "pair_coeff * * Si.sw Si"]
    if pair == "tersoff":
        (workdir / "Si.tersoff").write_text(SI_TERSOFF)
        return ["pair_style tersoff", "pair_coeff * * Si.tersoff Si"]
    raise ValueError(f"unknown LAMMPS pair {pair!r}")


def _md_setup(data_file: str, pair: list[str]) -> list[str]:
    """LAMMPS input lines of the benchmark MD up to the runs: the structure from ``data_file``,
    the ``pair`` lines, 1 fs NVE from 300 K velocities."""
    return ["units metal", "atom_style atomic", "boundary p p p", f"read_data {data_file}", *pair, "timestep 0.001",
            "velocity all create 300.0 4928459 mom yes rot yes dist gaussian", "fix md all nve"]


def _worker_lammps(case: dict) -> dict:
    from mlffd.lammps import run_deck, write_data

    work = Path(case["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    atoms = si_supercell(case["atoms"])
    write_data(atoms, work / "atoms.data", ["Si"])
    pair = lammps_pair(case["pair"], work, case.get("path"), case.get("device", "cpu"), case.get("pair_options", ""))
    steps, warm = int(case["steps"]), int(case["warmup_steps"])
    deck = [
        *_md_setup("atoms.data", pair),
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
        "allocator": _lammps_allocator(case["pair"], env),
    }


def _lammps_allocator(pair: str, env: dict[str, str]) -> dict:
    """Which malloc settings a LAMMPS run had: pair_style mlffd applies mlffd's itself (as
    :func:`mlffd.allocator.configure_allocator` does, with the same exceptions); the classical
    styles only what ``GLIBC_TUNABLES`` sets."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in tunables:
        return {"applied": True, "reason": f"GLIBC_TUNABLES={tunables!r}"}
    if pair != "mlffd":
        return {"applied": False, "reason": f"pair_style {pair}: mlffd not involved"}
    if env.get("MLFFD_MALLOC") == "default":
        return {"applied": False, "reason": "MLFFD_MALLOC=default"}
    preload = env.get("LD_PRELOAD", "")
    other = next((a for a in ("jemalloc", "tcmalloc", "mimalloc") if a in preload), None)
    if other:
        return {"applied": False, "reason": f"LD_PRELOAD loads {other}"}
    return {"applied": True, "reason": "pair_style mlffd calls mallopt (glibc)"}


def _artifact_step(module, args) -> Callable[[], float]:
    """One timed raw artifact call."""

    def step() -> float:
        t = time.perf_counter()
        out = module(*args)
        out["forces"].sum().item()  # waits for the device
        return time.perf_counter() - t

    return step


def _block_us(step: Callable[[], float], k: int, n_atoms: int) -> float:
    """µs per atom-step over ``k`` steps."""
    return sum(step() for _ in range(k)) / k / n_atoms * 1e6


def in_process_lammps(atoms, model_path: str, workdir: Path):
    """A LAMMPS instance in this process (the ``lammps`` module, plugin found through
    ``LAMMPS_PLUGIN_PATH``) set up for the NVE MD of the ``lammps`` worker; returns
    ``run(steps) -> seconds``, LAMMPS' own loop time of that ``run`` (setup excluded)."""
    from lammps import lammps

    from mlffd.lammps import write_data

    workdir.mkdir(parents=True, exist_ok=True)
    write_data(atoms, workdir / "atoms.data", ["Si"])
    log = workdir / "log.lammps"
    lmp = lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    lmp.commands_string("\n".join([*_md_setup(str(workdir / "atoms.data"), lammps_pair("mlffd", workdir, model_path)), "thermo 0"]))

    def run(steps: int) -> float:
        lmp.command(f"run {steps}")
        loops = parse_loop_times(log.read_text())
        if not loops or loops[-1][2] != steps:
            raise RuntimeError(f"no 'Loop time' line for run {steps} in {log}")
        return loops[-1][0]

    return run


def _worker_side_by_side(case: dict) -> dict:
    """Two costs measured alternately in one process, for a ratio that machine drift between
    processes cannot bias: ``compare="scaling"`` the raw artifact call at ``atoms`` vs at
    ``reference_atoms``; ``compare="plugin"`` LAMMPS ``pair_style mlffd`` (1 rank, in this process)
    vs the raw artifact call at ``atoms``. ``pairs`` alternations (order alternating), each one
    block of at least ``min_time`` per side after warm-up; returns both sides' samples (µs per
    atom-step) and the ratio within each pair."""
    from mlffd.artifact import configure_blocks, load

    alloc = _configure_allocator()
    _set_threads(case["threads"])
    artifact = load(case["path"])
    module = artifact.module
    n = supercell_reps(int(case["atoms"])) ** 3 * 8  # the cell's atom count

    def artifact_block(n_atoms: int) -> Callable[[], float]:
        """µs per atom-step of the raw call on an ``n_atoms`` cell over a block of at least
        ``min_time`` (warmed up, block length calibrated here), with the module's blocks set for
        that size (as DistilledCalculator sets them)."""
        cell = si_supercell(n_atoms, rattle=0.05, seed=1)
        args, n_edges = _artifact_inputs(cell, artifact)
        step = _artifact_step(module, args)

        def configure() -> None:
            configure_blocks(module, artifact.metadata, "cpu", case.get("block_atoms") or None, n_atoms=len(cell), n_edges=n_edges)

        configure()
        for _ in range(max(1, case["warmup"])):
            last = step()
        k = max(1, int(math.ceil(case["min_time"] / max(last, 1e-9))))

        def block() -> float:
            configure()
            return _block_us(step, k, len(cell))

        return block

    if case["compare"] == "scaling":
        measure, reference = artifact_block(n), artifact_block(int(case["reference_atoms"]))
    elif case["compare"] == "plugin":
        reference = artifact_block(n)
        run = in_process_lammps(si_supercell(n), case["path"], Path(case["workdir"]))
        run(max(1, case["warmup"]))
        steps = max(1, int(math.ceil(case["min_time"] / max(run(2) / 2, 1e-9))))

        def measure() -> float:
            return run(steps) / steps / n * 1e6

    else:
        raise ValueError(f"unknown side-by-side comparison {case['compare']!r}")
    samples, ref_samples, ratios = [], [], []
    for p in range(int(case["pairs"])):
        if p % 2 == 0:
            a = measure()
            b = reference()
        else:
            b = reference()
            a = measure()
        samples.append(a)
        ref_samples.append(b)
        ratios.append(a / b)
    return {"samples_us": samples, "reference_samples_us": ref_samples, "pair_ratios": ratios, "atoms": n,
            "reference_atoms": supercell_reps(int(case.get("reference_atoms", n))) ** 3 * 8, "rss_before_mb": math.nan, "allocator": alloc}


_WORKERS: dict[str, Callable[[dict], dict]] = {
    "artifact": _worker_artifact,
    "calculator": _worker_calculator,
    "calculator-compiled": _worker_calculator,
    "teacher": _worker_teacher,
    "batch": _worker_batch,
    "one-by-one": _worker_batch,
    "lammps": _worker_lammps,
    "side-by-side": _worker_side_by_side,
}


def run_worker(case: dict) -> dict:
    """Run one measurement in this process (called by ``python -m mlffd.bench worker``)."""
    t0 = time.perf_counter()
    res = _WORKERS[case["method"]](case)
    res.setdefault("peak_rss_mb", _maxrss_mb())
    res["worker_wall_s"] = time.perf_counter() - t0
    return res


# -- entry point of the worker processes ---------------------------------------------------


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "worker":
        case = json.loads(argv[1])
        res = run_worker(case)
        sys.stdout.write(RESULT_MARKER + json.dumps(jsonable(res)) + "\n")
        sys.stdout.flush()
        return 0
    sys.stderr.write("usage: python -m mlffd.bench worker CASE_JSON (internal; use 'mlffd bench')\n")
    return 2
