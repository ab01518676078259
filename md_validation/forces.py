"""Force, energy and stress parity of a calculator against reference labels (teacher).

Definitions (eV, Å; ``ΔF = F_pred - F_ref`` per atom):

- ``force_r2``: 1 - Σ(ΔF_c)² / Σ(F_ref,c - mean F_ref)² over all Cartesian components
- ``force_rmse`` / ``force_mae``: root-mean-square / mean absolute ΔF over components (eV/Å)
- ``force_max_error``, ``force_p90_error``, ``force_p95_error``: max / 90th / 95th percentile of
  the per-atom error norm |ΔF| (eV/Å)
- ``force_angular_error_deg``: mean angle between F_pred and F_ref (degrees), over atoms whose
  reference force exceeds ``min_force`` (a direction needs a length; a zero prediction counts 90°)

The force metrics are :mod:`mlffd.metrics`' (``mlffd evaluate`` computes the same numbers).
- ``energy_mae_meV_per_atom``: mean over frames of |E_pred - E_ref| / N (meV/atom)
- ``stress_mae_GPa``: mean absolute error of the six Voigt stress components (GPa)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from md_validation.units import EV_PER_A3_TO_GPA
from mlffd.metrics import ANGLE_MIN_FORCE, angular_errors, force_errors

#: atoms whose reference |F| is below this (eV/Å) are left out of the angular error
DEFAULT_MIN_FORCE = ANGLE_MIN_FORCE


def force_metrics(pred: np.ndarray, ref: np.ndarray, min_force: float = DEFAULT_MIN_FORCE) -> dict[str, float]:
    """The force metrics of the module docstring for (N, 3) arrays (empty for no atoms)."""
    if not np.asarray(ref).size:
        return {}
    m = force_errors(pred, ref, min_force)
    return {
        "n_atoms": m["atoms"],
        "force_r2": m["r2"],
        "force_rmse": m["rmse"],
        "force_mae": m["mae"],
        "force_max_error": m["error_max"],
        "force_p90_error": m["error_p90"],
        "force_p95_error": m["error_p95"],
        "force_angular_error_deg": m["angle_mean_deg"],
    }


# -- evaluating a calculator on labelled frames ----------------------------------------------


@dataclass
class ParityData:
    """Reference and predicted labels, flattened over atoms (forces) and frames (energy, stress)."""

    f_ref: np.ndarray  # (N_atoms_total, 3)
    f_pred: np.ndarray
    symbols: np.ndarray  # (N_atoms_total,)
    atom_frame: np.ndarray  # frame index of each atom
    e_ref: np.ndarray  # (F,) eV
    e_pred: np.ndarray
    n_atoms: np.ndarray  # (F,)
    s_ref: np.ndarray  # (F, 6) eV/Å^3, NaN where missing
    s_pred: np.ndarray
    config_type: np.ndarray  # (F,) str

    def atom_config_type(self) -> np.ndarray:
        return self.config_type[self.atom_frame]


class NonFiniteError(ValueError):
    """A model (or a reference) gave NaN or infinite energies, forces or stresses: no metrics
    are computed from them."""


def _stored_labels(atoms: Atoms) -> dict[str, Any] | None:
    calc = atoms.calc
    if calc is None or "forces" not in getattr(calc, "results", {}):
        return None
    res = calc.results
    return {"energy": res.get("energy"), "forces": np.asarray(res["forces"]), "stress": res.get("stress")}


def _single(calc: Calculator, atoms: Atoms) -> dict[str, Any]:
    atoms = atoms.copy()
    atoms.calc = calc
    out: dict[str, Any] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    out["stress"] = None
    if atoms.cell.rank == 3 and atoms.pbc.all():
        try:
            out["stress"] = atoms.get_stress()
        except (PropertyNotImplementedError, NotImplementedError):
            pass
    return out


def predict(calc: Calculator, frames: Sequence[Atoms], batch_size: int = 16, progress: bool = False, desc: str = "predict") -> list[dict]:
    """Energy, forces and stress of every frame; uses ``calc.calculate_batch`` when it exists."""
    from tqdm.auto import tqdm

    out: list[dict] = []
    bar = tqdm(total=len(frames), desc=desc, unit="frame", disable=not progress, leave=False)
    try:
        if hasattr(calc, "calculate_batch"):
            for start in range(0, len(frames), batch_size):
                chunk = list(frames[start: start + batch_size])
                try:
                    results = calc.calculate_batch(chunk)
                except FloatingPointError as exc:  # a calculator that refuses to return NaN says so
                    raise NonFiniteError(f"frames {start}..{start + len(chunk) - 1}: {' '.join(str(exc).split())}") from exc
                for res, atoms in zip(results, chunk):
                    stress = res.get("stress") if atoms.pbc.all() else None
                    out.append({"energy": res["energy"], "forces": res["forces"], "stress": stress})
                bar.update(len(chunk))
        else:
            for k, atoms in enumerate(frames):
                try:
                    out.append(_single(calc, atoms))
                except FloatingPointError as exc:
                    raise NonFiniteError(f"frame {k}: {' '.join(str(exc).split())}") from exc
                bar.update(1)
    finally:
        bar.close()
    return out


def reference_labels(frames: Sequence[Atoms], teacher: Calculator | None, progress: bool = False) -> list[dict]:
    """Labels stored in the frames (SinglePointCalculator) when present, else computed with ``teacher``."""
    labels: list[dict | None] = [_stored_labels(a) for a in frames]
    missing = [i for i, lab in enumerate(labels) if lab is None]
    if missing:
        if teacher is None:
            raise ValueError(f"{len(missing)} frame(s) carry no reference forces and no teacher was given")
        computed = predict(teacher, [frames[i] for i in missing], progress=progress, desc="teacher")
        for i, lab in zip(missing, computed):
            labels[i] = lab
    return labels  # type: ignore[return-value]


def _frames_text(frames: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in frames[:limit])
    return shown + (f", ... ({len(frames)} frames)" if len(frames) > limit else "")


def nonfinite_report(labels: Sequence[dict], what: str) -> str | None:
    """None when every energy, force and stress in ``labels`` is finite (or absent), else a
    one-line description naming the frames and atoms (``what``: who gave the labels)."""
    bad_energy = [i for i, lab in enumerate(labels)
                  if lab.get("energy") is not None and not np.isfinite(float(lab["energy"]))]
    bad_force_frames: list[int] = []
    bad_atoms = 0
    first: tuple[int, int] | None = None
    for i, lab in enumerate(labels):
        f = np.asarray(lab["forces"], float).reshape(-1, 3)
        rows = np.nonzero(~np.isfinite(f).all(axis=1))[0]
        if len(rows):
            bad_force_frames.append(i)
            bad_atoms += len(rows)
            first = first or (i, int(rows[0]))
    bad_stress = [i for i, lab in enumerate(labels)
                  if lab.get("stress") is not None and not np.isfinite(np.asarray(lab["stress"], float)).all()]
    if not (bad_energy or bad_force_frames or bad_stress):
        return None
    parts = []
    if bad_energy:
        parts.append(f"energies of frames {_frames_text(bad_energy)}")
    if bad_force_frames:
        assert first is not None
        parts.append(f"forces on {bad_atoms} atom(s) in frames {_frames_text(bad_force_frames)} "
                     f"(first: frame {first[0]}, atom {first[1]})")
    if bad_stress:
        parts.append(f"stresses of frames {_frames_text(bad_stress)}")
    return f"{what} gave non-finite (NaN/inf) " + "; ".join(parts)


def evaluate(
    calc: Calculator,
    frames: Sequence[Atoms],
    teacher: Calculator | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> ParityData:
    """Collect reference (stored or ``teacher``) and predicted (``calc``) labels of ``frames``."""
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to evaluate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    ref = reference_labels(frames, teacher, progress=progress)
    bad = nonfinite_report(ref, "the reference labels (stored or from the teacher)")
    if bad:
        raise NonFiniteError(bad)
    pred = predict(calc, frames, batch_size=batch_size, progress=progress, desc="student")
    bad = nonfinite_report(pred, "the model")
    if bad:
        raise NonFiniteError(bad + "; no metrics from non-finite predictions")

    def stress(lab: dict) -> np.ndarray:
        s = lab.get("stress")
        if s is None:
            return np.full(6, np.nan)
        s = np.asarray(s, float)
        if s.shape == (3, 3):
            s = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        return s

    def energy(lab: dict) -> float:
        return float(lab["energy"]) if lab.get("energy") is not None else float("nan")

    return ParityData(
        f_ref=np.concatenate([np.asarray(r["forces"], float) for r in ref]),
        f_pred=np.concatenate([np.asarray(p["forces"], float) for p in pred]),
        symbols=np.concatenate([np.array(a.get_chemical_symbols()) for a in frames]),
        atom_frame=np.concatenate([np.full(len(a), i) for i, a in enumerate(frames)]),
        e_ref=np.array([energy(r) for r in ref]),
        e_pred=np.array([energy(p) for p in pred]),
        n_atoms=np.array([len(a) for a in frames]),
        s_ref=np.array([stress(r) for r in ref]),
        s_pred=np.array([stress(p) for p in pred]),
        config_type=np.array([str(a.info.get("config_type", "default")) for a in frames]),
    )


def _frame_metrics(data: ParityData, frames: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"n_frames": int(frames.sum())}
    de = np.abs(data.e_pred[frames] - data.e_ref[frames]) / data.n_atoms[frames]
    de = de[np.isfinite(de)]
    out["energy_mae_meV_per_atom"] = float(np.mean(de) * 1000.0) if len(de) else float("nan")
    ds = np.abs(data.s_pred[frames] - data.s_ref[frames])
    ds = ds[np.isfinite(ds)]
    out["stress_mae_GPa"] = float(np.mean(ds) * EV_PER_A3_TO_GPA) if len(ds) else float("nan")
    return out


def parity_metrics(data: ParityData, min_force: float = DEFAULT_MIN_FORCE) -> dict[str, Any]:
    """Metrics ``overall``, ``per_element`` (force metrics) and ``per_config_type`` (all metrics)."""
    everything = np.ones(len(data.e_ref), bool)
    overall = {**force_metrics(data.f_pred, data.f_ref, min_force), **_frame_metrics(data, everything)}
    per_element = {}
    for el in sorted(set(data.symbols.tolist())):
        m = data.symbols == el
        per_element[el] = force_metrics(data.f_pred[m], data.f_ref[m], min_force)
    per_config = {}
    atom_ct = data.atom_config_type()
    for ct in sorted(set(data.config_type.tolist())):
        m = atom_ct == ct
        per_config[ct] = {**force_metrics(data.f_pred[m], data.f_ref[m], min_force),
                          **_frame_metrics(data, data.config_type == ct)}
    return {"overall": overall, "per_element": per_element, "per_config_type": per_config}


def predicted_uncertainty(calc: Calculator, frames: Sequence[Atoms], batch_size: int = 16) -> dict[str, np.ndarray] | None:
    """``forces``: the per-atom force uncertainty (eV/Å) of a student with ensemble heads on
    ``frames`` (all atoms in order) and, when it has a novelty reference, ``novelty``: each
    frame's novelty (:mod:`mlffd.models.novelty`); ``None`` for any other calculator."""
    metadata = getattr(calc, "metadata", None)
    if not isinstance(metadata, dict) or "uncertainty" not in metadata:
        return None
    from mlffd.calculator import DistilledCalculator

    monitor = DistilledCalculator(calc.artifact.path, device=calc.device, uncertainty=True)
    results: list[dict] = []
    for start in range(0, len(frames), batch_size):
        results += monitor.calculate_batch(list(frames[start:start + batch_size]))
    out = {"forces": np.concatenate([r["forces_uncertainty"] for r in results])}
    if results and all("novelty" in r for r in results):
        out["novelty"] = np.array([r["novelty"] for r in results])
    return out


def uncertainty_calibration(data: ParityData, predicted: np.ndarray, bins: int = 10,
                            novelty: np.ndarray | None = None) -> dict[str, Any]:
    """How the predicted per-atom force uncertainty ``predicted`` (eV/Å) matches the true error:
    Spearman rank correlation per structure (RMS uncertainty vs force RMSE) and per atom
    (uncertainty vs |ΔF|/√3), and a reliability table: atoms binned by predicted uncertainty
    (quantile bins), each bin's RMS predicted uncertainty next to its observed RMS error per
    component (a calibrated model lies on the diagonal). With each frame's ``novelty``: its
    Spearman correlation with the frame's energy error per atom and force RMSE, and the share
    of frames above 1 with the errors of those frames and of the rest."""
    from scipy.stats import spearmanr

    err = np.linalg.norm(data.f_pred - data.f_ref, axis=1) / np.sqrt(3.0)
    frames = np.unique(data.atom_frame)
    per_frame_err = np.array([np.sqrt(np.mean(err[data.atom_frame == k] ** 2)) for k in frames])
    per_frame_unc = np.array([np.sqrt(np.mean(predicted[data.atom_frame == k] ** 2)) for k in frames])

    def rho(x: np.ndarray, y: np.ndarray) -> float:
        return float(spearmanr(x, y).statistic) if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")

    edges = np.unique(np.quantile(predicted, np.linspace(0.0, 1.0, bins + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    table = []
    for b in range(max(len(edges) - 1, 1)):
        sel = which == b
        if sel.any():
            table.append({"predicted_rms": float(np.sqrt(np.mean(predicted[sel] ** 2))),
                          "observed_rms": float(np.sqrt(np.mean(err[sel] ** 2))), "atoms": int(sel.sum())})
    record = {
        "spearman_structure": rho(per_frame_unc, per_frame_err),
        "spearman_atom": rho(predicted, err),
        "rms_predicted": float(np.sqrt(np.mean(predicted**2))),
        "rms_observed": float(np.sqrt(np.mean(err**2))),
        "reliability": table,
    }
    if novelty is not None:
        e_err = np.abs(data.e_pred - data.e_ref) / data.n_atoms * 1000.0  # meV/atom
        above = novelty > 1.0
        record["novelty"] = {
            "spearman_energy_error": rho(novelty, e_err),
            "spearman_force_rmse": rho(novelty, per_frame_err),  # per_frame_err: each frame's force RMSE
            "fraction_above_1": float(np.mean(above)),
            "max": float(np.max(novelty)),
        }
        for name, group in (("above", above), ("below", ~above)):  # only groups that hold frames
            if group.any():
                record["novelty"][f"energy_mae_{name}_1_meV_per_atom"] = float(np.mean(e_err[group]))
    return record


def read_frames(path: str, index: str = ":", stride: int = 1) -> list[Atoms]:
    """Frames ``index`` (an ASE selection; ``FILE@SELECTION`` works too) of an extxyz (or any
    ASE-readable, ``.xz``/``.gz``/``.bz2`` compressed) file, every ``stride``-th.

    ValueError naming the file when it is missing, empty, unreadable or truncated, when the
    selection is out of range, or when ``stride`` < 1.
    """
    from md_validation.inputs import read_any, split_selection

    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{path}: stride must be an integer >= 1, got {stride!r}")
    path, at = split_selection(path)
    if at is not None:
        if index not in (":", None):
            raise ValueError(f"{path}: a selection both after '@' ({at!r}) and as index ({index!r}); give one")
        index = at
    return read_any(path, index=":" if index is None else index)[::stride]


def forces_report(
    calc: Calculator,
    frames: Sequence[Atoms],
    teacher: Calculator | None,
    out_dir: str | Path,
    batch_size: int = 16,
    min_force: float = DEFAULT_MIN_FORCE,
    progress: bool = False,
    labels: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate, then write ``forces.json``, ``forces.png`` (six panels) and ``forces.html`` into ``out_dir``."""
    from md_validation import plots, report

    data = evaluate(calc, frames, teacher, batch_size=batch_size, progress=progress)
    metrics = parity_metrics(data, min_force=min_force)
    metrics["inputs"] = {**(labels or {}), "n_frames": len(data.e_ref), "min_force": min_force}
    out = Path(out_dir)
    figures = {"forces": report.figure_png(plots.forces_figure(data, metrics, min_force=min_force))}
    predicted = predicted_uncertainty(calc, frames, batch_size)
    if predicted is not None:
        novelty = predicted.get("novelty")
        metrics["uncertainty"] = uncertainty_calibration(data, predicted["forces"], novelty=novelty)
        figure = plots.reliability_figure(metrics["uncertainty"], data, predicted["forces"], novelty)
        figures["uncertainty"] = report.figure_png(figure)
    files = report.write_figures(figures, out)
    files["json"] = report.write_json(metrics, out / "forces.json")
    sections = [report.Section("Overall", metrics=metrics["overall"], figures=figures),
                *([report.Section("Uncertainty against the true error", metrics=metrics["uncertainty"])]
                  if "uncertainty" in metrics else []),
                report.Section("Per element", metrics=metrics["per_element"]),
                report.Section("Per config_type", metrics=metrics["per_config_type"]),
                report.Section("Inputs", metrics=metrics["inputs"])]
    files["html"] = report.write_html("md_validation: force parity", sections, out / "forces.html")
    return metrics, files
