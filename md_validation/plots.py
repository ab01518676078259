"""Figures of the validation reports (matplotlib ``Figure`` objects; no pyplot global state)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from md_validation.forces import ParityData
from mlffd.metrics import angular_errors

_COLORS = {"teacher": "#1f5fa8", "student": "#d9641e"}


def _color(name: str, i: int) -> str:
    return _COLORS.get(name, f"C{i}")


def energy_plot(stages: Sequence[tuple[str, Mapping[str, np.ndarray]]], n_atoms: int) -> Figure:
    """Energies per atom vs time: the NVE total energy (zoomed, with its linear fit) on top,
    then potential and kinetic energy of every stage, one colour per stage."""
    fig = Figure(figsize=(8, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    nve = [(i, s) for i, (name, s) in enumerate(stages) if "nve" in name and len(s["time_fs"]) >= 2]
    if nve:
        i, s = nve[0]
        t = np.asarray(s["time_fs"]) / 1000.0
        e = (np.asarray(s["etot"]) - s["etot"][0]) / n_atoms * 1000.0
        fit = np.polyfit(t - t[0], e, 1)
        axes[0].plot(t, e, color=f"C{i}", lw=1, label="NVE total energy")
        axes[0].plot(t, np.polyval(fit, t - t[0]), "k--", lw=1, label=f"linear fit: drift {fit[0]:.3g} meV/atom/ps")
        axes[0].set_ylabel("E_tot(t) - E_tot(0)\n(meV/atom)")
    else:
        for i, (name, s) in enumerate(stages):
            axes[0].plot(np.asarray(s["time_fs"]) / 1000.0, np.asarray(s["etot"]) / n_atoms, color=f"C{i}", lw=1, label=name)
        axes[0].set_ylabel("total energy\n(eV/atom)")
    for i, (name, s) in enumerate(stages):
        t = np.asarray(s["time_fs"]) / 1000.0
        axes[1].plot(t, np.asarray(s["epot"]) / n_atoms, color=f"C{i}", lw=1, label=name)
        axes[2].plot(t, np.asarray(s["ekin"]) / n_atoms, color=f"C{i}", lw=1, label=name)
    axes[1].set_ylabel("potential energy\n(eV/atom)")
    axes[2].set_ylabel("kinetic energy\n(eV/atom)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    axes[-1].set_xlabel("time (ps)")
    fig.suptitle("energies vs time")
    return fig


def rdf_plot(results: Mapping[str, Any], errors: Mapping[str, Mapping[str, float]] | None = None) -> Figure:
    """One panel per element pair; one line per named :class:`~md_validation.rdf.RDFResult`."""
    names = list(results)
    pairs = list(results[names[0]].g)
    fig = Figure(figsize=(5 * min(len(pairs), 3), 3.6 * ((len(pairs) + 2) // 3)))
    axes = np.atleast_1d(fig.subplots((len(pairs) + 2) // 3, min(len(pairs), 3))).ravel()
    for ax, pair in zip(axes, pairs):
        for i, name in enumerate(names):
            res = results[name]
            if pair in res.g:
                ax.plot(res.r, res.g[pair], color=_color(name, i), lw=1.3, label=name)
        title = pair
        if errors and pair in errors:
            title += f"  (RDF error {errors[pair]['mean']:.3g})"
        ax.set_title(title, fontsize=10)
        ax.axhline(1.0, color="0.7", lw=0.6)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.legend(fontsize=8)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    return fig


def forces_figure(data: ParityData, metrics: Mapping[str, Any], min_force: float = 0.05) -> Figure:
    """Six panels: parity, error histogram, angular errors, error vs |F|, per-component parity, per config."""
    fig = Figure(figsize=(15, 9.5))
    ax = fig.subplots(2, 3).ravel()
    ref, pred = data.f_ref, data.f_pred
    err = np.linalg.norm(pred - ref, axis=1)
    mag = np.linalg.norm(ref, axis=1)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ov = metrics["overall"]
    # (a) parity of all components
    ax[0].hexbin(ref.ravel(), pred.ravel(), gridsize=60, bins="log", cmap="viridis", mincnt=1)
    ax[0].plot([lo, hi], [lo, hi], "r--", lw=0.8)
    ax[0].set(xlabel="reference force component (eV/Å)", ylabel="predicted (eV/Å)",
              title=f"parity  R²={ov['force_r2']:.4f}  RMSE={ov['force_rmse']:.3g} eV/Å")
    # (b) error histogram
    ax[1].hist(err, bins=60, color="C0")
    for q, ls in ((ov["force_p90_error"], "--"), (ov["force_p95_error"], ":")):
        ax[1].axvline(q, color="k", ls=ls, lw=0.8)
    ax[1].set(xlabel="|ΔF| (eV/Å)", ylabel="atoms", title="force error norm (p90 --, p95 ··)")
    # (c) angular error distribution
    ok = mag > min_force  # the atoms the metric scores (mlffd.metrics)
    ang = angular_errors(pred[ok], ref[ok])
    ax[2].hist(ang, bins=np.linspace(0, 180, 61), color="C2")
    ax[2].set(xlabel="angle between F_pred and F_ref (°)", ylabel="atoms",
              title=f"angular error  mean={ov['force_angular_error_deg']:.3g}°")
    ax[2].set_yscale("log")
    # (d) error vs force magnitude
    ax[3].scatter(mag, err, s=3, alpha=0.4, color="C1")
    if len(mag) > 10:
        edges = np.unique(np.quantile(mag, np.linspace(0, 1, 11)))
        idx = np.clip(np.searchsorted(edges, mag, side="right") - 1, 0, len(edges) - 2)
        centres = [mag[idx == k].mean() for k in range(len(edges) - 1) if (idx == k).any()]
        means = [err[idx == k].mean() for k in range(len(edges) - 1) if (idx == k).any()]
        ax[3].plot(centres, means, "k-o", ms=3, lw=1, label="binned mean")
        ax[3].legend(fontsize=8)
    ax[3].set(xlabel="|F_ref| (eV/Å)", ylabel="|ΔF| (eV/Å)", title="error vs force magnitude")
    # (e) per-component parity
    for c, name in enumerate("xyz"):
        rmse = float(np.sqrt(np.mean((pred[:, c] - ref[:, c]) ** 2)))
        ax[4].scatter(ref[:, c], pred[:, c], s=3, alpha=0.5, label=f"F_{name}  RMSE {rmse:.3g}")
    ax[4].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax[4].set(xlabel="reference (eV/Å)", ylabel="predicted (eV/Å)", title="per-component parity")
    ax[4].legend(fontsize=8, markerscale=3)
    # (f) per-config breakdown
    per = metrics["per_config_type"]
    names = list(per)
    x = np.arange(len(names))
    ax[5].bar(x - 0.2, [per[n]["force_rmse"] for n in names], 0.4, label="force RMSE (eV/Å)")
    ax[5].bar(x + 0.2, [per[n]["force_mae"] for n in names], 0.4, label="force MAE (eV/Å)")
    ax[5].set_xticks(x, [f"{n}\n({per[n]['n_frames']} fr)" for n in names], fontsize=8)
    ax[5].set(title="per config_type")
    ax[5].legend(fontsize=8)
    fig.tight_layout()
    return fig


def distribution_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str, title: str, ylabel: str = "density") -> Figure:
    """Overlaid curves (name -> (x, y))."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for i, (name, (x, y)) in enumerate(curves.items()):
        ax.plot(x, y, color=_color(name, i), lw=1.3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def histograms(samples: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, str]) -> Figure:
    """One panel per quantity (``labels`` key -> axis label), overlaid histograms per run name."""
    keys = list(labels)
    fig = Figure(figsize=(5.5 * len(keys), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys):
        for i, (name, s) in enumerate(samples.items()):
            v = np.asarray(s.get(key, []), float)
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(v, bins=30, alpha=0.5, density=True, color=_color(name, i),
                        label=f"{name}: {v.mean():.4g} ± {v.std():.3g}")
        ax.set(xlabel=labels[key], ylabel="density")
        ax.legend(fontsize=8)
    return fig


def series_plot(series: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str,
                hline: float | None = None) -> Figure:
    """Overlaid time series (name -> (t, y)), with an optional threshold line."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for i, (name, (t, y)) in enumerate(series.items()):
        ax.plot(t, y, color=_color(name, i), lw=1.2, marker="." if len(t) < 30 else None, label=name)
    if hline is not None:
        ax.axhline(hline, color="r", ls="--", lw=0.8, label="threshold")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


__all__ = ["energy_plot", "rdf_plot", "forces_figure", "distribution_plot", "histograms", "series_plot"]


def reliability_figure(calibration: Mapping[str, Any], data: ParityData, predicted: np.ndarray,
                       novelty: np.ndarray | None = None) -> Figure:
    """Predicted per-atom force uncertainty against the true error: the atoms (log-log) and the
    reliability diagram (binned RMS predicted vs observed, the diagonal is perfect calibration);
    with each frame's ``novelty``, a third panel: the frames' energy error against it."""
    err = np.linalg.norm(data.f_pred - data.f_ref, axis=1) / np.sqrt(3.0)
    fig = Figure(figsize=(15 if novelty is not None else 10, 4.2))
    ax = fig.subplots(1, 3 if novelty is not None else 2)
    if novelty is not None:
        e_err = np.abs(data.e_pred - data.e_ref) / data.n_atoms * 1000.0
        ax[2].semilogy(novelty, np.maximum(e_err, 1e-4), ".", ms=3, alpha=0.5)
        ax[2].axvline(1.0, color="k", lw=0.7)
        ax[2].set(xlabel="novelty (1: 99 % of training structures below)", ylabel="|ΔE| (meV/atom)",
                  title=f"frames: Spearman {calibration['novelty']['spearman_energy_error']:.2f}")
    ax[0].loglog(np.maximum(predicted, 1e-6), np.maximum(err, 1e-6), ".", ms=2, alpha=0.4)
    ax[0].set(xlabel="predicted force uncertainty (eV/Å)", ylabel="|ΔF| / √3 (eV/Å)",
              title=f"atoms: Spearman {calibration['spearman_atom']:.2f}")
    table = calibration["reliability"]
    x = [row["predicted_rms"] for row in table]
    y = [row["observed_rms"] for row in table]
    top = max(max(x, default=1e-3), max(y, default=1e-3))
    ax[1].plot([0, top], [0, top], color="k", lw=0.7)
    ax[1].plot(x, y, "o-")
    ax[1].set(xlabel="predicted RMS (eV/Å)", ylabel="observed RMS error (eV/Å)",
              title=f"reliability; structures: Spearman {calibration['spearman_structure']:.2f}")
    fig.tight_layout()
    return fig
