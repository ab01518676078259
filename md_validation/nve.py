"""NVE energy conservation: thermalise with Langevin, run velocity Verlet, measure the drift."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from md_validation.md import MDEngine, MDPlan, Stage, StageResult, run_md, speed
from md_validation.units import steps_for

#: default |drift| threshold (meV/atom/ps) for pass/fail
DEFAULT_DRIFT_THRESHOLD = 1.0


def drift_metrics(time_fs: np.ndarray, etot_eV: np.ndarray, n_atoms: int, temperature: np.ndarray | None = None) -> dict[str, float]:
    """Energy-conservation metrics of an NVE series.

    - ``drift_meV_per_atom_per_ps``: slope of a least-squares line through E_tot/N vs t
    - ``fluctuation_meV_per_atom``: standard deviation of E_tot/N
    - ``detrended_fluctuation_meV_per_atom``: standard deviation around the fitted line
    - ``max_deviation_meV_per_atom``: max |E_tot(t) - E_tot(0)| / N
    - ``mean_temperature_K`` / ``std_temperature_K`` when ``temperature`` is given
    """
    t_ps = np.asarray(time_fs, dtype=float) / 1000.0
    e = np.asarray(etot_eV, dtype=float) / n_atoms * 1000.0  # meV/atom
    out: dict[str, float] = {"n_frames": float(len(e)), "duration_ps": float(t_ps[-1] - t_ps[0]) if len(t_ps) else 0.0}
    if len(e) >= 2 and np.ptp(t_ps) > 0:
        slope, intercept = np.polyfit(t_ps - t_ps[0], e, 1)
        resid = e - (slope * (t_ps - t_ps[0]) + intercept)
        out["drift_meV_per_atom_per_ps"] = float(slope)
        out["detrended_fluctuation_meV_per_atom"] = float(np.std(resid))
    else:
        out["drift_meV_per_atom_per_ps"] = float("nan")
        out["detrended_fluctuation_meV_per_atom"] = float("nan")
    out["fluctuation_meV_per_atom"] = float(np.std(e)) if len(e) else float("nan")
    out["max_deviation_meV_per_atom"] = float(np.max(np.abs(e - e[0]))) if len(e) else float("nan")
    if temperature is not None and len(temperature):
        out["mean_temperature_K"] = float(np.mean(temperature))
        out["std_temperature_K"] = float(np.std(temperature))
    return out


@dataclass(frozen=True)
class NVESettings:
    """Settings of :func:`validate_nve` (times in fs)."""

    temperature_K: float = 1000.0
    time_fs: float = 2000.0  #: NVE length
    thermalise_fs: float = 500.0  #: Langevin length before NVE
    dt_fs: float = 1.0
    interval: int = 10  #: frame every ``interval`` steps
    friction_per_fs: float = 0.01
    seed: int = 0
    threshold: float = DEFAULT_DRIFT_THRESHOLD  #: max |drift| (meV/atom/ps) to pass
    max_deviation: float | None = None  #: optional max |E(t)-E(0)|/N (meV/atom) to pass

    def __post_init__(self) -> None:
        # a NaN threshold would pass every run (no comparison with NaN is true): check them all here
        numbers = {"temperature_K": (self.temperature_K, 0.0, True), "time_fs": (self.time_fs, 0.0, False),
                   "thermalise_fs": (self.thermalise_fs, 0.0, True), "dt_fs": (self.dt_fs, 0.0, False),
                   "friction_per_fs": (self.friction_per_fs, 0.0, True), "threshold": (self.threshold, 0.0, True)}
        if self.max_deviation is not None:
            numbers["max_deviation"] = (self.max_deviation, 0.0, True)
        for name, (value, low, closed) in numbers.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (not closed and value == low):
                raise ValueError(f"{name} = {value!r}: expected a finite number {'>=' if closed else '>'} {low:g}")
        for name in ("interval", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "interval" else 0):
                raise ValueError(f"{name} = {value!r}: expected an integer >= {1 if name == 'interval' else 0}")
        steps = steps_for(self.time_fs, self.dt_fs)
        if steps < self.interval:
            raise ValueError(f"time_fs = {self.time_fs:g} gives {steps} NVE step(s) at dt_fs = {self.dt_fs:g}; a drift "
                             f"needs at least two frames, i.e. interval = {self.interval} steps ({self.interval * self.dt_fs:g} fs)")

    def plan(self) -> MDPlan:
        stages = []
        if self.thermalise_fs > 0:
            stages.append(Stage("thermalise", "nvt", steps_for(self.thermalise_fs, self.dt_fs), self.interval))
        stages.append(Stage("nve", "nve", steps_for(self.time_fs, self.dt_fs), self.interval))
        return MDPlan(self.temperature_K, self.dt_fs, self.friction_per_fs, self.seed, tuple(stages))


@dataclass
class NVEResult:
    metrics: dict[str, Any]
    passed: bool
    stages: list[StageResult]

    @property
    def nve(self) -> StageResult | None:
        return next((s for s in self.stages if s.ensemble == "nve"), None)


def nve_verdict(metrics: dict[str, Any], settings: NVESettings, completed: bool) -> tuple[bool, list[str]]:
    """Pass/fail and the reasons for a failure."""
    reasons = []
    if not completed:
        reasons.append("the NVE run did not finish (see 'error')")
    drift = metrics.get("drift_meV_per_atom_per_ps", float("nan"))
    if not np.isfinite(drift) or abs(drift) > settings.threshold:
        reasons.append(f"|drift| {abs(drift):.3g} > threshold {settings.threshold:g} meV/atom/ps")
    if settings.max_deviation is not None:
        dev = metrics.get("max_deviation_meV_per_atom", float("nan"))
        if not np.isfinite(dev) or dev > settings.max_deviation:
            reasons.append(f"max deviation {dev:.3g} > {settings.max_deviation:g} meV/atom")
    return not reasons, reasons


def validate_nve(
    atoms: Atoms,
    engine: MDEngine,
    calc_id: str,
    settings: NVESettings = NVESettings(),
    out_dir: str | Path = "nve-validation",
    label: str = "student",
    progress: bool = True,
) -> NVEResult:
    """Thermalise, run NVE, and return drift metrics with a pass/fail verdict (no files but the MD cache)."""
    stages = run_md(atoms, settings.plan(), engine, Path(out_dir) / "md", label, calc_id, progress=progress)
    nve = next((s for s in stages if s.ensemble == "nve"), None)
    metrics: dict[str, Any] = {"settings": asdict(settings), "n_atoms": len(atoms), "engine": engine.name}
    if nve is not None and len(nve.series["time_fs"]) >= 2:
        s = nve.series
        metrics.update(drift_metrics(s["time_fs"], s["etot"], len(atoms), s["temperature"]))
    completed = bool(stages) and all(s.completed for s in stages) and nve is not None
    errors = [f"{s.name}: {s.error}" for s in stages if s.error]
    metrics["error"] = "; ".join(errors) if errors else None
    metrics["speed"] = speed(stages)
    passed, reasons = nve_verdict(metrics, settings, completed)
    metrics["passed"] = passed
    metrics["fail_reasons"] = reasons
    return NVEResult(metrics=metrics, passed=passed, stages=stages)


def write_nve_report(result: NVEResult, out_dir: str | Path, title: str = "NVE energy conservation") -> dict[str, Path]:
    """Write ``nve.json``, ``nve.html`` and ``nve_energy.png`` into ``out_dir``; return their paths."""
    from md_validation import plots, report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = [(s.name, s.series) for s in result.stages]
    fig = plots.energy_plot(series, n_atoms=result.stages[0].n_atoms if result.stages else 1)
    figures = {"nve_energy": report.figure_png(fig)}
    paths = report.write_figures(figures, out)
    verdict = "PASS" if result.passed else "FAIL: " + "; ".join(result.metrics["fail_reasons"])
    sections = [report.Section("Verdict", text=verdict),
                report.Section("Energy conservation", metrics={k: v for k, v in result.metrics.items() if not isinstance(v, dict)},
                               figures=figures),
                report.Section("Speed", metrics=result.metrics["speed"]),
                report.Section("Settings", metrics=result.metrics["settings"])]
    paths["json"] = report.write_json(result.metrics, out / "nve.json")
    paths["html"] = report.write_html(title, sections, out / "nve.html")
    return paths
