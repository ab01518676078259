"""Calibration of a shallow-ensemble student's uncertainty on validation frames, at export.

The heads' spread is a relative measure; two scale factors make it an absolute one: ``s_E`` so
that the predicted structure-energy uncertainty equals the root-mean-square energy error on the
validation frames, ``s_F`` so that the predicted per-atom force uncertainty equals the
root-mean-square force-component error there. The record (scales, frames, and how well the
uncertainty ranks the true errors) goes into the artifact's metadata (``uncertainty``).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

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


def refit_best_of(model: torch.nn.Module, train: Sequence[Graph], judge: Sequence[Graph], draws: int = 3,
                  max_frames: int = 600, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Refit ``model``'s ensemble heads (:func:`mlffd.training.head_refit.refit_heads`) on
    ``draws`` random draws of ``max_frames`` of ``train`` (seeds 0, 1, ...) and keep, in place, the
    one whose force uncertainty ranks the true force error best per atom on ``judge`` (held-out
    frames). The refit's likelihood is not convex, so one draw of frames can end in a spread that
    ranks errors poorly where another does well; the held-out frames tell them apart. Returns
    the kept draw's refit record with its ``seed`` and every draw's (seed, Spearman ρ) as ``draws``."""
    from mlffd.training.head_refit import ensemble_last_layer, refit_heads

    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if not judge:
        raise ValueError("no held-out frames to compare the refit draws on")
    last = ensemble_last_layer(model)
    start = copy.deepcopy(last.state_dict())
    best: tuple[float, int, dict[str, Any], dict[str, Tensor]] | None = None
    tried = []
    for seed in range(draws):
        last.load_state_dict(start)
        record = refit_heads(model, train, max_frames, seed=seed)
        raw = uncertainty_and_errors(model, judge, device)
        rho = _spearman(raw["atom_force_uncertainty"], raw["atom_force_error"])
        tried.append({"seed": seed, "spearman_atom_force": rho})
        score = rho if np.isfinite(rho) else -np.inf
        if best is None or score > best[0]:
            best = (score, seed, record, copy.deepcopy(last.state_dict()))
    assert best is not None
    last.load_state_dict(best[3])
    return {**best[2], "seed": best[1], "draws": tried}


def recalibrate_artifact(src: Any, dst: Any, calibration_data: Sequence[Any] = (), refit_data: Sequence[Any] = (),
                         max_refit_frames: int = 600, novelty_data: Sequence[Any] = (), refit_draws: int = 3) -> dict[str, Any]:
    """Write ``src``'s student to ``dst`` with its ensemble heads refitted on ``refit_data``
    (training frames; the best of ``refit_draws`` draws of ``max_refit_frames`` of them, judged on
    ``calibration_data``: :func:`refit_best_of`), its novelty reference fitted on
    ``novelty_data`` or else ``refit_data`` (:func:`mlffd.training.novelty.fit_novelty`) and
    its uncertainty calibrated on ``calibration_data`` (held-out frames); each step is skipped
    when its files are not given (a refit needs a calibration after it). Energies and forces are
    unchanged; the other metadata are carried over. Returns the new records (``uncertainty``,
    ``novelty``)."""
    from mlffd.data import read_frames, to_graphs
    from mlffd.models import export_like, load_student
    from mlffd.training.novelty import fit_novelty

    if not (calibration_data or refit_data or novelty_data):
        raise ValueError("nothing to do: give calibration frames, training frames to refit the heads on, or training "
                         "frames to fit the novelty on")
    if refit_data and not calibration_data:
        raise ValueError("refitted heads need a calibration after the refit: give held-out calibration frames too")
    model, config, meta = load_student(src)
    if calibration_data and int(config.ensemble) < 2:
        raise ValueError(f"{src}: the model has no ensemble heads (ModelConfig.ensemble >= 2): nothing to calibrate")

    def graphs(files: Sequence[Any]) -> list:
        return to_graphs(read_frames(list(files)), config.elements, config.cutoff)

    changes: dict[str, Any] = {}
    train = graphs(refit_data) if refit_data else None
    if novelty_data or train is not None:
        fit_on = novelty_data or refit_data
        changes["novelty"] = {**fit_novelty(model, graphs(novelty_data) if novelty_data else train, config.elements),
                              "data": [str(p) for p in fit_on]}
    if calibration_data:
        held_out = graphs(calibration_data)
        refit = None
        if train is not None:
            refit = {**refit_best_of(model, train, held_out, refit_draws, max_refit_frames), "data": [str(p) for p in refit_data]}
        record = calibrate(model, held_out)
        record["data"] = [str(p) for p in calibration_data]
        if refit is not None:
            record["refit"] = refit
        changes["uncertainty"] = record
        if isinstance(meta.get("metrics"), dict) and "uncertainty" in meta["metrics"]:
            changes["metrics"] = {**meta["metrics"], "uncertainty": record}
    export_like(model, config, meta, dst, **changes)
    return {k: v for k, v in changes.items() if k != "metrics"}
