"""``mlffd-validate trust``: may I use this student for this MD job?

Runs the intended MD with the student (Langevin NVT at the job's temperature, or Langevin NPT
at a given pressure, in ASE or LAMMPS; then optionally NVE), reads the student's own uncertainty
on every recorded frame (ensemble students, :mod:`mlffd.models.uncertainty`), spends at most
``teacher_calls`` teacher evaluations on spot checks (the most uncertain frames and as many random ones), and checks the
run's stability. The verdict is PASS only when every check that could be made passes; each
failed check is a stated reason. Without a teacher the verdict rests on uncertainty and
stability alone, and the report says so; a student without ensemble heads has no uncertainty
check, and the report says that too.

Checks (defaults in :class:`TrustSettings`):

- stability: no atoms closer than 0.6 × the start's nearest-neighbour distance, none farther
  than 1.6 × from its nearest neighbour, the RDF of no window drifting from the first window's
  (:func:`md_validation.structure_metrics.stability`), and no jump of the potential energy
  between consecutive frames above ``energy_jump_eV_per_atom``; a run that blew up fails;
- uncertainty: the fraction of frames whose largest per-atom force uncertainty exceeds the
  threshold (default ``threshold_factor`` × the student's calibrated validation force RMSE) is
  at most ``max_fraction_over``;
- novelty (students with a novelty reference, :mod:`mlffd.models.novelty`): the fraction of
  frames whose novelty exceeds ``novelty_threshold`` is at most ``max_fraction_over``: it flags
  structures unlike the training data even where the ensemble's heads agree;
- spot checks: the force RMSE against the teacher over the checked frames is at most
  ``force_tolerance`` (default ``tolerance_factor`` × the student's held-out force RMSE);
- NVE drift (when ``nve_fs`` > 0): below ``drift_threshold`` meV/atom/ps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


@dataclass(frozen=True)
class TrustSettings:
    temperature_K: float
    time_fs: float = 2000.0
    dt_fs: float = 1.0
    interval: int = 10  #: record (and judge) a frame every this many steps
    friction_per_fs: float = 0.01
    seed: int = 0
    nve_fs: float = 0.0
    teacher_calls: int = 20  #: at most this many teacher evaluations (half most uncertain, half random)
    threshold: float | None = None  #: eV/Å; None: threshold_factor × the calibrated force RMSE
    threshold_factor: float = 4.0
    max_fraction_over: float = 0.05
    novelty_threshold: float = 2.0  #: 1 is exceeded by 1 % of the training structures
    force_tolerance: float | None = None  #: eV/Å; None: tolerance_factor × the held-out force RMSE
    tolerance_factor: float = 2.0
    energy_jump_eV_per_atom: float = 0.5
    drift_threshold: float = 1.0  #: meV/atom/ps
    pressure_GPa: float | None = None  #: run NPT at this pressure instead of NVT

    def __post_init__(self) -> None:
        if self.pressure_GPa is not None and not math.isfinite(self.pressure_GPa):
            raise ValueError(f"TrustSettings.pressure_GPa must be a finite number, got {self.pressure_GPa!r}")
        for name in ("temperature_K", "time_fs", "dt_fs", "friction_per_fs", "nve_fs", "threshold_factor",
                     "max_fraction_over", "tolerance_factor", "energy_jump_eV_per_atom", "drift_threshold",
                     "novelty_threshold"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.time_fs <= 0 or self.dt_fs <= 0 or self.interval < 1:
            raise ValueError("the run needs a positive time, timestep and recording interval")
        if self.teacher_calls < 0:
            raise ValueError(f"teacher_calls must be >= 0, got {self.teacher_calls}")
        for name in ("threshold", "force_tolerance"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of eV/Å, got {value!r}")


@dataclass
class TrustResult:
    passed: bool
    reasons: list[str]
    notes: list[str]
    metrics: dict[str, Any]
    series: dict[str, np.ndarray] = field(default_factory=dict)
    spot: dict[str, np.ndarray] = field(default_factory=dict)
    worst_frames: list[Atoms] = field(default_factory=list)


def _model_record(model: str | Path) -> dict[str, Any]:
    from mlffd.artifact import read_metadata
    from mlffd.registry import resolve

    return read_metadata(resolve(model))


def choose_spot_checks(uncertainty: np.ndarray | None, n_frames: int, calls: int, seed: int) -> list[int]:
    """At most ``calls`` frame indices: the most uncertain half (all random without uncertainty),
    the rest drawn at random from the others, in time order."""
    calls = min(calls, n_frames)
    if calls <= 0:
        return []
    chosen: list[int] = []
    if uncertainty is not None:
        chosen = [int(k) for k in np.argsort(-uncertainty, kind="stable")[: (calls + 1) // 2]]
    rest = [k for k in range(n_frames) if k not in set(chosen)]
    rng = np.random.default_rng(seed)
    chosen += [int(k) for k in rng.choice(rest, size=min(calls - len(chosen), len(rest)), replace=False)]
    return sorted(chosen)


def run_trust(
    model: str | Path,
    start: Atoms,
    settings: TrustSettings,
    out_dir: str | Path,
    teacher: Calculator | None = None,
    engine: str = "ase",
    progress: bool = True,
) -> TrustResult:
    """The trust verdict of ``model`` for MD from ``start`` (see the module docstring)."""
    from mlffd.calculator import DistilledCalculator

    from md_validation.md import MDPlan, Stage, get_engine, run_md

    meta = _model_record(model)
    calibration = meta.get("uncertainty")
    notes: list[str] = []
    reasons: list[str] = []
    metrics: dict[str, Any] = {"settings": asdict(settings), "model": str(model), "engine": engine,
                               "structure": {"formula": start.get_chemical_formula(), "n_atoms": len(start)}}

    npt = settings.pressure_GPa is not None
    steps = int(round(settings.time_fs / settings.dt_fs))
    stages = [Stage("nvt", "npt" if npt else "nvt", steps, settings.interval)]
    if settings.nve_fs > 0:
        stages.append(Stage("nve", "nve", int(round(settings.nve_fs / settings.dt_fs)), settings.interval))
    plan = MDPlan(temperature_K=settings.temperature_K, dt_fs=settings.dt_fs, friction_per_fs=settings.friction_per_fs,
                  seed=settings.seed, stages=tuple(stages), pressure_GPa=settings.pressure_GPa or 0.0)
    student = DistilledCalculator(model)
    md_engine = get_engine(engine, calc=student, model=model)
    from md_validation.inputs import calculator_id

    results = run_md(start, plan, md_engine, Path(out_dir) / "md", "student", calculator_id(student, str(model)),
                     progress=progress)
    nvt = results[0]
    frames = nvt.frames()
    time_fs = nvt.series["time_fs"]
    metrics["frames"] = len(frames)
    metrics["steps_done"] = int(nvt.steps_done)
    if nvt.error:
        reasons.append(f"the MD left the physical regime: {nvt.error}")

    epot = _stability_checks(frames, time_fs, len(start), steps, nvt.error, settings, metrics, reasons)
    if npt and frames:
        volume = np.array([f.get_volume() / len(f) for f in frames])
        metrics["npt"] = {"pressure_GPa": settings.pressure_GPa, "mean_pressure_GPa": float(np.nanmean(nvt.series["pressure_GPa"])),
                          "start_volume_A3_per_atom": start.get_volume() / len(start),
                          "mean_volume_A3_per_atom": float(volume[len(volume) // 2:].mean())}
    series: dict[str, np.ndarray] = {"time_ps": (time_fs - time_fs[0]) / 1000.0 if len(time_fs) else np.zeros(0),
                                     "epot_eV_per_atom": epot}
    max_unc = _uncertainty_checks(model, frames, calibration, settings, series, metrics, reasons, notes)
    spot = _spot_checks(frames, teacher, max_unc, meta, settings, metrics, reasons, notes)
    _nve_checks(results, settings, metrics, reasons, notes)

    order = np.argsort(-max_unc)[:3] if max_unc is not None else np.array([len(frames) - 1])
    worst = [frames[int(k)] for k in order if len(frames)]
    metrics["verdict"] = "PASS" if not reasons else "FAIL"
    metrics["reasons"] = reasons
    metrics["notes"] = notes
    return TrustResult(not reasons, reasons, notes, metrics, series, spot, worst)


def _stability_checks(frames: list[Atoms], time_fs: np.ndarray, n_atoms: int, steps: int, md_error: str | None,
                      settings: TrustSettings, metrics: dict[str, Any], reasons: list[str]) -> np.ndarray:
    """Stability (distances, RDF drift) and energy jumps of the MD's frames; returns the
    potential energy per atom of each frame."""
    from md_validation.structure_metrics import stability

    stab = stability(frames, time_fs, planned_fs=steps * settings.dt_fs, rdf_from_fs=min(500.0, 0.25 * settings.time_fs))
    metrics["stability"] = {k: stab[k] for k in ("stable", "stable_time_ps", "reason", "reference_nn_A")}
    if not stab["stable"] and not md_error:
        reasons.append(f"unstable after {stab['stable_time_ps']:.3g} ps: {stab['reason']}")
    epot = np.array([f.get_potential_energy() for f in frames]) / n_atoms
    jumps = np.abs(np.diff(epot)) if len(epot) > 1 else np.zeros(0)
    metrics["largest_energy_jump_eV_per_atom"] = float(jumps.max()) if len(jumps) else 0.0
    if len(jumps) and jumps.max() > settings.energy_jump_eV_per_atom:
        k = int(np.argmax(jumps))
        reasons.append(f"the potential energy jumps by {jumps[k]:.3g} eV/atom between {time_fs[k]:.0f} and "
                       f"{time_fs[k + 1]:.0f} fs (limit {settings.energy_jump_eV_per_atom:g})")
    return epot


def _uncertainty_checks(model: str | Path, frames: list[Atoms], calibration: dict[str, Any] | None, settings: TrustSettings,
                        series: dict[str, np.ndarray], metrics: dict[str, Any], reasons: list[str], notes: list[str]) -> np.ndarray | None:
    """The student's force uncertainty on every frame against the threshold (students with
    ensemble heads); returns each frame's largest uncertainty, None without heads."""
    from mlffd.calculator import DistilledCalculator

    max_unc = None
    if calibration:
        monitor = DistilledCalculator(model, uncertainty=True)
        per_frame = [monitor.calculate_batch([f])[0] for f in frames]
        max_unc = np.array([r["forces_uncertainty"].max() for r in per_frame])
        if per_frame and all("novelty" in r for r in per_frame):
            _novelty_check(np.array([r["novelty"] for r in per_frame]), settings, series, metrics, reasons)
        series["max_force_uncertainty"] = max_unc
        series["mean_force_uncertainty"] = np.array([r["forces_uncertainty"].mean() for r in per_frame])
        threshold = settings.threshold or settings.threshold_factor * float(calibration["force_rmse"])
        over = float(np.mean(max_unc > threshold)) if len(max_unc) else 0.0
        metrics["uncertainty"] = {"threshold": threshold, "fraction_over": over, "max": float(max_unc.max()),
                                  "calibration": calibration}
        if over > settings.max_fraction_over:
            first = float(series["time_ps"][int(np.argmax(max_unc > threshold))])
            reasons.append(f"force uncertainty above {threshold:.3g} eV/Å in {100 * over:.0f} % of the frames "
                           f"(allowed {100 * settings.max_fraction_over:g} %; first at {first:.3g} ps, largest "
                           f"{max_unc.max():.3g} eV/Å)")
    else:
        notes.append("the student has no ensemble heads: no uncertainty check (train with model_overrides ensemble >= 2)")

    return max_unc


def _novelty_check(novelty: np.ndarray, settings: TrustSettings, series: dict[str, np.ndarray], metrics: dict[str, Any],
                   reasons: list[str]) -> None:
    """Each frame's novelty against ``settings.novelty_threshold``."""
    series["novelty"] = novelty
    threshold = settings.novelty_threshold
    over = float(np.mean(novelty > threshold))
    metrics["novelty"] = {"threshold": threshold, "fraction_over": over, "max": float(novelty.max())}
    if over > settings.max_fraction_over:
        first = float(series["time_ps"][int(np.argmax(novelty > threshold))])
        reasons.append(f"novelty above {threshold:g} in {100 * over:.0f} % of the frames (allowed "
                       f"{100 * settings.max_fraction_over:g} %; first at {first:.3g} ps, largest {novelty.max():.3g}): "
                       "the structures are unlike the student's training data")


def _spot_checks(frames: list[Atoms], teacher: Calculator | None, max_unc: np.ndarray | None, meta: dict[str, Any],
                 settings: TrustSettings, metrics: dict[str, Any], reasons: list[str], notes: list[str]) -> dict[str, np.ndarray]:
    """Teacher forces on a few frames (the most uncertain first) against the student's."""
    spot: dict[str, np.ndarray] = {}
    if teacher is None:
        notes.append("no teacher: the verdict rests on uncertainty and stability alone")
    elif frames:
        picks = choose_spot_checks(max_unc, len(frames), settings.teacher_calls, settings.seed)
        ref_f, pred_f, rmse = [], [], []
        for k in picks:
            a = frames[k].copy()
            a.calc = teacher
            f_ref = a.get_forces()
            f_pred = frames[k].get_forces()
            ref_f.append(f_ref)
            pred_f.append(f_pred)
            rmse.append(float(np.sqrt(np.mean((f_pred - f_ref) ** 2))))
        spot = {"frames": np.array(picks), "force_rmse": np.array(rmse), "teacher": np.concatenate(ref_f),
                "student": np.concatenate(pred_f)}
        overall = float(np.sqrt(np.mean((spot["student"] - spot["teacher"]) ** 2)))
        held_out = float(meta.get("metrics", {}).get("force_rmse") or 0.1)
        tolerance = settings.force_tolerance or settings.tolerance_factor * held_out
        metrics["spot_checks"] = {"teacher_calls": len(picks), "force_rmse": overall, "tolerance": tolerance,
                                  "worst_frame_force_rmse": float(max(rmse)), "frames": picks}
        if max_unc is not None and len(picks) >= 3:
            from scipy.stats import spearmanr

            metrics["spot_checks"]["spearman_uncertainty_error"] = float(
                spearmanr(max_unc[picks], rmse).statistic) if np.ptp(rmse) > 0 else float("nan")
        if overall > tolerance:
            reasons.append(f"force RMSE against the teacher {overall:.3g} eV/Å on {len(picks)} spot-checked frames "
                           f"exceeds {tolerance:.3g} eV/Å ({settings.tolerance_factor:g} × the held-out "
                           f"{held_out:.3g} eV/Å)")

    return spot


def _nve_checks(results: list, settings: TrustSettings, metrics: dict[str, Any], reasons: list[str], notes: list[str]) -> None:
    """Energy drift of the NVE stage, when there was one."""
    from md_validation.nve import drift_metrics

    if len(results) > 1:
        nve = results[1]
        drift = drift_metrics(nve.series["time_fs"], nve.series["etot"], nve.n_atoms, nve.series["temperature"])
        metrics["nve"] = drift
        if nve.error:
            reasons.append(f"the NVE run left the physical regime: {nve.error}")
        elif abs(drift["drift_meV_per_atom_per_ps"]) > settings.drift_threshold:
            reasons.append(f"NVE drift {drift['drift_meV_per_atom_per_ps']:.3g} meV/atom/ps exceeds "
                           f"{settings.drift_threshold:g}")
    elif settings.nve_fs <= 0:
        notes.append("no NVE run (--nve-time 0): energy conservation not checked")



def write_trust_report(result: TrustResult, out_dir: str | Path) -> dict[str, Path]:
    """``trust.html`` (uncertainty over time, spot-check parity, worst frames), ``trust.json``,
    ``summary.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.visualize.plot import plot_atoms

    from md_validation import report

    out = Path(out_dir)
    figures: dict[str, bytes] = {}
    s = result.series

    def over_time(curves: dict[str, np.ndarray], threshold: float, ylabel: str, title: str) -> bytes:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for label, values in curves.items():
            ax.plot(s["time_ps"], values, label=label)
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
        ax.set(xlabel="time (ps)", ylabel=ylabel, title=title)
        ax.legend()
        png = report.figure_png(fig)
        plt.close(fig)
        return png

    if "max_force_uncertainty" in s and len(s["time_ps"]):
        figures["uncertainty"] = over_time(
            {"largest per-atom": s["max_force_uncertainty"], "mean per atom": s["mean_force_uncertainty"]},
            result.metrics["uncertainty"]["threshold"], "force uncertainty (eV/Å)", "uncertainty during the run")
    if "novelty" in s and len(s["time_ps"]):
        figures["novelty"] = over_time({"novelty (largest per-atom)": s["novelty"]}, result.metrics["novelty"]["threshold"],
                                       "novelty", "novelty during the run (1: 1 % of training structures above)")
    if result.spot:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        t, p = result.spot["teacher"].ravel(), result.spot["student"].ravel()
        lim = float(max(np.abs(t).max(), np.abs(p).max(), 1e-3))
        ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6)
        ax.scatter(t, p, s=4, alpha=0.5)
        ax.set(xlabel="teacher force (eV/Å)", ylabel="student force (eV/Å)", title="spot checks")
        figures["spot_checks"] = report.figure_png(fig)
        plt.close(fig)
    if result.worst_frames:
        fig, axes = plt.subplots(1, len(result.worst_frames), figsize=(3.2 * len(result.worst_frames), 3.2))
        for ax, atoms in zip(np.atleast_1d(axes), result.worst_frames):
            plot_atoms(atoms, ax, radii=0.4, rotation="10x,20y,0z")
            ax.set_axis_off()
            ax.set_title(f"t = {atoms.info.get('time_fs', float('nan')) / 1000:.3g} ps", fontsize=9)
        figures["worst_frames"] = report.figure_png(fig)
        plt.close(fig)
    files = report.write_figures(figures, out)
    files["json"] = report.write_json({**result.metrics, "series": s}, out / "trust.json")
    sections = [report.Section(f"Verdict: {result.metrics['verdict']}",
                               metrics={"reasons": "; ".join(result.reasons) or "none",
                                        "notes": "; ".join(result.notes) or "none"}),
                report.Section("Run and checks", metrics={k: v for k, v in result.metrics.items()
                                                          if k not in ("reasons", "notes", "verdict")}, figures=figures)]
    files["html"] = report.write_html("mlffd-validate trust", sections, out / "trust.html")
    lines = [f"# mlffd-validate trust: **{result.metrics['verdict']}**\n", ""]
    lines += [f"- FAIL: {r}" for r in result.reasons] or ["- every check passed"]
    lines += [f"- note: {n}" for n in result.notes]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    files["markdown"] = out / "summary.md"
    return files


__all__ = ["TrustSettings", "TrustResult", "choose_spot_checks", "run_trust", "write_trust_report"]
