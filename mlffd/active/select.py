"""Flag explored frames and choose which ones the teacher labels.

Each frame is ``accurate`` (committee deviation below ``force_lo``), a ``candidate`` (between
``force_lo`` and ``force_hi``), ``failed_deviation`` (above ``force_hi``) or ``failed_sanity``
(:mod:`mlffd.active.sanity`, with its reason; this wins over the deviation). Failures are what
the loop counts to decide whether to go on.

Within the budget the teacher labels sanity failures first, then deviation failures, then
candidates; inside each tier the highest deviation comes first, then frames by
farthest-point sampling on the sampler's structural descriptor, so a budget smaller than the flagged set covers its variety rather than many
snapshots of one collapse. ``audit`` of the budget go to frames drawn at random from the accurate
ones: the error where the committee is confident, without which an uncertainty-versus-error
plot only shows the flagged corner.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase import Atoms

from mlffd.active.committee import CommitteePrediction
from mlffd.active.config import ActiveConfig
from mlffd.active.sanity import REASONS, Reference, distance_limits, sanity_reasons

STATUSES = ("accurate", "candidate", "failed_deviation", "failed_sanity")


def classify(frames: Sequence[Atoms], prediction: CommitteePrediction, reference: Reference, config: ActiveConfig) -> list[dict[str, Any]]:
    """Per frame: ``status`` (of :data:`STATUSES`), ``reason`` (the sanity reason, ``deviation``,
    ``candidate`` or ``accurate``), all sanity ``reasons`` and the committee deviations. Sanity
    uses member 0's prediction (the student that explored) and the reasons its run stopped on."""
    limits = distance_limits(reference, config.min_distance_fraction, config.min_distance_A)
    out = []
    for i, atoms in enumerate(frames):
        found = set(filter(None, str(atoms.info.get("active_explore_reason", "")).split(",")))
        found |= set(sanity_reasons(atoms, float(prediction.energy[0, i]), prediction.forces[i][0], reference, limits,
                                    config.energy_margin, config.max_force))
        reasons = [r for r in REASONS if r in found]
        dev = float(prediction.max_devi_f[i])
        if not np.isfinite(dev) and "non_finite" not in reasons:
            reasons.insert(0, "non_finite")
        if reasons:
            status, reason = "failed_sanity", reasons[0]
        elif dev > config.force_hi:
            status, reason = "failed_deviation", "deviation"
        elif dev >= config.force_lo:
            status, reason = "candidate", "candidate"
        else:
            status, reason = "accurate", "accurate"
        out.append({"status": status, "reason": reason, "reasons": reasons, "max_devi_f": dev,
                    "mean_devi_f": float(prediction.mean_devi_f[i]), "devi_e": float(prediction.devi_e[i]),
                    "error": prediction.errors[i]})
    return out


def descriptors(frames: Sequence[Atoms], cutoff: float) -> np.ndarray:
    """The sampler's descriptor of each frame; a frame it cannot describe (a broken structure) is
    put far from every other."""
    from mlffd.sampling.frames import descriptor

    rows: list[np.ndarray | None] = []
    for atoms in frames:
        try:
            row = descriptor(atoms, cutoff)
            rows.append(row if np.isfinite(row).all() else None)
        except (ValueError, RuntimeError, FloatingPointError):
            rows.append(None)
    width = next((len(r) for r in rows if r is not None), 41)
    return np.stack([r if r is not None else np.full(width, 1e6) for r in rows]) if rows else np.zeros((0, width))


def farthest_first(x: np.ndarray, rows: Sequence[int], n: int, chosen: Sequence[int]) -> list[int]:
    """Up to ``n`` of ``rows`` (given in priority order): ``rows[0]`` first, then each the row
    farthest from the already ``chosen`` rows and those picked before it (ties: the earlier row)."""
    rows = list(rows)
    if n <= 0 or not rows:
        return []
    picked = [rows[0]]
    centres = list(chosen) + picked
    dist = np.min(np.linalg.norm(x[rows][:, None, :] - x[centres][None, :, :], axis=-1), axis=1)
    dist[0] = -1.0
    while len(picked) < min(n, len(rows)):
        k = int(np.argmax(dist))
        picked.append(rows[k])
        dist = np.minimum(dist, np.linalg.norm(x[rows] - x[rows[k]], axis=1))
        dist[k] = -1.0
        dist[[rows.index(p) for p in picked]] = -1.0
    return picked


def choose(flags: Sequence[dict[str, Any]], desc: np.ndarray, budget: int, audit: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """At most ``budget`` frames to label, in labelling order: ``{"index", "reason"}`` with
    ``reason`` the frame's (``audit`` for the random confident ones)."""
    if budget <= 0:
        return []

    def by_deviation(status: str) -> list[int]:
        rows = [i for i, f in enumerate(flags) if f["status"] == status]
        return sorted(rows, key=lambda i: -flags[i]["max_devi_f"] if np.isfinite(flags[i]["max_devi_f"]) else -np.inf)

    accurate = [i for i, f in enumerate(flags) if f["status"] == "accurate"]
    reserve = min(audit, budget, len(accurate))
    chosen: list[int] = []
    for status in ("failed_sanity", "failed_deviation", "candidate"):
        chosen += farthest_first(desc, by_deviation(status), budget - reserve - len(chosen), chosen)
    picked = [{"index": i, "reason": flags[i]["reason"]} for i in chosen]
    if reserve:
        picked += [{"index": int(i), "reason": "audit"} for i in sorted(rng.choice(accurate, size=reserve, replace=False).tolist())]
    return picked


def counts(flags: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Frames per status, and sanity failures per reason."""
    out: dict[str, Any] = {s: sum(f["status"] == s for f in flags) for s in STATUSES}
    out["sanity_reasons"] = {r: sum(f["status"] == "failed_sanity" and f["reason"] == r for f in flags) for r in REASONS}
    out["failed"] = out["failed_deviation"] + out["failed_sanity"]
    return out


__all__ = ["STATUSES", "choose", "classify", "counts", "descriptors", "farthest_first"]
