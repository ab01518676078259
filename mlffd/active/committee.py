"""A committee of students evaluated on the same frames, and its disagreement.

The model deviation of DP-GEN (deepmd-kit's ``max_devi_f``): for each atom the standard
deviation of the members' force vectors, ``sqrt(mean_k |F_ik - mean_k F_ik|^2)`` (population
std, eV/Å), and per frame its maximum over atoms (and its mean). The energy deviation is the
std over members of the energy per atom. A frame a member cannot evaluate (non-finite output,
overlapping atoms) gets NaN predictions from that member and an infinite deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms


def force_deviation(forces: np.ndarray) -> tuple[float, float]:
    """``(max, mean)`` over atoms of the committee's per-atom force deviation; ``forces`` is
    ``[K, N, 3]``. Deviations are taken from member 0's forces first, so identical members give
    exactly 0 (the std is unchanged by the shift). Non-finite input gives ``inf``."""
    f = np.asarray(forces, dtype=np.float64)
    if f.shape[1] == 0:
        return 0.0, 0.0
    if not np.isfinite(f).all():
        return float("inf"), float("inf")
    d = f - f[:1]
    d = d - d.mean(0, keepdims=True)
    per_atom = np.sqrt((d * d).sum(-1).mean(0))
    return float(per_atom.max()), float(per_atom.mean())


def energy_deviation(energies: np.ndarray, n_atoms: int) -> float:
    """Std over members of the energy per atom (eV/atom); ``inf`` when any is not finite."""
    e = np.asarray(energies, dtype=np.float64)
    if not np.isfinite(e).all():
        return float("inf")
    e = (e - e[0]) / max(n_atoms, 1)
    return float(np.sqrt(np.mean((e - e.mean()) ** 2)))


@dataclass(frozen=True)
class CommitteePrediction:
    """Every member's energy and forces on every frame, and the committee's deviations."""

    energy: np.ndarray  #: [K, F] eV (NaN where a member failed)
    forces: list[np.ndarray]  #: per frame [K, N, 3] eV/Å
    max_devi_f: np.ndarray  #: [F] eV/Å
    mean_devi_f: np.ndarray  #: [F] eV/Å
    devi_e: np.ndarray  #: [F] eV/atom
    errors: list[str]  #: per frame: why a member could not evaluate it ("" when all could)

    @property
    def members(self) -> int:
        return int(self.energy.shape[0])

    def mean_forces(self, frame: int) -> np.ndarray:
        return self.forces[frame].mean(0)


class Committee:
    """K student artifacts as :class:`~mlffd.calculator.DistilledCalculator` instances."""

    def __init__(self, artifacts: Sequence[str | Path], batch: int = 16) -> None:
        from mlffd.calculator import DistilledCalculator

        if len(artifacts) < 1:
            raise ValueError("a committee needs at least one artifact")
        self.paths = [str(p) for p in artifacts]
        self.calculators = [DistilledCalculator(p) for p in self.paths]
        self.batch = int(batch)

    def predict(self, frames: Sequence[Atoms]) -> CommitteePrediction:
        """Energies and forces of every member on ``frames`` (batched; a failing batch is
        evaluated frame by frame so that only the frame at fault is lost)."""
        k_members, n_frames = len(self.calculators), len(frames)
        energy = np.full((k_members, n_frames), np.nan)
        forces = [np.full((k_members, len(a), 3), np.nan) for a in frames]
        errors = [""] * n_frames
        for k, calc in enumerate(self.calculators):
            for start in range(0, n_frames, self.batch):
                chunk = list(range(start, min(start + self.batch, n_frames)))
                try:
                    results = calc.calculate_batch([frames[i] for i in chunk])
                except (ValueError, FloatingPointError, RuntimeError):
                    results = []
                    for i in chunk:
                        try:
                            results.append(calc.calculate_batch([frames[i]])[0])
                        except (ValueError, FloatingPointError, RuntimeError) as exc:
                            results.append(None)
                            errors[i] = errors[i] or f"member {k}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                for i, res in zip(chunk, results):
                    if res is not None:
                        energy[k, i] = res["energy"]
                        forces[i][k] = res["forces"]
        devi = [force_deviation(f) for f in forces]
        return CommitteePrediction(
            energy=energy,
            forces=forces,
            max_devi_f=np.array([d[0] for d in devi]),
            mean_devi_f=np.array([d[1] for d in devi]),
            devi_e=np.array([energy_deviation(energy[:, i], len(a)) for i, a in enumerate(frames)]),
            errors=errors,
        )


def force_errors_against(prediction: CommitteePrediction, labels: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """True errors against teacher forces ``labels`` (one ``[N, 3]`` per frame): per frame, the
    largest per-atom error norm of member 0 and of the committee mean, and the squared errors
    summed (for RMSEs over frames) for each member and the mean."""
    k = prediction.members
    max0, max_mean, sq_members, sq_mean, comps = [], [], np.zeros(k), 0.0, 0
    for f, ref in zip(prediction.forces, labels):
        ref = np.asarray(ref, dtype=np.float64)
        d = f - ref[None]
        norms = np.linalg.norm(d, axis=-1)
        max0.append(float(norms[0].max(initial=0.0)))
        dm = f.mean(0) - ref
        max_mean.append(float(np.linalg.norm(dm, axis=-1).max(initial=0.0)))
        sq_members += (d * d).reshape(k, -1).sum(1)
        sq_mean += float((dm * dm).sum())
        comps += ref.size
    return {"max_error_member0": np.array(max0), "max_error_mean": np.array(max_mean),
            "sq_members": sq_members, "sq_mean": np.array(sq_mean), "components": np.array(comps)}


__all__ = ["Committee", "CommitteePrediction", "energy_deviation", "force_deviation", "force_errors_against"]
