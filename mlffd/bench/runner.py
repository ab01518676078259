"""Running a benchmark: one worker process per measurement, students prepared, results collected."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mlffd.allocator import GLIBC_TUNABLES
from mlffd.bench.analysis import compute_ratios, headline, pool_rounds
from mlffd.bench.config import LATTICE_SI, RESULT_MARKER, SCHEMA, TEACHERS, BenchConfig
from mlffd.bench.records import as_number
from mlffd.bench.report import write_outputs
from mlffd.bench.workers import summarize, supercell_reps
from mlffd.jsonable import jsonable



@dataclass
class _Student:
    name: str
    path: str
    weights: str  # "shipped" | "random"
    num_parameters: int
    dtype: str


def prepare_students(models: Iterable[str], directory: Path, dtype: str = "float32") -> dict[str, _Student]:
    """The shipped artifact for each name in the registry, a random-weight artifact for a size
    preset, or an artifact file given by its path."""
    import torch

    from mlffd.artifact import read_metadata
    from mlffd.models import PRESETS, export_student
    from mlffd.registry import REGISTRY, resolve
    from mlffd.models.random_weights import random_student

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
        elif Path(name).is_file():
            path, weights = Path(name), "file"
        else:
            raise ValueError(f"model {name!r} is neither shipped ({', '.join(sorted(REGISTRY)) or 'none'}) nor a size preset ({', '.join(PRESETS)}) nor an existing artifact file")
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    host = host_info()
    run = _BenchRun(config, out, progress or (lambda s: None))
    run.measure_all()
    finished = _dt.datetime.now(_dt.timezone.utc)
    host["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": started.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "host": host,
        "config": jsonable(asdict(config)),
        "models": {k: asdict(v) for k, v in run.students.items()},
        "teachers": {k: {"spec": v["spec"], "weights": v["weights"]} for k, v in TEACHERS.items() if config.teachers and k in config.teacher_names},
        "measurements": run.measurements,
    }
    if config.rounds > 1:  # tables and headline numbers from the pooled measurements, ratios round by round
        result["round_measurements"] = run.measurements
        result["measurements"] = pool_rounds(run.measurements)
    result["ratios"] = compute_ratios(result)
    result["headline"] = headline(result)
    write_outputs(result, out)
    _rmtree(run.work)
    return result


class _BenchRun:
    """The measurements of one :func:`run_bench`, each spawned in its own worker process and
    recorded in :attr:`measurements` in the order they ran."""

    def __init__(self, config: BenchConfig, out: Path, say: Callable[[str], None]) -> None:
        from mlffd.artifact import read_metadata

        self.config = config
        self.say = say
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=out))
        models = sorted(set(config.models) | ({config.allocator_model} if config.allocator else set()),
                        key=list(config.models + (config.allocator_model,)).index)
        needed = config.students or config.lammps_students or config.batch or config.allocator
        self.students = prepare_students(models, out / "artifacts", config.dtype) if needed else {}
        self.ranges = {name: float(read_metadata(st.path)["interaction_range"]) for name, st in self.students.items()}
        self.measurements: list[dict] = []
        self.threads = config.threads
        self.par = f"t{config.threads}"
        self.base_env = {"OMP_NUM_THREADS": str(config.threads), "MKL_NUM_THREADS": str(config.threads)}
        self.common = {"threads": config.threads, "repeats": config.repeats, "warmup": config.warmup, "min_time": config.min_time,
                       "device": config.device, "block_atoms": config.block_atoms}
        self.artifact_cost: dict[tuple[str, int], float] = {}
        self.lammps_students = config.lammps and config.lammps_students

    def measure_all(self) -> None:
        """The main measurements, in rounds when asked (pooled by :func:`run_bench`). Within a
        round, size by size, the measurements that form a ratio run next to each other (the
        machine's speed drifts over minutes): the classical floor, then per student its
        artifact, calculator and plugin runs, then the teachers at that size."""
        config = self.config
        for rnd in range(config.rounds):
            tag = {"round": rnd} if config.rounds > 1 else {}
            if config.rounds > 1:
                self.say(f"round {rnd + 1} of {config.rounds}:")
            for n in config.sizes:
                self.say(f"{n} atoms:")
                if config.lammps:
                    self.measure_classical(n, tag)
                for name in config.models:
                    if config.students:
                        self.measure_students(name, n, tag)
                    if self.lammps_students:
                        self.measure_plugin(name, n, tag)
                if config.teachers and n in config.teacher_sizes:
                    self.measure_teachers(n, tag)
            for n in config.teacher_sizes if config.teachers else ():
                if n not in config.sizes:
                    self.say(f"teachers, {n} atoms:")
                    self.measure_teachers(n, tag)
            if config.side_by_side and config.students and config.device == "cpu":  # (the GPU runs have no such drift to remove)
                self.say("side by side (two costs alternating in one process):")
                self.measure_side_by_side(tag)
            if config.batch:
                self.measure_batch(tag)
        if config.allocator:
            self.measure_allocator()

    def record(self, case: dict, meta: dict, env: dict[str, str | None] | None = None) -> dict:
        """Run one worker for ``case`` and record its measurement, described by ``meta``."""
        config = self.config
        res = _spawn({**self.common, **case}, {**self.base_env, **(env or {})}, config.timeout)
        m = {
            "id": measurement_id(meta["method"], meta["model"], meta["atoms_requested"], meta["parallel"], meta.get("section", "main"), meta.get("malloc"))
            + (f"/round{meta['round']}" if "round" in meta else ""),
            "section": "main",
            **meta,
            "threads": self.threads if meta.get("ranks") in (None, 1) else max(1, self.threads // meta["ranks"]),
            "repeats": config.repeats,
            "warmup": config.warmup if meta["method"] not in ("lammps-mlffd", "lammps-sw", "lammps-tersoff") else 1,
            "error": res.get("error"),
            "device": config.device if meta["method"] not in ("lammps-sw", "lammps-tersoff") else "cpu",
        }
        m.update(_measured(res, meta["atoms_requested"]))
        self.measurements.append(m)
        if m["error"]:
            self.say(f"  {m['id']:<44s} FAILED: {m['error'].splitlines()[-1] if m['error'] else ''}")
        else:
            s = m["us_per_atom_step"]
            gpu = f", GPU {m['peak_device_mb']:.0f} MB" if m["peak_device_mb"] == m["peak_device_mb"] else ""
            self.say(f"  {m['id']:<44s} {s['median']:12.3f} µs/atom-step  [{s['q1']:.3g}-{s['q3']:.3g}]  peak {m['peak_rss_mb']:.0f} MB{gpu}")
        return m

    def student_meta(self, name: str, method: str, n: int, parallel: str, **extra) -> dict:
        st = self.students[name]
        return {"method": method, "model": name, "kind": "student", "weights": st.weights, "num_parameters": st.num_parameters,
                "dtype": st.dtype, "atoms_requested": n, "parallel": parallel, "ranks": extra.pop("ranks", None), **extra}

    def measure_students(self, name: str, n: int, tag: dict) -> None:
        """Raw artifact call and DistilledCalculator (and compile=True when asked)."""
        path = self.students[name].path
        m = self.record({"method": "artifact", "path": path, "atoms": n}, self.student_meta(name, "artifact", n, self.par, **tag))
        self.artifact_cost[(name, n)] = m["us_per_atom_step"]["median"]
        self.record({"method": "calculator", "path": path, "atoms": n}, self.student_meta(name, "calculator", n, self.par, **tag))
        if self.config.compiled:
            self.record({"method": "calculator-compiled", "compile": True, "path": path, "atoms": n},
                        self.student_meta(name, "calculator-compiled", n, self.par, **tag))

    def measure_classical(self, n: int, tag: dict) -> None:
        """LAMMPS sw / tersoff on each rank count: the classical floor."""
        for pair in self.config.classical:
            for ranks in self.config.ranks:
                steps = _lammps_steps(_estimate_lammps_us(pair, None, n, 0.0), n, self.config)
                case = {"method": "lammps", "pair": pair, "atoms": n, "ranks": ranks, "steps": steps, "warmup_steps": max(1, steps // 5),
                        "workdir": str(self.work / f"{pair}-{n}-r{ranks}"), "timeout": self.config.timeout}
                meta = {"method": f"lammps-{pair}", "model": pair, "kind": "classical", "weights": "published", "atoms_requested": n,
                        "parallel": f"r{ranks}", "ranks": ranks, **tag}
                self.record(case, meta)

    def measure_plugin(self, name: str, n: int, tag: dict) -> None:
        """LAMMPS pair_style mlffd on each rank count."""
        for ranks in self.config.ranks:
            steps = _lammps_steps(_estimate_lammps_us("mlffd", self.artifact_cost.get((name, n)), n, self.ranges[name]), n, self.config)
            case = {"method": "lammps", "pair": "mlffd", "path": self.students[name].path, "atoms": n, "ranks": ranks, "steps": steps,
                    "warmup_steps": 1, "workdir": str(self.work / f"mlffd-{name}-{n}-r{ranks}"), "timeout": self.config.timeout}
            self.record(case, self.student_meta(name, "lammps-mlffd", n, f"r{ranks}", ranks=ranks, **tag))

    def measure_teachers(self, n: int, tag: dict) -> None:
        """The teachers through their ASE calculators."""
        for name in self.config.teacher_names:
            case = {"method": "teacher", "model": name, "atoms": n, "workdir": str(self.work)}
            meta = {"method": "teacher", "model": name, "kind": "teacher", "weights": TEACHERS[name]["weights"], "atoms_requested": n,
                    "parallel": self.par, "ranks": None, "spec": TEACHERS[name]["spec"], **tag}
            self.record(case, meta)

    def measure_side_by_side(self, tag: dict) -> None:
        """Flatness (largest size vs 512 atoms) and plugin overhead (4,096 atoms, or the largest
        size below) of each student on the CPU, both sides alternating in one process."""
        from mlffd.lammps import plugin_environment

        config = self.config
        plugin_env = {k: v for k, v in plugin_environment().items() if k in ("LAMMPS_PLUGIN_PATH", "LD_LIBRARY_PATH", "MLFFD_MODELS_DIR")}
        big = max(config.sizes)
        plugin_n = 4096 if 4096 in config.sizes else max([n for n in config.sizes if n <= 4096] or [min(config.sizes)])
        for name in config.models:
            common_case = {"method": "side-by-side", "path": self.students[name].path, "pairs": config.side_by_side_pairs}
            if 512 in config.sizes and big > 512:
                self.record({**common_case, "compare": "scaling", "atoms": big, "reference_atoms": 512},
                            self.student_meta(name, "side-by-side-scaling", big, self.par, section="side-by-side", compare="scaling",
                                              reference_atoms=512, **tag))
            if self.lammps_students:
                self.record({**common_case, "compare": "plugin", "atoms": plugin_n, "workdir": str(self.work / f"side-{name}-{plugin_n}")},
                            self.student_meta(name, "side-by-side-plugin", plugin_n, "r1", ranks=1, section="side-by-side", compare="plugin",
                                              **tag),
                            env=plugin_env)

    def measure_batch(self, tag: dict) -> None:
        """Batched small structures against the same structures one by one."""
        config = self.config
        self.say(f"batch ({config.batch_count} x {8 * config.batch_cell ** 3}-atom cells):")
        for name in config.models:
            for mode in ("one-by-one", "batch"):
                case = {"method": mode, "mode": mode, "path": self.students[name].path, "batch_count": config.batch_count,
                        "batch_cell": config.batch_cell}
                self.record(case, self.student_meta(name, mode, config.batch_count * 8 * config.batch_cell**3, self.par, **tag))

    def measure_allocator(self) -> None:
        """glibc's malloc defaults against mlffd's settings: one interleaved default/mlffd pair
        per round, the order alternating, each side in its own process."""
        config = self.config
        self.say(f"allocator ({config.allocator_model}; MLFFD_MALLOC=default vs mlffd settings):")
        name = config.allocator_model
        for n in config.allocator_sizes:
            for method in config.allocator_methods:
                for rnd in range(config.allocator_rounds):
                    for malloc in ("default", "mlffd") if rnd % 2 == 0 else ("mlffd", "default"):
                        self.record(*self.allocator_case(name, method, n, rnd, malloc))

    def allocator_case(self, name: str, method: str, n: int, rnd: int, malloc: str) -> tuple[dict, dict, dict]:
        """The case, description and environment of one allocator measurement."""
        config = self.config
        env = {"GLIBC_TUNABLES": None, "MLFFD_MALLOC": "default" if malloc == "default" else None}
        tag = {"round": rnd} if config.allocator_rounds > 1 else {}
        if method != "lammps":
            case = {"method": method, "path": self.students[name].path, "atoms": n}
            return case, self.student_meta(name, method, n, self.par, section="allocator", malloc=malloc, **tag), env
        # LAMMPS: the mlffd side also through GLIBC_TUNABLES, which glibc applies from the
        # process's start, before LAMMPS creates the pair style (the plugin then leaves them)
        env["GLIBC_TUNABLES"] = GLIBC_TUNABLES if malloc == "mlffd" else None
        est = _estimate_lammps_us("mlffd", self.artifact_cost.get((name, n)), n, self.ranges[name])
        case = {"method": "lammps", "pair": "mlffd", "path": self.students[name].path, "atoms": n, "ranks": 1,
                "steps": _lammps_steps(est, n, config), "warmup_steps": 1, "workdir": str(self.work / f"alloc-{name}-{n}-{malloc}-{rnd}"),
                "timeout": config.timeout}
        return case, self.student_meta(name, "lammps-mlffd", n, "r1", ranks=1, section="allocator", malloc=malloc, **tag), env


def _measured(res: dict, atoms_requested: int) -> dict:
    """The measured fields of a worker's result ``res``: atoms, cost summary, throughput,
    samples, memory and the worker's extra records."""
    m: dict[str, Any] = {"atoms": res.get("atoms", supercell_reps(atoms_requested) ** 3 * 8)}
    samples = res.get("samples_us", [])
    m["us_per_atom_step"] = summarize(samples)
    med = m["us_per_atom_step"]["median"]
    m["atom_steps_per_s"] = 1e6 / med if med and med == med and med > 0 else math.nan
    m["samples_us"] = samples
    for key in ("calls_per_repeat", "steps_per_repeat", "warmup_steps", "edges", "nl_builds_per_step", "skin", "structures",
                "atoms_per_structure", "omp_threads", "lammps_version", "peak_rss_scope", "allocator", "worker_wall_s", "process_wall_s",
                "block_atoms", "device_before_mb", "device_name", "reference_samples_us", "pair_ratios"):
        if key in res:
            m[key] = res[key]
    if res.get("num_parameters") is not None:
        m["num_parameters"] = res["num_parameters"]
    m["peak_rss_mb"] = as_number(res.get("peak_rss_mb"))
    m["rss_before_mb"] = as_number(res.get("rss_before_mb"))
    m["peak_increment_mb"] = m["peak_rss_mb"] - m["rss_before_mb"]  # nan where unknown
    m["peak_device_mb"] = as_number(res.get("peak_device_mb"))  # GPU runs: peak allocated by torch
    return m


def _lammps_steps(est_us: float, n: int, config: BenchConfig) -> int:
    per_step = est_us * n * 1e-6
    return int(max(1, min(200000, round(max(config.min_time, 0.05) / max(per_step, 1e-9)))))


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


