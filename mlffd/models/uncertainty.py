"""Uncertainty of a shallow-ensemble student: the spread of its readout heads, in the same call.

A student with ``ensemble = K`` heads (:class:`~mlffd.models.ModelConfig`) has K last readout
layers on shared features; its energy is their mean, so energy and forces are those of one model
and the heads cost a K-wide last layer. Where the training data were, the heads agree (each
was fitted to them); away from them they drift apart. From the per-atom head energies
``e_ik`` (atom i, head k) this module adds to a model's output record:

- ``atom_energy_uncertainty [N]``: ``s_E std_k(e_ik)`` (eV), zero on atoms that carry no energy;
- ``atom_energy_deviations [N, K]``: ``s_E (e_ik - mean_k e_ik)`` (eV), zero on atoms that
  carry no energy: summed over the atoms of a structure (or over MPI ranks) they give that
  structure's head deviations, whose root mean square over k is its energy uncertainty;
- ``energy_deviations [K]``: their sum over all atoms of the call, and ``energy_uncertainty``
  (eV) its root mean square (one structure per call);
- ``force_variance [N]``: ``s_F^2 (v_i + sum_j v_j)``, ``v = var_k(e_.k)``, the sum over the
  neighbours j within the cutoff that carry energy: a force on i comes from the energies of i
  and its neighbours, so their disagreement is its uncertainty. Scattered from each centre to
  its neighbours like forces, so ghost contributions add onto their owners across ranks;
  ``force_uncertainty [N]`` (eV/Å) is its square root (one process).

``s_E`` and ``s_F`` (buffer ``uncertainty_scale``) are fitted on validation frames at export
(:func:`mlffd.training.calibration.calibrate`): the predicted uncertainty then equals the
root-mean-square error there (structure energy, force component).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

#: the output keys an ensemble student adds (docs/artifact.md)
UNCERTAINTY_OUTPUTS = ("atom_energy_uncertainty", "atom_energy_deviations", "energy_deviations", "energy_uncertainty", "force_variance",
                       "force_uncertainty")


def add_uncertainty(out: Dict[str, Tensor], heads: Tensor, edge_index: Tensor, energy_mask: Tensor,
                    scale: Tensor, training: bool) -> None:
    """Add the uncertainty outputs of the module docstring to ``out`` from head energies
    ``heads [N, K]`` (training also keeps ``atom_energy_heads`` for the loss)."""
    if training:
        out["atom_energy_heads"] = heads
        heads = heads.detach()
    mask = energy_mask.to(heads.dtype)
    deviation = heads - heads.mean(1, keepdim=True)
    variance = (deviation * deviation).mean(1) * mask
    s_e = scale[0].to(heads.dtype)
    s_f = scale[1].to(heads.dtype)
    out["atom_energy_deviations"] = s_e * deviation * mask.unsqueeze(1)
    out["energy_deviations"] = out["atom_energy_deviations"].sum(0)
    out["energy_uncertainty"] = torch.sqrt((out["energy_deviations"] ** 2).mean())
    out["atom_energy_uncertainty"] = s_e * torch.sqrt(variance)
    local = variance.clone()
    local.index_add_(0, edge_index[1], variance.index_select(0, edge_index[0]))
    out["force_variance"] = s_f * s_f * local
    out["force_uncertainty"] = torch.sqrt(out["force_variance"])
