"""Fit of a student's novelty reference on its training frames, at export.

The features entering the energy readout are captured on (at most ``max_frames`` of) the training
frames, with more frames added for any element that has fewer than ten atoms per feature in them.
Per element: their mean and covariance, shrunk towards a multiple of the identity only as much as
keeps the inverse finite (``1e-5`` of the mean variance with ten atoms per feature or more, up to
half of it with few atoms: directions in which the training atoms hardly vary are what an
unfamiliar environment moves along), and the whitening ``L^-1`` of its Cholesky factor. Each
element's distances are divided by their ``percentile`` over that element's training atoms, so
that every element is on one scale;
then all are divided by the ``percentile`` of the structures' largest atom distance, so a
structure's novelty (:mod:`mlffd.models.novelty`) exceeds 1 for ``100 - percentile`` % of the
training structures. The record (frames, atoms and shrinkage per element, the scales) goes into
the artifact's metadata (``novelty``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mlffd.data import Graph
from mlffd.models.novelty import atom_novelty
from mlffd.training.capture import captured_inputs


def readout_features(model: torch.nn.Module, graphs: Sequence[Graph]) -> list[Tensor]:
    """The features ``[N, F]`` (float64) entering ``model``'s energy readout, one tensor per graph
    (evaluated as in use: eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        return [z for _, _, z in captured_inputs(model, model.readout, graphs)]
    finally:
        model.train(was_training)


def fit_novelty(model: torch.nn.Module, graphs: Sequence[Graph], elements: Sequence[str], max_frames: int = 2000,
                percentile: float = 99.0, seed: int = 0) -> dict[str, Any]:
    """Fit ``model.novelty_mean`` and ``model.novelty_whiten`` on ``max_frames`` of ``graphs``
    (training frames; more where an element is rare) in place and switch the novelty on; returns
    the metadata record.
    ValueError when there are no frames or an element of the model has no atom in them."""
    if not graphs:
        raise ValueError("no training frames to fit the novelty reference on")
    if not 50.0 <= percentile < 100.0:
        raise ValueError(f"novelty percentile must be in [50, 100), got {percentile}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(graphs))]
    pick = set(order[:max_frames])
    n_features = int(model.novelty_mean.shape[1])
    # atoms of each element in each frame, counted once
    counts = np.array([np.bincount(np.asarray(g.species), minlength=len(elements)) for g in graphs])
    for e in range(len(elements)):  # rare elements: more of the frames that hold them
        count = int(counts[sorted(pick), e].sum())
        for i in order[max_frames:]:
            if count >= 10 * n_features:
                break
            if counts[i, e] and i not in pick:
                pick.add(i)
                count += int(counts[i, e])
    chosen = [graphs[i] for i in sorted(pick)]
    model.use_novelty = False  # the features do not depend on it; keep the capture free of it
    features = readout_features(model, chosen)
    species = [torch.from_numpy(np.asarray(g.species)).long() for g in chosen]
    all_h, all_s = torch.cat(features), torch.cat(species)
    absent = [elements[e] for e in range(len(elements)) if not bool((all_s == e).any())]
    if absent:
        raise ValueError(f"no atom of {', '.join(absent)} in the frames: cannot fit the novelty reference of "
                         f"{'that element' if len(absent) == 1 else 'those elements'}")
    mean = torch.zeros(len(elements), n_features, dtype=torch.float64)
    whiten = torch.zeros(len(elements), n_features, n_features, dtype=torch.float64)
    atoms, shrinkage = {}, {}
    for e, symbol in enumerate(elements):
        h = all_h[all_s == e]
        mu = h.mean(0)
        centred = h - mu
        cov = centred.T @ centred / max(1, h.shape[0] - 1)
        alpha = 1e-5 if h.shape[0] >= 10 * n_features else min(0.5, max(1e-5, (n_features / h.shape[0]) ** 2))
        target = torch.trace(cov) / n_features
        shrunk = (1.0 - alpha) * cov + alpha * max(float(target), 1e-12) * torch.eye(n_features, dtype=torch.float64)
        factor = torch.linalg.cholesky(shrunk)
        w = torch.linalg.solve_triangular(factor, torch.eye(n_features, dtype=torch.float64), upper=False)
        d = torch.linalg.vector_norm(centred @ w.T, dim=1)
        scale = float(np.percentile(d.numpy(), percentile))
        mean[e], whiten[e] = mu, w / max(scale, 1e-12)
        atoms[symbol], shrinkage[symbol] = int(h.shape[0]), float(alpha)
    structure_max = [float(atom_novelty(h, s, mean, whiten).max()) for h, s in zip(features, species)]
    frame_scale = float(np.percentile(structure_max, percentile))
    whiten /= max(frame_scale, 1e-12)
    buffer_dtype = model.novelty_whiten.dtype
    with torch.no_grad():
        model.novelty_mean.copy_(mean.to(buffer_dtype))
        model.novelty_whiten.copy_(whiten.to(buffer_dtype))
    model.use_novelty = True
    above = float(np.mean(np.array(structure_max) / frame_scale > 1.0))
    return {"frames": len(chosen), "percentile": float(percentile), "atoms": atoms, "shrinkage": shrinkage,
            "structure_scale": frame_scale, "training_structures_above_1": above}
