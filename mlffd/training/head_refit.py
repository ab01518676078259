"""Refit of a shallow ensemble's head deviations so that their spread follows the true error.

Heads trained only to fit the energies agree wherever the features vary in the data, and what
spread is left comes from their random initialisation: it need not rank errors at all (a
student can give its crystal frames a larger spread than its liquid ones). This module keeps
the heads' mean (so energy, forces and stress are unchanged) and refits their deviations from
it by maximising the Gaussian likelihood of the student's own errors on training frames:

    force:  |F_i - F_i^ref|^2 ~ 3 a_F u_i^2,    u_i^2 = v_i + sum_{j in N(i)} v_j
    energy: (E - E^ref)^2     ~   a_E s^2,      s^2 = mean_k (sum_i dev_ik)^2

with ``dev_ik`` atom i's energy deviation of head k and ``v_i = mean_k dev_ik^2`` (exactly the
quantities of :mod:`mlffd.models.uncertainty`). The deviations are linear in the last readout
layer, so the fit runs on features computed once, in standardised coordinates, by L-BFGS.
``a_F`` and ``a_E`` are free scales: :func:`mlffd.training.calibration.calibrate` fits the
absolute scale afterwards on validation frames. A Gaussian prior centred on the trained
deviations (``prior_weight`` × their relative squared change) keeps the directions the training
data never constrained: the likelihood only sees frames like the training data, and without the
prior it may turn the heads away from the features that make them spread far from the data. This is the "direct propagation of shallow
ensembles" idea (a likelihood-trained ensemble) applied after training to the last layer only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mlffd.data import Graph
from mlffd.training.capture import captured_inputs
from mlffd.models.uncertainty import add_uncertainty


@dataclass(frozen=True)
class _Frame:
    features: Tensor  # [N, H] hidden activations entering the last readout layer
    edge_index: Tensor  # [2, E]
    force_error: Tensor  # [N] squared norm of the force error
    energy_error: float  # structure energy error (eV)


def ensemble_last_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The readout layer whose outputs are the ensemble heads; refuses a model without them."""
    last = model.readout.net[-1]
    if not isinstance(last, torch.nn.Linear) or int(model.ensemble) < 2:
        raise ValueError("the model has no ensemble heads (ModelConfig.ensemble >= 2): nothing to refit")
    return last


def _frames(model: torch.nn.Module, graphs: Sequence[Graph]) -> list[_Frame]:
    """Evaluate ``model`` on each graph, capturing the input of its last readout layer."""
    frames = []
    for g, out, z in captured_inputs(model, ensemble_last_layer(model), graphs):
        df = out["forces"].detach().double() - torch.from_numpy(g.forces)
        frames.append(_Frame(z, torch.from_numpy(g.edge_index), (df * df).sum(1), float(out["energy"].detach()) - g.energy))
    return frames


def _nll(deviations: Tensor, log_scales: Tensor, frames: Sequence[_Frame], scale: float) -> Tensor:
    """Mean per-atom force NLL plus mean per-structure energy NLL (constants dropped), with the
    force variance and energy deviations exactly as the model reports them (``add_uncertainty``)."""
    force, energy, atoms = 0.0, 0.0, 0
    w, c = deviations[:, :-1], deviations[:, -1]
    unit = torch.ones(2, dtype=deviations.dtype)  # the free scales below stand for the calibration
    for f in frames:
        out: dict[str, Tensor] = {}
        heads = scale * (f.features @ w.T + c)  # [N, K] per-atom head energies about their mean
        add_uncertainty(out, heads, f.edge_index, torch.ones(len(heads), dtype=torch.bool), unit, False)
        u2 = torch.exp(log_scales[0]) * out["force_variance"] + 1e-12
        force = force + (f.force_error / (2 * u2) + 1.5 * torch.log(u2)).sum()
        s2 = torch.exp(log_scales[1]) * (out["energy_deviations"] ** 2).mean() + 1e-12
        energy = energy + f.energy_error**2 / (2 * s2) + 0.5 * torch.log(s2)
        atoms += len(heads)
    return force / atoms + energy / len(frames)


def refit_heads(model: torch.nn.Module, graphs: Sequence[Graph], max_frames: int = 600, iterations: int = 20,
                seed: int = 0, prior_weight: float = 1.0) -> dict[str, Any]:
    """Refit the deviations of ``model``'s ensemble heads from their mean on (at most
    ``max_frames`` of) ``graphs``, in place; the mean, hence every prediction, is unchanged.
    Returns a record (frames, NLL before and after). Identical heads are left alone: with no
    spread there is no direction to fit."""
    last = ensemble_last_layer(model)
    if not graphs:
        raise ValueError("no frames to refit the ensemble heads on")
    pick = np.random.default_rng(seed).permutation(len(graphs))[:max_frames]
    frames = _frames(model, [graphs[i] for i in sorted(pick)])
    weight, bias = last.weight.detach().double(), last.bias.detach().double()
    w_mean, b_mean = weight.mean(0), bias.mean()
    start = torch.cat([weight - w_mean, (bias - b_mean).unsqueeze(1)], 1)  # [K, H+1]
    if float(start.abs().max()) == 0.0:
        return {"method": "none (identical heads)", "frames": len(frames)}
    features = torch.cat([f.features for f in frames])
    mu, sd = features.mean(0), features.std(0) + 1e-8

    def to_raw(a: Tensor) -> Tensor:  # standardised -> raw coordinates; rows re-centred (mean fixed)
        w = a[:, :-1] / sd
        c = a[:, -1] - (w * mu).sum(1)
        raw = torch.cat([w, c.unsqueeze(1)], 1)
        return raw - raw.mean(0)

    a0 = torch.cat([start[:, :-1] * sd, (start[:, -1] + start[:, :-1] @ mu).unsqueeze(1)], 1)  # standardised start
    norm0 = float((a0 * a0).sum())
    a = a0.clone().requires_grad_(True)
    log_scales = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    scale = float(model.scale)
    with torch.no_grad():
        before = float(_nll(start, log_scales, frames, scale))
    opt = torch.optim.LBFGS([a, log_scales], lr=1.0, max_iter=20, max_eval=30, tolerance_change=1e-7,
                            line_search_fn="strong_wolfe")

    def penalty(x: Tensor) -> Tensor:  # a Gaussian prior centred on the trained deviations
        return prior_weight * ((x - a0) ** 2).sum() / norm0

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _nll(to_raw(a), log_scales, frames, scale) + penalty(a)
        loss.backward()
        return loss

    last_loss = before
    for _ in range(iterations):  # stop once a round of L-BFGS no longer improves the likelihood
        loss = float(opt.step(closure).detach())
        if abs(last_loss - loss) < 1e-5 * max(1.0, abs(loss)):
            break
        last_loss = loss
    fitted = to_raw(a.detach())
    with torch.no_grad():
        after = float(_nll(fitted, log_scales, frames, scale))
    if not np.isfinite(after) or after > before:  # never make the ensemble worse than it was
        return {"method": "kept (refit did not improve the likelihood)", "frames": len(frames), "nll_before": before}
    with torch.no_grad():
        last.weight.copy_((w_mean + fitted[:, :-1]).to(last.weight.dtype))
        last.bias.copy_((b_mean + fitted[:, -1]).to(last.bias.dtype))
    return {"method": "nll", "frames": len(frames), "nll_before": before, "nll_after": after, "prior_weight": prior_weight}
