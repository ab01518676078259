"""Accuracy of a student against teacher labels: energy, forces (incl. angles, tails), stress."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mlffd.data import Graph, collate, read_frames, to_graphs, voigt_to_matrix
from mlffd.metrics import force_errors, force_errors_by_element
from mlffd.training.loss import predict


def collect_predictions(
    model: torch.nn.Module, graphs: Sequence[Graph], batch_size: int = 8, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Predictions next to labels for every graph (numpy float64)."""
    if dtype is None:
        dtype = next(iter(model.parameters())).dtype
    was_training = model.training
    model.eval()
    energy, forces, stress = [], [], []
    try:
        with torch.enable_grad():
            for start in range(0, len(graphs), batch_size):
                batch = collate(graphs[start : start + batch_size], dtype=dtype, device=device)
                out = predict(model, batch)
                energy.append(out["energy"].detach().to("cpu", torch.float64).numpy())
                forces.append(out["forces"].detach().to("cpu", torch.float64).numpy())
                stress.append(out["stress"].detach().to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    return {
        "energy": np.concatenate(energy),
        "forces": np.concatenate(forces),
        "stress": np.concatenate(stress),
    }


class NonFiniteError(ValueError):
    """A model gave NaN or infinite energies, forces or stresses: no metrics are computed."""


def check_finite(graphs: Sequence[Graph], pred: dict[str, Any], what: str = "the model") -> None:
    """:class:`NonFiniteError` naming the frames and atoms where ``pred`` is not finite (a metric
    averaged over a NaN is NaN, and a NaN metric is never a result)."""
    n_atoms = np.array([g.num_atoms for g in graphs])
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    bad_e = np.nonzero(~np.isfinite(pred["energy"]))[0]
    bad_rows = np.nonzero(~np.isfinite(pred["forces"]).all(axis=1))[0]
    bad_s = [k for k, g in enumerate(graphs) if g.stress is not None and not np.isfinite(pred["stress"][k]).all()]
    if not (len(bad_e) or len(bad_rows) or bad_s):
        return
    parts = []
    if len(bad_e):
        parts.append(f"energies of frames {_listing(bad_e.tolist())}")
    if len(bad_rows):
        frames = np.searchsorted(starts, bad_rows, side="right") - 1
        f0, a0 = int(frames[0]), int(bad_rows[0] - starts[frames[0]])
        parts.append(f"forces on {len(bad_rows)} atom(s) in frames {_listing(sorted(set(frames.tolist())))} "
                     f"(first: frame {f0}, atom {a0})")
    if bad_s:
        parts.append(f"stresses of frames {_listing(bad_s)}")
    raise NonFiniteError(f"{what} gave non-finite (NaN/inf) " + "; ".join(parts) + "; no metrics from non-finite predictions")


def _listing(items: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def compute_metrics(graphs: Sequence[Graph], pred: dict[str, Any], elements: Sequence[str] | None = None) -> dict[str, Any]:
    """Held-out metrics of predictions ``pred`` (from :func:`collect_predictions`) vs the labels.

    Energy MAE/RMSE in meV/atom; the force metrics of :func:`mlffd.metrics.force_errors` (RMSE,
    MAE per component in eV/Å, R², mean angular error in degrees, p95 and max of |F - F_ref|),
    also per element when ``elements`` (the model's, indexed by the graphs' species) are given;
    stress MAE (Voigt components, eV/Å³ and GPa) over frames with a stress label; and
    energy/force errors per ``config_type``.
    """
    from ase.units import GPa

    if not graphs:
        raise ValueError("no frames to evaluate")
    check_finite(graphs, pred)
    n_atoms = np.array([g.num_atoms for g in graphs])
    e_ref = np.array([g.energy for g in graphs])
    de = (pred["energy"] - e_ref) / n_atoms
    f_ref = np.concatenate([g.forces for g in graphs])
    f = pred["forces"]
    df = f - f_ref
    forces = force_errors(f, f_ref)
    metrics: dict[str, Any] = {
        "num_frames": len(graphs),
        "num_atoms": int(n_atoms.sum()),
        "energy_mae_mev_per_atom": float(np.mean(np.abs(de)) * 1000),
        "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de**2)) * 1000),
        "force_rmse": forces["rmse"],
        "force_mae": forces["mae"],
        "force_r2": forces["r2"],
        "force_angle_mean_deg": forces["angle_mean_deg"],
        "force_error_p95": forces["error_p95"],
        "force_error_max": forces["error_max"],
        "force_ref_rms": float(np.sqrt(np.mean(f_ref**2))),
    }
    if elements is not None:
        symbols = np.asarray(list(elements))[np.concatenate([g.species for g in graphs])]
        metrics["by_element"] = force_errors_by_element(f, f_ref, symbols)
    with_stress = [k for k, g in enumerate(graphs) if g.stress is not None]
    if with_stress:
        iu = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
        s_pred = pred["stress"][with_stress][:, iu[0], iu[1]]
        s_ref = np.array([graphs[k].stress for k in with_stress])
        mae = float(np.mean(np.abs(s_pred - s_ref)))
        metrics["stress_mae"] = mae
        metrics["stress_mae_gpa"] = mae / GPa
        metrics["num_stress_frames"] = len(with_stress)
    by_type: dict[str, dict[str, float]] = {}
    types = np.array([g.config_type for g in graphs])
    atom_types = np.repeat(types, n_atoms)
    for t in sorted(set(types)):
        fm = atom_types == t
        by_type[t] = {
            "frames": int(np.sum(types == t)),
            "energy_mae_mev_per_atom": float(np.mean(np.abs(de[types == t])) * 1000),
            "force_rmse": float(np.sqrt(np.mean(df[fm] ** 2))),
        }
    metrics["by_config_type"] = by_type
    return metrics


def evaluate_model(model: torch.nn.Module, graphs: Sequence[Graph], batch_size: int = 8, device: str | torch.device = "cpu",
                   elements: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of an in-memory model (eager or scripted) on labelled graphs (per element too
    when its ``elements`` are given)."""
    return compute_metrics(graphs, collect_predictions(model, graphs, batch_size=batch_size, device=device), elements)


def read_graphs(files: Sequence[str | Path], elements: Sequence[str], cutoff: float) -> list[Graph]:
    """Labelled frames of ``files`` as graphs for a model of ``elements`` and ``cutoff``; read per
    file, so that a bad frame's ValueError names its file."""
    graphs: list[Graph] = []
    for path in files:
        try:
            graphs.extend(to_graphs(read_frames(path), elements, cutoff))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc
    return graphs


def evaluate(model: str | Path, data: str | Path | Sequence[str | Path], batch_size: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Metrics of an artifact (a path or a shipped model name) on a labelled extxyz file."""
    from mlffd import artifact as _artifact
    from mlffd.registry import resolve

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    files = [data] if isinstance(data, (str, Path)) else list(data)
    art = _artifact.load(resolve(model), device=torch.device(device))
    graphs = read_graphs(files, art.elements, art.cutoff)
    try:
        metrics = evaluate_model(art.module, graphs, batch_size=batch_size, device=device, elements=art.elements)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{art.path} on {', '.join(map(str, files))}: {exc}") from exc
    metrics["model"] = str(art.path)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable table of the headline metrics."""
    rows = [
        ("energy MAE", metrics.get("energy_mae_mev_per_atom"), "meV/atom"),
        ("force RMSE", metrics.get("force_rmse"), "eV/Å"),
        ("force MAE", metrics.get("force_mae"), "eV/Å"),
        ("force R²", metrics.get("force_r2"), ""),
        ("force angle", metrics.get("force_angle_mean_deg"), "deg"),
        ("force err p95", metrics.get("force_error_p95"), "eV/Å"),
        ("force err max", metrics.get("force_error_max"), "eV/Å"),
        ("stress MAE", metrics.get("stress_mae_gpa"), "GPa"),
    ]
    # a metric with nothing to measure (R² of all-zero forces, angles without forces) is n/a, never NaN
    by_element = metrics.get("by_element") or {}
    if len(by_element) > 1:
        rows += [(f"force RMSE {e}", m["rmse"], "eV/Å") for e, m in by_element.items()]
    return "\n".join(f"{name:14s} {value:10.4f} {unit}" if np.isfinite(value) else f"{name:14s} {'n/a':>10s} {unit}"
                     for name, value, unit in rows if value is not None)


__all__ = ["NonFiniteError", "check_finite", "collect_predictions", "compute_metrics", "evaluate", "evaluate_model",
           "format_metrics", "voigt_to_matrix"]
