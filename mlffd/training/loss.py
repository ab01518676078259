"""Loss on energy per atom, forces and stress, with per-structure predictions from a batch.

Sums, not means, are computed per batch (or per rank's shard of a batch); the trainer divides
by the counts of the *global* batch so that data-parallel shards add up to the same loss as
one process with the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

from mlffd.data import Batch


def predict(model: torch.nn.Module, batch: Batch) -> Dict[str, Tensor]:
    """Per-structure energies ``[B]``, forces ``[N, 3]`` and stresses ``[B, 3, 3]`` (ASE sign)."""
    out = model(*batch.inputs())
    b = batch.num_structures
    energy = torch.zeros(b, dtype=out["atom_energies"].dtype, device=batch.positions.device)
    energy = energy.index_add(0, batch.batch, out["atom_energies"])
    virial = torch.zeros(b, 9, dtype=out["atom_virial"].dtype, device=batch.positions.device)
    virial = virial.index_add(0, batch.batch, out["atom_virial"].reshape(-1, 9)).view(b, 3, 3)
    stress = -virial / batch.volume.view(-1, 1, 1)
    pred = {"energy": energy, "forces": out["forces"], "stress": stress}
    if "atom_energy_heads" in out:  # a shallow ensemble in training: each head's structure energy
        heads = out["atom_energy_heads"]
        deviation = heads - heads.mean(1, keepdim=True)
        sums = torch.zeros(b, heads.shape[1], dtype=heads.dtype, device=heads.device).index_add(0, batch.batch, deviation)
        pred["energy_heads"] = energy.unsqueeze(1) + sums
    return pred


@dataclass(frozen=True)
class LossWeights:
    energy: float = 10.0
    forces: float = 1.0
    stress: float = 1.0
    kind: str = "mse"
    huber_delta: float = 0.1


def _penalty(diff: Tensor, weights: LossWeights) -> Tensor:
    if weights.kind == "huber":
        return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=weights.huber_delta)
    return diff * diff


def loss_sums(pred: Dict[str, Tensor], batch: Batch, weights: LossWeights) -> Dict[str, Tensor]:
    """Unnormalised sums of the loss terms and of the squared/absolute errors for metrics.

    Keys: ``energy`` (sum over structures of the penalty on the per-atom energy error),
    ``forces`` (sum over force components), ``stress`` (sum over the 9 components of the
    per-atom virial error of structures with a stress label), and error sums for monitoring.
    """
    n = batch.num_atoms.to(pred["energy"].dtype)
    de = (pred["energy"] - batch.energy) / n
    df = pred["forces"] - batch.forces
    mask = batch.stress_mask
    # stress error as virial per atom (eV): volume-independent, commensurate with energy per atom
    ds = (pred["stress"] - batch.stress) * (batch.volume / n).view(-1, 1, 1)
    ds = ds[mask]
    sums = {
        "energy": _penalty(de, weights).sum(),
        "forces": _penalty(df, weights).sum(),
        "stress": _penalty(ds, weights).sum(),
        "energy_abs": de.detach().abs().sum(),
        "energy_sq": (de.detach() ** 2).sum(),
        "forces_sq": (df.detach() ** 2).sum(),
        "stress_abs": (pred["stress"] - batch.stress)[mask].detach().abs().sum(),
    }
    if "energy_heads" in pred:
        # every head fitted to the energies (their mean is fitted by the energy term): where the
        # data are the heads agree, away from them nothing holds them together
        dh = (pred["energy_heads"] - batch.energy.unsqueeze(1)) / n.unsqueeze(1)
        sums["energy_heads"] = _penalty(dh, weights).mean(1).sum()
    return sums


def counts(batch: Batch) -> Dict[str, int]:
    """Normalisers of the loss terms: structures, force components, stress components."""
    return {
        "structures": batch.num_structures,
        "components": 3 * int(batch.num_atoms.sum()),
        "stress_components": 9 * int(batch.stress_mask.sum()),
    }


def combine(sums: Dict[str, Tensor], n: Dict[str, int], weights: LossWeights) -> Tensor:
    """Weighted loss: mean penalty per term (over the counts ``n``), weighted and added."""
    loss = weights.energy * sums["energy"] / max(n["structures"], 1)
    if "energy_heads" in sums:
        loss = loss + weights.energy * sums["energy_heads"] / max(n["structures"], 1)
    loss = loss + weights.forces * sums["forces"] / max(n["components"], 1)
    if n["stress_components"] > 0:
        loss = loss + weights.stress * sums["stress"] / n["stress_components"]
    return loss
