"""Structure and dynamics of trajectories: bond angles, MSD/diffusion, nearest neighbours, stability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from md_validation.rdf import check_same_atoms, partial_rdfs, rdf_error
from md_validation.units import A2_PER_PS_TO_CM2_PER_S


# -- bond angles -----------------------------------------------------------------------------


def bond_angles(atoms: Atoms, cutoff: float) -> np.ndarray:
    """All angles j-i-k (degrees) between pairs of neighbours j, k of each atom i within ``cutoff``."""
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("iD", atoms, cutoff)
    if not len(i):
        return np.empty(0)
    order = np.argsort(i, kind="stable")
    i, d = i[order], d[order]
    unit = d / np.linalg.norm(d, axis=1)[:, None]
    starts = np.searchsorted(i, np.arange(len(atoms) + 1))
    angles = []
    for a in range(len(atoms)):
        u = unit[starts[a]: starts[a + 1]]
        if len(u) < 2:
            continue
        cos = np.clip(u @ u.T, -1.0, 1.0)
        iu = np.triu_indices(len(u), k=1)
        angles.append(np.degrees(np.arccos(cos[iu])))
    return np.concatenate(angles) if angles else np.empty(0)


def angle_distribution(frames: Sequence[Atoms], cutoff: float, nbins: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Normalised bond-angle distribution (bin centres in degrees, probability density per degree)."""
    edges = np.linspace(0.0, 180.0, nbins + 1)
    hist = np.zeros(nbins)
    for atoms in frames:
        hist += np.histogram(bond_angles(atoms, cutoff), bins=edges)[0]
    total = hist.sum() * (edges[1] - edges[0])
    density = hist / total if total > 0 else hist
    return 0.5 * (edges[1:] + edges[:-1]), density


def distribution_error(p: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    """∫ |p - q| dx of two densities on the same grid (0 identical, 2 disjoint)."""
    return float(np.sum(np.abs(np.asarray(p) - np.asarray(q))) * (x[1] - x[0]))


# -- mean-square displacement ----------------------------------------------------------------


def unwrapped_positions(frames: Sequence[Atoms]) -> np.ndarray:
    """(F, N, 3) positions made continuous across periodic boundaries (minimum-image steps).

    Frames must be close enough in time that no atom moves half a cell between them.
    """
    pos = np.array([f.positions for f in frames], dtype=float)
    if not len(frames) or not frames[0].pbc.any():
        return pos
    cell = frames[0].cell
    out = pos.copy()
    for t in range(1, len(frames)):
        step = cell.scaled_positions(pos[t]) - cell.scaled_positions(pos[t - 1])
        step -= np.round(step) * frames[0].pbc
        out[t] = out[t - 1] + step @ cell.array
    return out


def mean_square_displacement(frames: Sequence[Atoms], max_origins: int = 20, symbol: str | None = None) -> np.ndarray:
    """MSD(lag) in Å², averaged over atoms (those of element ``symbol`` only, when given) and
    over up to ``max_origins`` time origins.

    The displacement of the centre of all atoms is removed first (the frame's drift).
    """
    pos = unwrapped_positions(frames)
    if len(pos) == 0:
        return np.empty(0)
    pos = pos - pos.mean(axis=1, keepdims=True)
    if symbol is not None:
        pos = pos[:, np.asarray(frames[0].get_chemical_symbols()) == symbol]
        if pos.shape[1] == 0:
            raise ValueError(f"no {symbol} atoms in the frames")
    n = len(pos)
    msd = np.zeros(n)
    counts = np.zeros(n)
    origins = np.unique(np.linspace(0, max(n // 2 - 1, 0), min(max_origins, max(n // 2, 1))).astype(int))
    for o in origins:
        disp = pos[o:] - pos[o]
        msd[: n - o] += np.mean(np.sum(disp**2, axis=2), axis=1)
        counts[: n - o] += 1
    return msd / np.maximum(counts, 1)


def diffusion_coefficient(time_ps: np.ndarray, msd: np.ndarray, fit_from: float = 0.5) -> dict[str, float]:
    """D from the Einstein relation, MSD = 6 D t, fitted over the last ``1 - fit_from`` of the lags."""
    t = np.asarray(time_ps, float) - time_ps[0]
    start = int(len(t) * fit_from)
    if len(t) - start < 2:
        return {"D_A2_per_ps": float("nan"), "D_cm2_per_s": float("nan")}
    slope = np.polyfit(t[start:], msd[start:], 1)[0]
    d = slope / 6.0
    return {"D_A2_per_ps": float(d), "D_cm2_per_s": float(d * A2_PER_PS_TO_CM2_PER_S)}


# -- neighbours and stability ----------------------------------------------------------------


def nearest_neighbor_distances(atoms: Atoms, search: float = 6.0) -> np.ndarray:
    """Distance of each atom to its nearest neighbour, own periodic images included (inf when none within ``search`` Å)."""
    from MDAnalysis.lib.distances import self_capped_distance

    nn = np.full(len(atoms), np.inf)
    if atoms.pbc.all() and atoms.cell.rank == 3 and len(atoms) > 1:
        from md_validation.rdf import standard_frame

        pos, cellpar = standard_frame(atoms)  # minimum image, fast C search
        pairs, d = self_capped_distance(pos.astype(np.float32), search, box=cellpar.astype(np.float32))
        if len(d):
            np.minimum.at(nn, pairs[:, 0], d)
            np.minimum.at(nn, pairs[:, 1], d)
        if np.isfinite(nn).all() and nn.max() < 0.5 * _min_width(atoms):
            return nn
    from ase.neighborlist import neighbor_list  # general case: own images, open boundaries

    i, d = neighbor_list("id", atoms, search)
    nn = np.full(len(atoms), np.inf)
    np.minimum.at(nn, i, d)
    return nn


def _min_width(atoms: Atoms) -> float:
    from md_validation.rdf import min_width

    return min_width(atoms.cell.array)


def atom_nearest_neighbors(frames: Sequence[Atoms], max_frames: int = 10) -> np.ndarray:
    """Each atom's mean nearest-neighbour distance (Å) over up to ``max_frames`` evenly spaced
    ``frames`` (inf for an atom with no neighbour within 6 Å in any of them): the per-atom scale of
    the stability criteria. Per atom, because bonds differ even within one element: a DMSO oxygen's
    nearest neighbour is its sulfur at 1.5 Å, a water oxygen's a hydrogen at 1.0 Å."""
    if not frames:
        raise ValueError("atom_nearest_neighbors: no frames")
    check_same_atoms(frames, "atom_nearest_neighbors")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    nn = np.array([nearest_neighbor_distances(frames[k]) for k in picks])
    finite = np.isfinite(nn)
    with np.errstate(invalid="ignore"):
        mean = np.where(finite, nn, 0.0).sum(0) / finite.sum(0)
    return np.where(finite.any(0), mean, np.inf)


def _per_element(symbols: Sequence[str], per_atom: np.ndarray) -> dict[str, float | None]:
    """The mean of the finite per-atom values of each element (None where there is none): for reports."""
    out: dict[str, float | None] = {}
    for el in dict.fromkeys(symbols):
        v = per_atom[np.array(symbols) == el]
        v = v[np.isfinite(v)]
        out[el] = float(v.mean()) if len(v) else None
    return out


@dataclass(frozen=True)
class StabilityCriteria:
    """When a run has left the physical regime (after Fu et al., TMLR 2023).

    - RDF: g(r) over a sliding window of ``window_fs`` differs from the reference by more than
      ``rdf_threshold`` (∫|Δg| dr, Å) — the criterion Fu et al. use for periodic systems;
    - bonds: an atom whose nearest neighbour is closer than ``min_distance_factor`` × its own
      reference nearest-neighbour distance (atoms collapsed onto each other), or farther than
      ``max_nn_factor`` × that distance (atoms flying apart).
    """

    window_fs: float = 500.0
    rdf_threshold: float = 1.5
    min_distance_factor: float = 0.6
    max_nn_factor: float = 1.6
    r_max: float = 6.0
    nbins: int = 120


def stability(
    frames: Sequence[Atoms],
    time_fs: np.ndarray,
    criteria: StabilityCriteria = StabilityCriteria(),
    reference_g: np.ndarray | None = None,
    reference_nn: float | np.ndarray | None = None,
    planned_fs: float | None = None,
    rdf_from_fs: float = 0.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Time until the run leaves the physical regime (``stable_time_ps``) and why.

    ``reference_g`` is a total g(r) on the ``criteria`` grid (the teacher's); without it the run's
    first window is the reference. ``reference_nn`` (Å) is per atom (an array; a number applies to
    every atom; inf: an atom without neighbours, not judged) and defaults to each atom's
    nearest-neighbour distance in the first frame (:func:`atom_nearest_neighbors`). RDF windows
    start ``rdf_from_fs`` after the first frame (skip the equilibration of a start far from
    equilibrium, e.g. a perfect crystal); the distance criteria apply from the first frame on.
    """
    time_fs = np.asarray(time_fs, float)
    n = len(frames)
    out: dict[str, Any] = {"criteria": criteria.__dict__.copy()}
    if n == 0:
        return {**out, "stable": False, "stable_time_ps": 0.0, "reason": "no frames"}
    t0 = time_fs[0]
    check_same_atoms(frames, "stability")
    symbols = frames[0].get_chemical_symbols()
    if reference_nn is None:
        nn0 = atom_nearest_neighbors(frames[:1])
    else:
        nn0 = np.broadcast_to(np.asarray(reference_nn, dtype=float), (len(symbols),)).copy()
        if np.isnan(nn0).any() or (nn0 <= 0).any():
            raise ValueError("stability: reference nearest-neighbour distances must be > 0 (inf for an atom without "
                             "neighbours)")
    judged = np.isfinite(nn0)
    reach = float(nn0[judged].max()) if judged.any() else 1.0  # the search radius covers every judged atom
    first_bad_t, reason = None, None
    min_d, max_nn = [], []
    from tqdm.auto import tqdm

    for f, t in tqdm(list(zip(frames, time_fs)), desc="stability: distances", unit="frame", disable=not progress, leave=False):
        nn = nearest_neighbor_distances(f, search=max(criteria.max_nn_factor * reach + 0.5, 1.0))
        min_d.append(float(nn.min()))
        max_nn.append(float(nn.max()))
        if first_bad_t is None and judged.any():
            ratio = nn[judged] / nn0[judged]
            if (ratio < criteria.min_distance_factor).any():
                first_bad_t, reason = t, f"atoms closer than {criteria.min_distance_factor:g} × their reference nearest-neighbour distance"
            elif (ratio > criteria.max_nn_factor).any():
                i = int(np.flatnonzero(judged)[np.argmax(ratio)])
                first_bad_t, reason = t, (f"an atom's nearest neighbour beyond {criteria.max_nn_factor:g} × its reference "
                                          f"nearest-neighbour distance (atom {i}, {symbols[i]}, {nn0[i]:.2f} Å)")
    out["min_distance_A"] = min_d
    out["max_nn_distance_A"] = max_nn
    out["reference_nn_A"] = _per_element(symbols, nn0)
    out["reference_nn_per_atom_A"] = [float(x) if np.isfinite(x) else None for x in nn0]
    # RDF over sliding windows (half-window stride)
    dt = float(np.median(np.diff(time_fs))) if n > 1 else 1.0
    w = max(2, int(round(criteria.window_fs / dt)))
    first = int(np.searchsorted(time_fs - t0, rdf_from_fs - 1e-9))
    if n - first < w:  # too short after equilibration: use the last full window
        first = max(0, n - w)
    starts = list(range(first, max(n - w, first) + 1, max(1, w // 2))) if n >= 2 else []
    win_t, win_err = [], []
    ref = reference_g
    for s in tqdm(starts, desc="stability: RDF windows", unit="window", disable=not progress, leave=False):
        window = frames[s: s + w]
        res = partial_rdfs(window, criteria.r_max, criteria.nbins, pairs=[("*", "*")])
        g = res.g["all"]
        if ref is None:
            ref = g
        err = rdf_error(g, ref, res.r)["integral"]
        win_t.append(float(time_fs[s] - t0) / 1000.0)
        win_err.append(err)
        if err > criteria.rdf_threshold and (first_bad_t is None or time_fs[s] < first_bad_t):
            first_bad_t, reason = time_fs[s], f"RDF error over a {criteria.window_fs:g} fs window > {criteria.rdf_threshold:g}"
    out["window_time_ps"] = win_t
    out["window_rdf_error"] = win_err
    end = planned_fs if planned_fs is not None else (time_fs[-1] - t0)
    if first_bad_t is None:
        stable_fs = max(end, time_fs[-1] - t0)
        complete = planned_fs is None or time_fs[-1] - t0 >= planned_fs - 1e-6
        out.update(stable=bool(complete), stable_time_ps=float(stable_fs) / 1000.0,
                   reason=None if complete else "run stopped early")
        if not complete:
            out["stable_time_ps"] = float(time_fs[-1] - t0) / 1000.0
    else:
        out.update(stable=False, stable_time_ps=float(first_bad_t - t0) / 1000.0, reason=reason)
    return out
