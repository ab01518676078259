"""Teacher vs student MD: same start, thermostat and seed; compare structure, dynamics, stability, speed.

Each model runs Langevin NVT for ``time_fs`` (the first ``equilibration_fs`` are left out of the
distributions) and then NVE for ``nve_fs`` from the last NVT frame. Trajectories are cached by
:func:`md_validation.md.run_md`, so re-running with the same settings only redoes the analysis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from md_validation import plots, report
from md_validation.md import MDEngine, MDPlan, Stage, StageResult, run_md, speed
from md_validation.nve import drift_metrics
from md_validation.rdf import RDFResult, compare_rdfs, first_minimum, partial_rdfs, rdf_summary
from md_validation.structure_metrics import (
    StabilityCriteria,
    angle_distribution,
    diffusion_coefficient,
    distribution_error,
    atom_nearest_neighbors,
    mean_square_displacement,
    stability,
)
from md_validation.units import steps_for


#: teacher diffusion coefficients below this (Å²/ps), or a teacher MSD below (half a bond)², mean
#: a solid: no D ratio is reported
D_RATIO_MIN = 1e-3


@dataclass(frozen=True)
class CompareSettings:
    """Settings of :func:`compare` (times in fs, lengths in Å)."""

    temperature_K: float = 1000.0
    time_fs: float = 2000.0  #: Langevin NVT length
    equilibration_fs: float = 200.0  #: start of the NVT run left out of distributions
    nve_fs: float = 1000.0  #: NVE length after the NVT run (0: none)
    dt_fs: float = 1.0
    interval: int = 10
    friction_per_fs: float = 0.01
    seed: int = 0
    r_max: float = 6.0
    nbins: int = 120
    angle_cutoff: float | None = None  #: bond cutoff for angles; default: first minimum of the teacher's g(r)
    stability: StabilityCriteria = field(default_factory=StabilityCriteria)

    def plan(self) -> MDPlan:
        stages = [Stage("nvt", "nvt", steps_for(self.time_fs, self.dt_fs), self.interval)]
        if self.nve_fs > 0:
            stages.append(Stage("nve", "nve", steps_for(self.nve_fs, self.dt_fs), self.interval))
        return MDPlan(self.temperature_K, self.dt_fs, self.friction_per_fs, self.seed, tuple(stages))


@dataclass
class RunAnalysis:
    """Everything measured on one model's run."""

    name: str
    stages: list[StageResult]
    metrics: dict[str, Any]
    rdf: RDFResult | None
    total_rdf: RDFResult | None
    angles: tuple[np.ndarray, np.ndarray] | None
    msd: tuple[np.ndarray, np.ndarray] | None


def _stage(stages: Sequence[StageResult], ensemble: str) -> StageResult | None:
    return next((s for s in stages if s.ensemble == ensemble), None)


def analyse_run(
    name: str,
    stages: list[StageResult],
    settings: CompareSettings,
    reference_g: np.ndarray | None = None,
    reference_nn: np.ndarray | None = None,
    angle_cutoff: float | None = None,
    progress: bool = False,
) -> RunAnalysis:
    """RDFs, angles, MSD/D, T and P, NVE drift, stability and speed of one run.

    Stability is judged against ``reference_g`` (total g(r)) and ``reference_nn`` (each atom's
    mean nearest-neighbour distance, Å), the teacher's (both runs start from the same atoms);
    without them, against the run's own production RDF and nearest neighbours.
    """
    metrics: dict[str, Any] = {"trajectories": {s.name: str(s.path) for s in stages},
                               "cached": all(s.cached for s in stages),
                               "completed": all(s.completed for s in stages) and len(stages) == len(settings.plan().stages),
                               "error": "; ".join(f"{s.name}: {s.error}" for s in stages if s.error) or None,
                               "speed": speed(stages)}
    nvt = _stage(stages, "nvt")
    rdf = total = angles = msd = None
    if nvt is not None and len(nvt.series["time_fs"]):
        frames_all = nvt.frames()
        t_all = nvt.series["time_fs"]
        keep = t_all - t_all[0] >= settings.equilibration_fs - 1e-9
        frames = [f for f, k in zip(frames_all, keep) if k] or frames_all
        t = t_all[keep] if keep.any() else t_all
        rdf = partial_rdfs(frames, settings.r_max, settings.nbins, progress=progress)
        total = rdf if len(rdf.g) == 1 else partial_rdfs(frames, settings.r_max, settings.nbins, pairs=[("*", "*")])
        metrics["rdf"] = rdf_summary(rdf)
        g_tot = next(iter(total.g.values()))
        cutoff = angle_cutoff if angle_cutoff is not None else first_minimum(total.r, g_tot)
        if np.isfinite(cutoff):
            angles = angle_distribution(frames, cutoff)
            metrics["angle_cutoff_A"] = float(cutoff)
            metrics["mean_bond_angle_deg"] = float(np.sum(angles[0] * angles[1]) * (angles[0][1] - angles[0][0]))
        if len(frames) >= 3:
            m = mean_square_displacement(frames)
            tp = (t - t[0]) / 1000.0
            msd = (tp, m)
            metrics["msd_final_A2"] = float(m[-1])
            metrics.update(diffusion_coefficient(tp, m))
            elements = sorted(set(frames[0].get_chemical_symbols()))
            if len(elements) > 1:  # each species diffuses at its own rate
                for el in elements:
                    d = diffusion_coefficient(tp, mean_square_displacement(frames, symbol=el))
                    metrics[f"D_A2_per_ps_{el}"] = d["D_A2_per_ps"]
        sel = nvt.series
        for key, label in (("temperature", "temperature_K"), ("pressure_GPa", "pressure_GPa")):
            v = sel[key][keep] if keep.any() else sel[key]
            metrics[f"{label}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            metrics[f"{label}_std"] = float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
        planned = nvt.steps_planned * settings.dt_fs
        if reference_g is None:  # judged against its own production RDF (the teacher)
            reference_g = g_tot
        if reference_nn is None:
            reference_nn = atom_nearest_neighbors(frames)
        metrics["stability"] = stability(frames_all, t_all, settings.stability, reference_g=reference_g,
                                         reference_nn=reference_nn, planned_fs=planned,
                                         rdf_from_fs=settings.equilibration_fs, progress=progress)
    nve = _stage(stages, "nve")
    if nve is not None and len(nve.series["time_fs"]) >= 2:
        metrics["nve"] = drift_metrics(nve.series["time_fs"], nve.series["etot"], nve.n_atoms, nve.series["temperature"])
    return RunAnalysis(name, stages, metrics, rdf, total, angles, msd)


def diffusion_comparison(teacher: dict[str, Any], student: dict[str, Any], bond: float | None) -> dict[str, Any]:
    """``teacher_diffusive`` and, for a diffusive teacher run, the student/teacher D ratios (all
    atoms and per element) from the two runs' metrics.

    A D ratio means something for a liquid only: the teacher's atoms must have moved more than
    half a ``bond`` (a hot solid's MSD plateaus well below that and its fitted D is noise)."""
    diffusive = (abs(teacher.get("D_A2_per_ps", 0.0)) > D_RATIO_MIN
                 and (bond is None or teacher.get("msd_final_A2", 0.0) > (0.5 * bond) ** 2))
    out: dict[str, Any] = {"teacher_diffusive": bool(diffusive)}
    if diffusive and student.get("D_A2_per_ps") is not None:
        out["D_ratio"] = float(student["D_A2_per_ps"] / teacher["D_A2_per_ps"])
        for key in [k for k in teacher if k.startswith("D_A2_per_ps_")]:
            if abs(teacher[key]) > D_RATIO_MIN and key in student:
                out[f"D_ratio_{key.removeprefix('D_A2_per_ps_')}"] = float(student[key] / teacher[key])
    return out


def compare(
    atoms: Atoms,
    teacher: MDEngine,
    student: MDEngine,
    teacher_id: str,
    student_id: str,
    settings: CompareSettings = CompareSettings(),
    out_dir: str | Path = "compare-validation",
    labels: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or reuse) both MDs, analyse them, write ``report.html``, ``metrics.json``, ``summary.md``.

    Returns the metrics dictionary (as written to ``metrics.json``) with an extra key ``files``.
    """
    out = Path(out_dir)
    plan = settings.plan()
    runs = {}
    for name, engine, cid in (("teacher", teacher, teacher_id), ("student", student, student_id)):
        runs[name] = run_md(atoms, plan, engine, out / "md", name, cid, progress=progress)
    t_an = analyse_run("teacher", runs["teacher"], settings, angle_cutoff=settings.angle_cutoff, progress=progress)
    ref_g = next(iter(t_an.total_rdf.g.values())) if t_an.total_rdf is not None else None
    per_atom = t_an.metrics.get("stability", {}).get("reference_nn_per_atom_A")
    ref_nn = np.array([np.inf if x is None else x for x in per_atom]) if per_atom else None
    cutoff = settings.angle_cutoff if settings.angle_cutoff is not None else t_an.metrics.get("angle_cutoff_A")
    s_an = analyse_run("student", runs["student"], settings, reference_g=ref_g, reference_nn=ref_nn, angle_cutoff=cutoff,
                       progress=progress)
    analyses = {"teacher": t_an, "student": s_an}

    comparison: dict[str, Any] = {}
    if t_an.rdf is not None and s_an.rdf is not None:
        comparison["rdf_error"] = compare_rdfs(t_an.rdf, s_an.rdf)
        comparison["rdf_error_mean"] = float(np.mean([v["mean"] for v in comparison["rdf_error"].values()]))
    if t_an.angles is not None and s_an.angles is not None:
        comparison["angle_distribution_error"] = distribution_error(t_an.angles[1], s_an.angles[1], t_an.angles[0])
    tm, sm = t_an.metrics, s_an.metrics
    for key in ("D_A2_per_ps", "temperature_K_mean", "pressure_GPa_mean"):
        if key in tm and key in sm:
            comparison[f"{key}_difference"] = float(sm[key] - tm[key])
    # the mean bond of an atom: the atoms' reference nearest-neighbour distances, averaged
    bond = float(np.mean(ref_nn[np.isfinite(ref_nn)])) if ref_nn is not None and np.isfinite(ref_nn).any() else None
    comparison.update(diffusion_comparison(tm, sm, bond))
    ts, ss = tm["speed"]["s_per_step"], sm["speed"]["s_per_step"]
    comparison["speedup"] = float(ts / ss) if ss and np.isfinite(ss) and ss > 0 else float("nan")
    metrics: dict[str, Any] = {
        "settings": asdict(settings),
        "structure": {"formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)},
        "models": {"teacher": {"id": teacher_id, "label": (labels or {}).get("teacher", teacher_id), "engine": teacher.name},
                   "student": {"id": student_id, "label": (labels or {}).get("student", student_id), "engine": student.name}},
        "runs": {name: an.metrics for name, an in analyses.items()},
        "comparison": comparison,
    }
    figures = _figures(analyses, comparison, settings)
    files = write_compare_report(metrics, figures, out)
    metrics["files"] = {k: str(v) for k, v in files.items()}
    return metrics


def _figures(analyses: dict[str, RunAnalysis], comparison: dict[str, Any], settings: CompareSettings) -> dict[str, bytes]:
    figs: dict[str, bytes] = {}
    rdfs = {n: a.rdf for n, a in analyses.items() if a.rdf is not None}
    if rdfs:
        figs["rdf"] = report.figure_png(plots.rdf_plot(rdfs, comparison.get("rdf_error")))
    angles = {n: a.angles for n, a in analyses.items() if a.angles is not None}
    if angles:
        figs["bond_angles"] = report.figure_png(plots.distribution_plot(angles, "bond angle (°)", "bond-angle distribution"))
    msd = {n: a.msd for n, a in analyses.items() if a.msd is not None}
    if msd:
        figs["msd"] = report.figure_png(plots.distribution_plot(msd, "lag time (ps)", "mean-square displacement", "MSD (Å²)"))
    thermo = {}
    for n, a in analyses.items():
        nvt = _stage(a.stages, "nvt")
        if nvt is not None:
            t = nvt.series["time_fs"]
            keep = t - t[0] >= settings.equilibration_fs - 1e-9
            thermo[n] = {k: v[keep] for k, v in nvt.series.items()}
    if thermo:
        figs["thermo"] = report.figure_png(plots.histograms(thermo, {"temperature": "temperature (K)", "pressure_GPa": "pressure (GPa)"}))
    nve = {}
    for n, a in analyses.items():
        st = _stage(a.stages, "nve")
        if st is not None and len(st.series["time_fs"]):
            t = st.series["time_fs"]
            nve[n] = ((t - t[0]) / 1000.0, (st.series["etot"] - st.series["etot"][0]) / st.n_atoms * 1000.0)
    if nve:
        figs["nve_energy"] = report.figure_png(plots.series_plot(nve, "time in NVE (ps)", "E_tot(t) - E_tot(0) (meV/atom)", "NVE energy conservation"))
    stab = {n: (a.metrics["stability"]["window_time_ps"], a.metrics["stability"]["window_rdf_error"])
            for n, a in analyses.items() if "stability" in a.metrics}
    if stab:
        figs["stability_rdf"] = report.figure_png(plots.series_plot(
            stab, "window start (ps)", "∫|g - g_teacher| dr (Å)", "stability: RDF error over sliding windows",
            hline=settings.stability.rdf_threshold))
        dist = {}
        for n, a in analyses.items():
            st = _stage(a.stages, "nvt")
            if st is not None and "stability" in a.metrics:
                dist[n] = (st.series["time_fs"][: len(a.metrics["stability"]["min_distance_A"])] / 1000.0,
                           a.metrics["stability"]["min_distance_A"])
        ref_nn = analyses["teacher"].metrics.get("stability", {}).get("reference_nn_A")
        known = [v for v in (ref_nn or {}).values() if v is not None]
        floor = settings.stability.min_distance_factor * min(known) if known else None
        figs["stability_distance"] = report.figure_png(plots.series_plot(
            dist, "time (ps)", "shortest interatomic distance (Å)", "stability: bond breakdown", hline=floor))
    return figs


def _row(metrics: dict[str, Any], path: str) -> Any:
    cur: Any = metrics
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return float("nan")
        cur = cur[part]
    return cur


#: (label, path inside a run's metrics) rows of the summary table
SUMMARY_ROWS = [
    ("completed", "completed"),
    ("stable", "stability.stable"),
    ("stable time (ps)", "stability.stable_time_ps"),
    ("T mean (K)", "temperature_K_mean"),
    ("P mean (GPa)", "pressure_GPa_mean"),
    ("D (Å²/ps)", "D_A2_per_ps"),
    ("mean bond angle (°)", "mean_bond_angle_deg"),
    ("NVE drift (meV/atom/ps)", "nve.drift_meV_per_atom_per_ps"),
    ("NVE fluctuation (meV/atom)", "nve.fluctuation_meV_per_atom"),
    ("speed (s/step)", "speed.s_per_step"),
    ("speed (µs/atom/step)", "speed.us_per_atom_step"),
]


def markdown_summary(metrics: dict[str, Any]) -> str:
    """A short Markdown summary: one table teacher vs student and the comparison numbers."""
    runs = metrics["runs"]
    m = metrics["models"]
    lines = [f"# Teacher vs student MD: {metrics['structure']['formula']}", "",
             f"teacher: `{m['teacher']['label']}` ({m['teacher']['engine']}); student: `{m['student']['label']}` ({m['student']['engine']}); "
             f"T = {metrics['settings']['temperature_K']:g} K, dt = {metrics['settings']['dt_fs']:g} fs", ""]
    rows = [(label, _row(runs["teacher"], path), _row(runs["student"], path)) for label, path in SUMMARY_ROWS]
    lines.append(report.markdown_table(rows, ("metric", "teacher", "student")))
    lines.append("")
    comp = metrics["comparison"]
    crow = [(k, v) for k, v in comp.items() if not isinstance(v, dict)]
    for pair, err in comp.get("rdf_error", {}).items():
        crow.append((f"RDF error {pair} (mean |Δg|)", err["mean"]))
    lines.append(report.markdown_table(crow, ("comparison", "value")))
    for name in ("teacher", "student"):
        if runs[name].get("error"):
            lines.append(f"\n**{name} run stopped**: {runs[name]['error']}")
    return "\n".join(lines) + "\n"


def write_compare_report(metrics: dict[str, Any], figures: dict[str, bytes], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.html`` (figures embedded), ``metrics.json``, ``summary.md`` and ``figures/*.png``."""
    out = Path(out_dir)
    files: dict[str, Path] = {}
    for name, path in report.write_figures(figures, out / "figures").items():
        files[f"figure_{name}"] = path
    files["json"] = report.write_json(metrics, out / "metrics.json")
    md = markdown_summary(metrics)
    files["markdown"] = out / "summary.md"
    files["markdown"].write_text(md, encoding="utf-8")
    groups = {"Structure": ["rdf", "bond_angles"], "Dynamics": ["msd"], "Thermodynamics": ["thermo"],
              "Energy conservation (NVE)": ["nve_energy"], "Stability": ["stability_rdf", "stability_distance"]}
    sections = [report.Section("Summary", text=f"teacher {metrics['models']['teacher']['label']} vs student "
                               f"{metrics['models']['student']['label']} on {metrics['structure']['formula']}",
                               metrics=metrics["comparison"])]
    for title, names in groups.items():
        figs = {n: figures[n] for n in names if n in figures}
        if figs:
            sections.append(report.Section(title, figures=figs))
    for name in ("teacher", "student"):
        run = {k: v for k, v in metrics["runs"][name].items() if k != "stability"}
        stab = metrics["runs"][name].get("stability", {})
        run["stability"] = {k: v for k, v in stab.items() if not isinstance(v, list)}
        sections.append(report.Section(f"{name} run", metrics=run))
    sections.append(report.Section("Settings", metrics=metrics["settings"]))
    files["html"] = report.write_html("md_validation: teacher vs student", sections, out / "report.html")
    return files
