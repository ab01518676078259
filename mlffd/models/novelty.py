"""Novelty: how unlike its training atoms an atom's environment looks to the student, in the same call.

A shallow ensemble's heads share every layer but the last, so they agree wherever the shared
features are confidently wrong: on chemistry none of them has seen, their spread stays as small
as on familiar atoms. Novelty looks at the features themselves. For each element ``e`` the
features ``h_i`` entering the energy readout of the training atoms of that element are summarised
by their mean ``mu_e`` and (shrunk) covariance ``C_e``; an atom's novelty is its Mahalanobis
distance from them,

    n_i = |W_e (h_i - mu_e)|,    W_e = L_e^-1 / s,    C_e = L_e L_e^T,

scaled (``s``, :mod:`mlffd.training.novelty`) so that a structure's novelty, the largest of its
atoms', is above 1 for 1 % of the training structures. This module adds to a model's output record

- ``atom_novelty [N]``: ``n_i`` (dimensionless), zero on atoms that carry no energy;
- ``novelty``: its largest value over the atoms of the call (one structure per call).

Models whose reference was never fitted (``novelty_whiten`` all zero) skip it and pay nothing.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

#: the output keys a student with a novelty reference adds (docs/artifact.md)
NOVELTY_OUTPUTS = ("atom_novelty", "novelty")


def atom_novelty(h: Tensor, species: Tensor, mean: Tensor, whiten: Tensor) -> Tensor:
    """``|W_e (h_i - mu_e)|`` per atom from features ``h [N, F]``, element indices ``species [N]``,
    per-element means ``mean [S, F]`` and whitening matrices ``whiten [S, F, F]``; one matrix
    product per element present (never an ``[N, F, F]`` gather)."""
    h = h.detach()
    out = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
    for e in range(mean.shape[0]):
        idx = torch.nonzero(species == e).squeeze(1)
        if idx.shape[0] == 0:
            continue
        z = torch.matmul(h.index_select(0, idx) - mean[e], whiten[e].t())
        out.index_copy_(0, idx, torch.linalg.vector_norm(z, dim=1))
    return out


def add_novelty(out: Dict[str, Tensor], novelty: Tensor, energy_mask: Tensor) -> None:
    """Add ``atom_novelty`` and ``novelty`` (module docstring) to ``out`` from per-atom ``novelty [N]``."""
    masked = torch.where(energy_mask, novelty, torch.zeros_like(novelty))
    out["atom_novelty"] = masked
    out["novelty"] = masked.max() if masked.shape[0] > 0 else torch.zeros((), dtype=masked.dtype, device=masked.device)
