"""Force-error metrics shared by ``mlffd evaluate`` and ``mlffd-validate forces``: one
definition, so the two commands give the same number for the same metric on the same data."""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: atoms whose reference force is below this (eV/Å) have no direction worth scoring: they are
#: left out of the angular error (the prediction does not choose which atoms count)
ANGLE_MIN_FORCE = 0.05


def angular_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Angle (degrees) between each predicted and reference force; 90° where the prediction is
    zero (no direction given), NaN where the reference is."""
    pred, ref = np.asarray(pred, float).reshape(-1, 3), np.asarray(ref, float).reshape(-1, 3)
    n_pred, n_ref = np.linalg.norm(pred, axis=1), np.linalg.norm(ref, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("ij,ij->i", pred, ref) / (n_pred * n_ref)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles = np.where(n_pred > 0, angles, 90.0)
    return np.where(n_ref > 0, angles, np.nan)


def force_errors(pred: np.ndarray, ref: np.ndarray, min_force: float = ANGLE_MIN_FORCE) -> dict[str, float]:
    """RMSE and MAE over Cartesian components (eV/Å), R² over components, the mean angular
    error (degrees, atoms with |F_ref| > ``min_force``; NaN when there are none) and the 90th,
    95th percentile and maximum of the per-atom error norm |ΔF| (eV/Å) of ``(N, 3)`` arrays."""
    pred, ref = np.asarray(pred, float).reshape(-1, 3), np.asarray(ref, float).reshape(-1, 3)
    if not len(ref):
        raise ValueError("no atoms to compare")
    diff = pred - ref
    norms = np.linalg.norm(diff, axis=1)
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    ss_res = float(np.sum(diff**2))
    scored = np.linalg.norm(ref, axis=1) > min_force
    angles = angular_errors(pred[scored], ref[scored])
    return {
        "atoms": int(len(ref)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "mae": float(np.mean(np.abs(diff))),
        "r2": (1.0 - ss_res / ss_tot) if ss_tot > 0 else (1.0 if ss_res == 0 else float("nan")),
        "angle_mean_deg": float(np.mean(angles)) if len(angles) else float("nan"),
        "error_p90": float(np.percentile(norms, 90)),
        "error_p95": float(np.percentile(norms, 95)),
        "error_max": float(norms.max()),
    }


def force_errors_by_element(pred: np.ndarray, ref: np.ndarray, symbols: Sequence[str],
                            min_force: float = ANGLE_MIN_FORCE) -> dict[str, dict[str, float]]:
    """:func:`force_errors` of the atoms of each element (``symbols``: one per atom)."""
    symbols = np.asarray(symbols)
    pred, ref = np.asarray(pred, float).reshape(-1, 3), np.asarray(ref, float).reshape(-1, 3)
    return {str(e): force_errors(pred[symbols == e], ref[symbols == e], min_force) for e in sorted(set(symbols.tolist()))}
