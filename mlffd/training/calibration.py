"""Calibration of a shallow-ensemble student's uncertainty on validation frames, at export.

The heads' spread is a relative measure; two scale factors make it an absolute one: ``s_E`` so
that the predicted structure-energy uncertainty equals the root-mean-square energy error on the
validation frames, ``s_F`` so that the predicted per-atom force uncertainty equals the
root-mean-square force-component error there. The record (scales, frames, and how well the
uncertainty ranks the true errors) goes into the artifact's metadata (``uncertainty``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mlffd.data import Graph, collate


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def uncertainty_and_errors(model: torch.nn.Module, graphs: Sequence[Graph], device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per structure: energy error and predicted energy uncertainty, force RMSE and mean predicted
    force uncertainty; per atom: force error norm / sqrt(3) and predicted force uncertainty."""
    dtype = next(iter(model.parameters())).dtype
    was_training = model.training
    model.eval()
    e_err, e_unc, f_rmse, f_unc, a_err, a_unc = [], [], [], [], [], []
    try:
        with torch.enable_grad():
            for g in graphs:  # one structure per call: the energy spread is per call
                out = model(*collate([g], dtype=dtype, device=device).inputs())
                if "force_uncertainty" not in out:
                    raise ValueError("the model has no ensemble heads (ModelConfig.ensemble >= 2): nothing to calibrate")
                df = out["forces"].detach().cpu().double().numpy() - g.forces
                u = out["force_uncertainty"].detach().cpu().double().numpy()
                e_err.append(float(out["energy"].detach()) - g.energy)
                e_unc.append(float(out["energy_uncertainty"].detach()))
                f_rmse.append(float(np.sqrt(np.mean(df**2))))
                f_unc.append(float(np.sqrt(np.mean(u**2))))
                a_err.append(np.linalg.norm(df, axis=1) / np.sqrt(3.0))
                a_unc.append(u)
    finally:
        model.train(was_training)
    return {"energy_error": np.array(e_err), "energy_uncertainty": np.array(e_unc), "force_rmse": np.array(f_rmse),
            "force_uncertainty": np.array(f_unc), "atom_force_error": np.concatenate(a_err),
            "atom_force_uncertainty": np.concatenate(a_unc)}


def calibrate(model: torch.nn.Module, graphs: Sequence[Graph], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Fit ``model.uncertainty_scale`` on ``graphs`` (validation frames) in place; returns the
    metadata record. ValueError for a model without heads or no frames."""
    if not graphs:
        raise ValueError("no validation frames to calibrate the uncertainty on")
    with torch.no_grad():
        model.uncertainty_scale.fill_(1.0)
    raw = uncertainty_and_errors(model, graphs, device)
    tiny = 1e-12  # a spread of exactly zero (identical heads) keeps the scale finite
    s_e = float(np.sqrt(np.mean(raw["energy_error"] ** 2) / max(np.mean(raw["energy_uncertainty"] ** 2), tiny)))
    s_f = float(np.sqrt(np.mean(raw["atom_force_error"] ** 2) / max(np.mean(raw["atom_force_uncertainty"] ** 2), tiny)))
    with torch.no_grad():
        model.uncertainty_scale.copy_(torch.tensor([s_e, s_f], dtype=model.uncertainty_scale.dtype))
    return {
        "heads": int(model.ensemble),
        "energy_scale": s_e,
        "force_scale": s_f,
        "frames": len(graphs),
        "energy_rmse_eV": float(np.sqrt(np.mean(raw["energy_error"] ** 2))),
        "force_rmse": float(np.sqrt(np.mean(raw["atom_force_error"] ** 2))),
        "spearman_structure_force": _spearman(raw["force_uncertainty"], raw["force_rmse"]),
        "spearman_atom_force": _spearman(raw["atom_force_uncertainty"], raw["atom_force_error"]),
    }


def recalibrate_artifact(src: Any, dst: Any, calibration_data: Sequence[Any], refit_data: Sequence[Any] = (),
                         max_refit_frames: int = 600) -> dict[str, Any]:
    """Write ``src``'s student to ``dst`` with its ensemble heads refitted and its novelty
    reference fitted on ``refit_data`` (training frames; :func:`mlffd.training.head_refit.refit_heads`,
    :func:`mlffd.training.novelty.fit_novelty`; skipped when empty) and its uncertainty
    calibrated on ``calibration_data`` (labelled frame files). Energies and forces are unchanged;
    the other metadata are carried over. Returns the new ``uncertainty`` record."""
    from mlffd.data import read_frames, to_graphs
    from mlffd.models import export_like, load_student
    from mlffd.training.head_refit import refit_heads
    from mlffd.training.novelty import fit_novelty

    model, config, meta = load_student(src)
    if int(config.ensemble) < 2:
        raise ValueError(f"{src}: the model has no ensemble heads (ModelConfig.ensemble >= 2): nothing to calibrate")
    refit, novelty = None, None
    if refit_data:
        train = to_graphs(read_frames(list(refit_data)), config.elements, config.cutoff)
        refit = refit_heads(model, train, max_refit_frames)
        refit["data"] = [str(p) for p in refit_data]
        novelty = {**fit_novelty(model, train, config.elements), "data": [str(p) for p in refit_data]}
    record = calibrate(model, to_graphs(read_frames(list(calibration_data)), config.elements, config.cutoff))
    record["data"] = [str(p) for p in calibration_data]
    if refit is not None:
        record["refit"] = refit
    changes: dict[str, Any] = {"uncertainty": record}
    if novelty is not None:
        changes["novelty"] = novelty
    if isinstance(meta.get("metrics"), dict) and "uncertainty" in meta["metrics"]:
        changes["metrics"] = {**meta["metrics"], "uncertainty": record}
    export_like(model, config, meta, dst, **changes)
    return record
