"""Equations of state of the ground state and of every competing phase.

Each phase is relaxed at zero pressure (symmetry kept), then its energy is computed on
``config.eos_points`` volumes from ``eos_range[0]`` to ``eos_range[1]`` times that zero-pressure
volume V0. At each volume the internal coordinates and the cell *shape* relax at constant
volume (FrechetCellFilter(constant_volume=True) with FixSymmetry, to :data:`EOS_FMAX` in at
most :data:`EOS_STEPS` steps): c/a of hcp or beta-tin and the free Wyckoff parameters of bc8 or
st12 change under pressure, and isotropic scaling would put those phases on a strained, higher
curve. Volumes are visited outward from V0, each starting from its neighbour's relaxed shape, so
most points take a few steps.

A third-order Birch-Murnaghan equation (ASE's ``EquationOfState(..., eos="birchmurnaghan")``)
is fitted on a separate window of :data:`FIT_POINTS` volumes within ±:data:`FIT_HALF_WIDTH` of V0
(stored with the result, so ASE's fit of those points gives the reported numbers): the wide
70-120 % curve is for spotting spurious minima and comparing shapes, the window near V0 for V0,
B and B'. A window as wide as the curve biases B (by ~0.5 % for Stillinger-Weber silicon) and
fails on potentials whose E-V curve has kinks where a neighbour shell crosses the cutoff.

Curve comparisons use each calculator's own reference: volumes as fractions of its own V0 and
energies relative to its own zero-pressure energy ("aligned minima"), so an error in a0 is
scored once (``a0_A``) and not again by every point of the curve.

A phase exists on its curve only as far as its energy rises away from V0 (:func:`basin`): where
the teacher's energy falls again, the constant-volume relaxation has carried the structure into
another one (7net-0's hcp with a free c/a from 105 % of V0, its beta-tin at 120 %), and an
energy there belongs to that other structure, reached or not within a few optimiser
steps. Fits use only points inside the basin, and a curve is scored over the teacher's basin;
each row's note names the range scored and where the teacher left the phase. Whether a phase
is held is decided by the relaxation, so it is converged tighter than the other relaxations
(:data:`EOS_FMAX`): at the edge of its basin a phase sits on a slope of well under 1 meV/atom
across several % of c/a (7net-0's hcp at 105 % of V0), where a coarser threshold stops the
optimiser before it moves and counts a point on a slope as held. A student whose own phase gives
way inside the teacher's basin is still scored there, and its extra minima are flagged on the
whole range.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from md_validation.properties.common import FAILURES, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.records import PropertyRecord, absolute, errors_note, flag, relative
from md_validation.properties.relax import keep_symmetry, relax, scaled
from md_validation.properties.system import System

SECTION = "eos"
#: most optimiser steps of each constant-volume relaxation on the E-V curve
EOS_STEPS = 100
#: force threshold (eV/Å) of those relaxations (or the config's ``fmax`` where tighter): a phase
#: on a near-flat slope must move, not stop where the force is small
EOS_FMAX = 0.001
#: the Birch-Murnaghan fit uses FIT_POINTS volumes evenly from (1 - FIT_HALF_WIDTH) to (1 + FIT_HALF_WIDTH) x V0
FIT_HALF_WIDTH = 0.06
FIT_POINTS = 7
#: fewest finite points a fit accepts (4 parameters, one to spare)
MIN_FIT_POINTS = 5
#: energy steps smaller than this (eV/atom) are flat when looking for minima (relaxation noise)
CURVE_TOL_eV = 1e-4
#: the figure shows this much (eV/atom) above the highest phase minimum
EOS_PLOT_HEADROOM_eV = 0.6


def phase_names(system: System, config: PropertiesConfig) -> list[str]:
    """The ground state first, then the competing phases (``config.phases`` restricts; empty: all)."""
    others = [n for n in system.phases if n != system.ground and (not config.phases or n in config.phases)]
    return [system.ground, *others]


def fractions(config: PropertiesConfig) -> np.ndarray:
    lo, hi = config.eos_range
    return np.linspace(lo, hi, config.eos_points)


def at_volume(start: Atoms, calc: Calculator, volume: float, fmax: float) -> tuple[float, Atoms | None]:
    """Energy per atom of ``start`` scaled to ``volume`` (Å^3, whole cell), positions and cell
    shape relaxed at that volume; (NaN, None) when the calculator fails."""
    work = scaled(start, volume / start.get_volume())
    work.calc = calc
    try:
        keep_symmetry(work)
        BFGS(FrechetCellFilter(work, constant_volume=True), logfile=None).run(fmax=fmax, steps=EOS_STEPS)
        energy = float(work.get_potential_energy()) / len(work)
    except FAILURES:
        return math.nan, None
    if not math.isfinite(energy):
        return math.nan, None
    work.set_constraint()
    out = work.copy()
    out.calc = None
    return energy, out


def fit_fractions() -> np.ndarray:
    return np.linspace(1.0 - FIT_HALF_WIDTH, 1.0 + FIT_HALF_WIDTH, FIT_POINTS)


def fit_eos(volumes, energies) -> dict[str, Any]:
    """Birch-Murnaghan fit (ASE) of per-atom volumes and energies: V0 (Å^3/atom), E0 (eV/atom),
    B (GPa), B'; ``error`` names why there is no fit (too few points, minimum outside the data)."""
    volumes, energies = np.asarray(volumes, float), np.asarray(energies, float)
    nan = {"V0": math.nan, "E0": math.nan, "B_GPa": math.nan, "Bprime": math.nan}
    finite = np.isfinite(energies) & np.isfinite(volumes)
    if finite.sum() < MIN_FIT_POINTS:
        return nan | {"error": f"only {int(finite.sum())} finite E-V points to fit (need {MIN_FIT_POINTS})"}
    v, e = volumes[finite], energies[finite]
    eos = EquationOfState(v, e, eos="birchmurnaghan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v0, e0, b = eos.fit(warn=False)
        bprime = float(eos.eos_parameters[2])
    except FAILURES as exc:
        return nan | {"error": f"Birch-Murnaghan fit failed: {type(exc).__name__}: {exc}"}
    if not (np.isfinite([v0, e0, b, bprime]).all() and v.min() <= v0 <= v.max() and b > 0):
        return nan | {"error": f"fit minimum V0={v0:.4g} Å^3/atom outside the fitted volumes "
                               f"[{v.min():.4g}, {v.max():.4g}] or B={b:.3g} <= 0"}
    return {"V0": float(v0), "E0": float(e0), "B_GPa": float(b) / units.GPa, "Bprime": bprime, "error": ""}


def phase_curve(calc: Calculator, start: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """One phase: zero-pressure relaxation, E-V curve, fit points and fit (per-atom quantities)."""
    fr, ff = fractions(config), fit_fractions()
    n = len(start)
    r = relax(start, calc, fmax=config.fmax, steps=config.relax_steps)
    nan_curve = [math.nan] * len(fr)
    out: dict[str, Any] = {"natoms": n, "fractions": fr.tolist(), "relaxed_converged": r.converged,
                           "relaxed_energy": r.energy_per_atom, "relaxed_V": r.atoms.get_volume() / n,
                           "volumes": nan_curve, "energies": nan_curve, "fit_fractions": ff.tolist(),
                           "fit_volumes": [math.nan] * len(ff), "fit_energies": [math.nan] * len(ff), "error": ""}
    if r.error or not math.isfinite(r.energy_per_atom):
        out["error"] = f"zero-pressure relaxation failed: {r.error or 'non-finite energy'}"
        out["fit"] = fit_eos([], [])
        return out
    v_cell = r.atoms.get_volume()
    # one walk over both grids, outward from V0, each volume starting from its neighbour's shape
    grid = np.unique(np.round(np.concatenate([fr, ff]), 12))
    energy = np.full(len(grid), math.nan)
    k0 = int(np.argmin(np.abs(grid - 1.0)))
    for order in (range(k0, -1, -1), range(k0 + 1, len(grid))):
        prev = r.atoms
        for k in order:
            energy[k], relaxed = at_volume(prev, calc, grid[k] * v_cell, min(config.fmax, EOS_FMAX))
            if relaxed is not None:
                prev = relaxed

    def on(fracs: np.ndarray) -> np.ndarray:
        return energy[np.searchsorted(grid, np.round(fracs, 12))]

    energies, fit_energies = on(fr), on(ff)
    out["volumes"], out["energies"] = (fr * v_cell / n).tolist(), energies.tolist()
    out["fit_volumes"], out["fit_energies"] = (ff * v_cell / n).tolist(), fit_energies.tolist()
    failed = [f"{f:.3g}" for f, e in zip(grid, energy) if not math.isfinite(e)]
    if failed:
        out["error"] = f"calculator failed at V/V0 = {', '.join(failed)}"
    lo, hi = basin(grid, energy)
    out["basin"] = [lo, hi]
    inside = (ff >= lo - 1e-9) & (ff <= hi + 1e-9)
    out["fit"] = fit_eos(np.asarray(out["fit_volumes"])[inside], fit_energies[inside])
    out["minima"] = curve_minima(fr, energies)
    return out


def curve_minima(fracs, energies, tol: float = CURVE_TOL_eV) -> list[float]:
    """Minima of an E-V curve as V/V0 fractions: interior ones (refined by a parabola through
    the lowest point and its neighbours) and edge ones (a curve still falling at either end
    of the range). Steps below ``tol`` are flat; non-finite points are skipped."""
    f = np.asarray(fracs, float)
    e = np.asarray([num(x) for x in energies])
    keep = np.isfinite(e)
    f, e = f[keep], e[keep]
    if len(e) < 2:
        return []
    steps = np.diff(e)
    sign = np.where(steps > tol, 1, np.where(steps < -tol, -1, 0))
    nonzero = np.flatnonzero(sign)
    if len(nonzero) == 0:
        return []
    minima: list[float] = []
    if sign[nonzero[0]] == 1:  # rising from the low-volume end: still falling toward compression
        minima.append(float(f[0]))
    for a, b in zip(nonzero[:-1], nonzero[1:]):
        if sign[a] == -1 and sign[b] == 1:  # falling run ends, rising run starts: basin in points a+1..b
            i = a + 1 + int(np.argmin(e[a + 1:b + 1]))
            minima.append(_vertex(f, e, i))
    if sign[nonzero[-1]] == -1:  # still falling at the high-volume end
        minima.append(float(f[-1]))
    return minima


def basin(fracs, energies, tol: float = CURVE_TOL_eV) -> tuple[float, float]:
    """The V/V0 range of the phase: outward from the point nearest V0, as far as the energy
    does not fall by more than ``tol`` from one point to the next (non-finite points end it)."""
    f = np.asarray(fracs, float)
    e = np.asarray([num(x) for x in energies])
    k0 = int(np.argmin(np.abs(f - 1.0)))
    if not math.isfinite(e[k0]):
        return float(f[k0]), float(f[k0])
    lo = k0
    while lo > 0 and math.isfinite(e[lo - 1]) and e[lo - 1] >= e[lo] - tol:
        lo -= 1
    hi = k0
    while hi < len(e) - 1 and math.isfinite(e[hi + 1]) and e[hi + 1] >= e[hi] - tol:
        hi += 1
    return float(f[lo]), float(f[hi])


def _vertex(f: np.ndarray, e: np.ndarray, i: int) -> float:
    if i == 0 or i == len(f) - 1:
        return float(f[i])
    c = np.polyfit(f[i - 1:i + 2], e[i - 1:i + 2], 2)
    if c[0] <= 0:
        return float(f[i])
    return float(np.clip(-c[1] / (2 * c[0]), f[i - 1], f[i + 1]))


def _conventional_atoms(atoms: Atoms) -> tuple[int, int]:
    """(space-group number, atoms in the standard conventional cell) of ``atoms``; (0, 0) if unknown."""
    try:
        import spglib

        ds = spglib.get_symmetry_dataset((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers), symprec=1e-3)
    except Exception:  # noqa: BLE001 - no spglib or no symmetry: report V0 instead of a0
        return 0, 0
    if ds is None:
        return 0, 0
    return int(ds.number), int(len(ds.std_types))


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """E-V curves and fits of every phase for one calculator (per-atom; JSON-able)."""
    phases: dict[str, Any] = {}
    for name in phase_names(system, config):
        start = ground if name == system.ground else system.phases[name]
        try:
            phases[name] = phase_curve(calc, start, config)
        except FAILURES as exc:  # anything the per-point guards did not catch: this phase fails, not the report
            phases[name] = {"error": f"{type(exc).__name__}: {exc}", "fractions": fractions(config).tolist(),
                            "energies": [math.nan] * config.eos_points, "volumes": [math.nan] * config.eos_points,
                            "relaxed_energy": math.nan, "relaxed_V": math.nan, "fit": fit_eos([], []), "minima": []}
    g = phases[system.ground]
    number, n_conv = _conventional_atoms(ground)
    cubic = number >= 195 and n_conv > 0
    v0 = num(g["fit"].get("V0"))
    return {"ground": system.ground, "phases": phases, "spacegroup": number, "cubic": cubic,
            "a0_A": (v0 * n_conv) ** (1.0 / 3.0) if cubic and math.isfinite(v0) else math.nan,
            "fit": {"eos": "birchmurnaghan", "half_width": FIT_HALF_WIDTH, "points": FIT_POINTS}}


# ----------------------------------------------------------------------------- comparison


def _relative_curve(entry: dict[str, Any]) -> np.ndarray:
    e = np.array([num(x) for x in entry.get("energies", [])])
    return e - num(entry.get("relaxed_energy"))


def curve_deviation(teacher: dict[str, Any], student: dict[str, Any]) -> tuple[float, str]:
    """Largest |ΔE| (meV/atom) between two aligned curves (own V0, own zero-pressure energy)
    over the teacher's basin of the phase (:func:`basin`), and a note saying which range that
    is; NaN with a reason when the student misses a point there."""
    t, s = _relative_curve(teacher), _relative_curve(student)
    if len(t) == 0 or len(t) != len(s) or not np.isfinite(t).any():
        return math.nan, "teacher curve missing" if not np.isfinite(t).any() else "curves on different grids"
    fr = np.asarray(teacher.get("fractions", []), float)
    if len(fr) != len(t):
        return math.nan, "teacher curve has no volume fractions"
    lo, hi = basin(fr, t)
    have = np.isfinite(t) & (fr >= lo - 1e-9) & (fr <= hi + 1e-9)
    missing = have & ~np.isfinite(s)
    if missing.any():
        return math.nan, f"student has no energy at V/V0 = {', '.join(f'{x:.3g}' for x in fr[missing])}"
    note = f"scored over V/V0 {lo:.3g}-{hi:.3g}"
    left = [f"{x:.3g}" for x, e in zip(fr, t) if np.isfinite(e) and not lo - 1e-9 <= x <= hi + 1e-9]
    if left:
        note += f"; beyond it the teacher's relaxation leaves the phase (its energy falls again; not scored at {', '.join(left)})"
    return float(np.max(np.abs(s[have] - t[have])) * 1000.0), note


def _spurious(t_entry: dict[str, Any], s_entry: dict[str, Any], tol_pct: float) -> tuple[bool | None, bool | None, str]:
    """(teacher_bad, student_bad, note): a student minimum farther than ``tol_pct`` % of V0 from
    every teacher minimum. The teacher is 'bad' when it has no minimum at all (nothing to match)."""
    fr = t_entry.get("fractions") or []
    t_min = curve_minima(fr, t_entry.get("energies", [])) if fr else []
    s_min = curve_minima(s_entry.get("fractions") or fr, s_entry.get("energies", [])) if fr else []
    if not np.isfinite(_relative_curve(s_entry)).any():
        return None, None, "student curve missing"
    if not t_min:
        return None, None, "teacher curve has no minimum to compare with"
    far = [m for m in s_min if min(abs(m - t) for t in t_min) * 100.0 > tol_pct]
    note = (f"student minima at V/V0 = {', '.join(f'{m:.3f}' for m in s_min)}; "
            f"teacher at {', '.join(f'{m:.3f}' for m in t_min)}")
    return False, bool(far), note


def _below_ground(result: dict[str, Any], name: str, margin_meV: float) -> tuple[bool | None, float]:
    """Whether phase ``name``'s lowest energy on its curve (or its relaxed energy) lies more than
    the margin below the ground state's zero-pressure energy; None when it cannot be told."""
    ground = result.get("phases", {}).get(result.get("ground"), {})
    entry = result.get("phases", {}).get(name, {})
    e_ground = num(ground.get("relaxed_energy"))
    values = [num(x) for x in entry.get("energies", [])] + [num(entry.get("relaxed_energy"))]
    values = [v for v in values if math.isfinite(v)]
    if not values or not math.isfinite(e_ground):
        return None, math.nan
    depth = (min(values) - e_ground) * 1000.0
    return depth < -margin_meV, depth


def _flag_row(prop: str, teacher_bad: bool | None, student_bad: bool | None, note: str) -> PropertyRecord:
    if teacher_bad is None or student_bad is None:  # not decidable: a failed calculation fails the row
        return PropertyRecord(SECTION, prop, "flag", None if teacher_bad is None else float(teacher_bad),
                              None if student_bad is None else float(student_bad), None, None, "flag", False,
                              note or "missing data")
    return flag(SECTION, prop, teacher_bad, student_bad, note)


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: a0 (or V0), B, B' of the ground state; V0, B and energy of each other phase;
    curve deviations; spurious-minimum and below-ground flags."""
    tol = tolerances
    ground = teacher.get("ground") or student.get("ground")
    t_ph, s_ph = teacher.get("phases") or {}, student.get("phases") or {}
    names = list(dict.fromkeys([*t_ph, *s_ph]))
    rows: list[PropertyRecord] = []
    tg, sg = t_ph.get(ground, {}), s_ph.get(ground, {})
    tfit, sfit = tg.get("fit") or {}, sg.get("fit") or {}
    note = "; ".join(x for x in (errors_note(tg, sg), errors_note(tfit, sfit)) if x)
    if teacher.get("cubic", False):
        rows.append(relative(SECTION, "a0_A", "Å", num(teacher.get("a0_A")), num(student.get("a0_A")), tol.a0_pct, note))
    else:
        rows.append(relative(SECTION, "V0_A3_per_atom", "Å^3/atom", num(tfit.get("V0")), num(sfit.get("V0")),
                             tol.volume_pct, note))
    rows.append(relative(SECTION, "bulk_modulus_GPa", "GPa", num(tfit.get("B_GPa")), num(sfit.get("B_GPa")),
                         tol.bulk_modulus_pct, note))
    rows.append(absolute(SECTION, "bulk_modulus_derivative", "", num(tfit.get("Bprime")), num(sfit.get("Bprime")),
                         tol.bulk_modulus_derivative, note))
    for name in names:
        t, s = t_ph.get(name, {}), s_ph.get(name, {})
        tf, sf = t.get("fit") or {}, s.get("fit") or {}
        note = "; ".join(x for x in (errors_note(t, s), errors_note(tf, sf)) if x)
        if name != ground:
            rows.append(relative(SECTION, f"V0_{name}_A3_per_atom", "Å^3/atom", num(tf.get("V0")), num(sf.get("V0")),
                                 tol.volume_pct, note))
            rows.append(relative(SECTION, f"bulk_modulus_{name}_GPa", "GPa", num(tf.get("B_GPa")), num(sf.get("B_GPa")),
                                 None, note or "reported, not scored: competing phases can be soft at zero pressure"))
            de_t = (num(t.get("relaxed_energy")) - num(tg.get("relaxed_energy"))) * 1000.0
            de_s = (num(s.get("relaxed_energy")) - num(sg.get("relaxed_energy"))) * 1000.0
            rows.append(absolute(SECTION, f"phase_energy_{name}_meV_per_atom", "meV/atom", de_t, de_s,
                                 tol.phase_energy_meV, note))
        dev, why = curve_deviation(t, s) if t and s else (math.nan, "missing phase")
        if math.isfinite(dev):
            why = f"largest |ΔE| on the V/V0 grid, each curve relative to its own zero-pressure minimum; {why}"
        rows.append(absolute(SECTION, f"eos_curve_{name}_meV", "meV/atom", 0.0, dev, tol.eos_curve_meV, why))
        tb, sb, why = _spurious(t, s, tol.spurious_minimum_volume_pct) if t and s else (None, None, "missing phase")
        rows.append(_flag_row(f"spurious_minimum_{name}", tb, sb, why))
        tb, dt = _below_ground(teacher, name, tol.below_ground_meV)
        sb, ds = _below_ground(student, name, tol.below_ground_meV)
        rows.append(_flag_row(f"below_ground_{name}", tb, sb,
                              f"lowest point vs ground state: teacher {dt:+.1f}, student {ds:+.1f} meV/atom"))
    return rows


# ----------------------------------------------------------------------------- figure


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """E-V curves of every phase, teacher (solid) and student (dashed) overlaid; energies per
    atom relative to each calculator's own ground-state minimum (a constant offset between
    two potentials' energies is meaningless)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from md_validation.properties.plots import no_data
    from md_validation.report import figure_png

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    names = list(dict.fromkeys([*(teacher.get("phases") or {}), *(student.get("phases") or {})]))
    lows: list[float] = []  # the teacher's phase minima set the view; a collapsing student runs off its bottom
    for i, name in enumerate(names):
        for res, style, marker in ((teacher, "-", "o"), (student, "--", "x")):
            entry = (res.get("phases") or {}).get(name)
            ground = (res.get("phases") or {}).get(res.get("ground"), {})
            if not entry:
                continue
            v = np.array([num(x) for x in entry.get("volumes", [])])
            e = (np.array([num(x) for x in entry.get("energies", [])]) - num(ground.get("relaxed_energy")))
            ok = np.isfinite(v) & np.isfinite(e)
            if ok.any():
                if res is teacher:
                    lows.append(float(e[ok].min()))
                ax.plot(v[ok], e[ok], style, marker=marker, ms=4, color=f"C{i % 10}", lw=1.2,
                        label=name if style == "-" else None)
    if lows:  # the compressed ends rise by eV: keep every phase's minimum region readable
        ax.set_ylim(min(min(lows), 0.0) - 0.3, max(lows) + EOS_PLOT_HEADROOM_eV)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("E − E(ground state) (eV/atom)")
    ax.set_title("equations of state")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", ls="-", marker="o", ms=4, label=labels.get("teacher", "teacher")),
                Line2D([], [], color="k", ls="--", marker="x", ms=4, label=labels.get("student", "student"))]
    ax.legend(handles=handles, fontsize=8, ncol=2)
    if not names:
        no_data(ax, "no equation-of-state data")
    return {"eos_curves": figure_png(fig)}
