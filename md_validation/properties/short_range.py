"""Short range: energy and bond force of every element pair's dimer, and of one nearest-neighbour
pair inside the crystal pushed together, from :data:`R_MIN` Å outwards.

A potential fit to crystals and liquids rarely sees two atoms closer than ~0.8 of a bond, and
a machine-learned one may do anything there: bind, flatten out or turn attractive. MD at high
temperature or a tight defect start finds such a hole and collapses into it.

Dimers: for each unordered element pair (A, B) of the system, A-A included, two atoms in a
non-periodic box (:data:`BOX_A` Å) at every distance of a fixed grid, :data:`R_MIN` to
:data:`R_MAX` Å in steps of :data:`R_STEP` (the same grid for every calculator: curves compare
point by point). E(r) is relative to the same pair :data:`R_FAR` Å apart (the isolated atoms:
beyond any potential's cutoff). The bond force F(r) is the force on atom B projected on the unit
vector from A to B: positive is repulsive; for a consistent calculator F = -dE/dr.

Crystal close pair: the calculator's own relaxed ground state repeated to about
``config.supercell_atoms`` atoms. For each element pair that occurs as a nearest-neighbour bond,
atom i is the first atom with a neighbour of the pair's other species in its first shell
(within :data:`SHELL_TOL` x its nearest distance) and j the nearest such neighbour, d1 = |r_ij|
the calculator's bulk bond. j is moved along the bond towards i, to every grid distance below
d1, all other atoms fixed (a rigid push, never relaxed: it probes the repulsive wall, not a
defect's energy). E(r) is relative to the perfect crystal (r = d1); F(r) is the force on j
projected on the unit vector from i to j.

Checks. A curve is clean on a stretch of grid points when it is repulsive there (F >=
-:data:`F_TOL` eV/Å) and monotonic (E never rises with r by more than :data:`E_TOL` eV from one
point to the next, no point refused). The wall is checked below r_check, the teacher's: its d1
for the crystal; for a dimer, its bond (lowest E at r >= :data:`DIMER_SEARCH_FRACTION` x the sum
of the covalent radii) less :data:`DIMER_MARGIN_A`. A free dimer's bond is shorter than the
crystal's, so attraction between the two is physics, and a student whose dimer bond is a
little shorter than the teacher's has a dimer error (the unscored bond-length row), not a hole
in its wall. Teachers are not clean all the way down either (SevenNet-0 binds Si2 by 3800 eV
at 0.5 Å and is non-monotonic around 1.1 Å; nothing in its training set is that close), so a
student is held to the teacher's clean stretch only: from r_check down to where the teacher's
own curve first fails (the ``wall_clean_down_to`` rows give that extent for both). On that
stretch, one :func:`records.flag` row each:

- ``attractive``: a bond force below -F_TOL;
- ``nonmonotonic``: E rising with r by more than E_TOL, or a point the calculator refused (NaN).

A teacher that fails right below r_check has the problem itself, and the rows pass. Energies at
fixed distances, the dimer bond length, binding energy and lowest energy anywhere on the grid
are reported without a tolerance: far from equilibrium a teacher is itself only qualitatively
right, so only the shape of the wall is scored.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, covalent_radii

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.recipes import diagonal_repeats
from md_validation.properties.records import PropertyRecord, absolute, errors_note, flag, unavailable
from md_validation.properties.system import System

SECTION = "short_range"
#: shortest distance probed (Å): closer than any MD reaches, well above the 0.1 Å the mlffd
#: calculator refuses as overlapping atoms
R_MIN = 0.5
#: longest dimer distance (Å): past the ~5-6 Å cutoff of the machine-learned potentials
R_MAX = 6.0
#: grid step (Å): resolves a dimer minimum to a few hundredths of an Å at ~110 two-atom calls
R_STEP = 0.05
#: the isolated atoms (Å): energies of a dimer are relative to the pair this far apart
R_FAR = 12.0
#: edge of the cubic non-periodic box of a dimer (Å); some calculators want a cell of rank 3
BOX_A = 2.0 * R_FAR + 10.0
#: a bond force below -F_TOL (eV/Å) inside the wall is attraction (looser: numerical noise of a
#: float32 model's forces is ~1e-3 eV/Å)
F_TOL = 0.1
#: E rising with r by more than this (eV) between grid points inside the wall is non-monotonic
E_TOL = 0.01
#: dimers are checked below the teacher's dimer bond minus this (Å); see the module docstring
DIMER_MARGIN_A = 0.2
#: a dimer's bond is looked for at r >= this x the sum of the covalent radii: real bonds are
#: >= 0.75 of it (N2's triple bond: 0.77), so a lower minimum is an artifact of the wall
DIMER_SEARCH_FRACTION = 0.6
#: neighbours within this factor of an atom's nearest distance are its first shell
SHELL_TOL = 1.05
#: distances (Å) at which energies are reported (not scored)
REPORT_DIMER_A = (1.0, 1.5)
REPORT_CRYSTAL_A = (1.0,)


def grid() -> np.ndarray:
    """The distances of every curve (Å), :data:`R_MIN` to :data:`R_MAX` inclusive."""
    n = int(round((R_MAX - R_MIN) / R_STEP))
    return np.round(R_MIN + R_STEP * np.arange(n + 1), 6)


def pair_label(a: str, b: str) -> str:
    """``A-B`` with the symbols in alphabetical order (``Si-Si``, ``As-Ga``)."""
    return "-".join(sorted((a, b)))


def _arr(values: Any) -> np.ndarray:
    return np.array([num(v) for v in (values or [])], dtype=float)


def energy_and_bond_force(atoms: Atoms, calc: Calculator, i: int, j: int) -> tuple[float, float, str]:
    """Energy (eV) of ``atoms`` and the force on ``j`` along the unit vector from ``i`` to ``j``
    (eV/Å, minimum image); NaN and the reason when the calculator refuses the structure."""
    work = atoms.copy()
    work.calc = calc
    try:
        e = float(work.get_potential_energy())
        f = np.asarray(work.get_forces(), float)[j]
    except FAILURES as exc:
        return math.nan, math.nan, error_text(exc)
    d = work.get_distance(i, j, mic=True, vector=True)
    fb = float(f @ d / np.linalg.norm(d))
    if not (math.isfinite(e) and math.isfinite(fb)):
        return math.nan, math.nan, "non-finite energy or force"
    return e, fb, ""


def _scan(calc: Calculator, structures: Iterator[tuple[float, Atoms]], i: int, j: int,
          reference: float) -> tuple[list[float], list[float], int, str]:
    """Energy minus ``reference`` (eV) and bond force (eV/Å, :func:`energy_and_bond_force`) of each
    ``(r, atoms)`` of ``structures``; how many points failed, and the first failure."""
    energies, forces, errors = [], [], []
    for r, atoms in structures:
        e, f, reason = energy_and_bond_force(atoms, calc, i, j)
        energies.append(e - reference)
        forces.append(f)
        if reason:
            errors.append(f"{r:g} Å: {reason}")
    n_failed = int(sum(not math.isfinite(e) for e in energies))
    return energies, forces, n_failed, (f"{n_failed} point(s) failed, first at {errors[0]}" if errors else "")


def dimer_curve(calc: Calculator, a: str, b: str, distances: np.ndarray) -> dict[str, Any]:
    """E(r) - E(:data:`R_FAR`) and the bond force of the dimer ``a``-``b`` at ``distances``."""
    atoms = Atoms([a, b], positions=[[0.0, 0.0, 0.0], [0.0, 0.0, R_FAR]], cell=[BOX_A] * 3, pbc=False)
    atoms.positions += 0.5 * BOX_A - np.array([0.0, 0.0, 0.5 * R_FAR])
    e_far, _, why = energy_and_bond_force(atoms, calc, 0, 1)

    def stretched():
        for r in distances:
            atoms.positions[1] = atoms.positions[0] + [0.0, 0.0, float(r)]
            yield r, atoms

    energies, forces, n_failed, failures = _scan(calc, stretched(), 0, 1, e_far)
    error = f"the atoms {R_FAR:g} Å apart: {why}" if why else ""
    return {"energy_eV": energies, "force_eV_A": forces, "e_far_eV": e_far, "failed": n_failed,
            "error": error or failures}


def close_pairs(supercell: Atoms) -> dict[str, tuple[int, int]]:
    """Pair label -> (i, j): for each element pair bonded in some atom's first shell, the first
    such atom i and its nearest neighbour j of the pair's other species."""
    dist = supercell.get_all_distances(mic=True)
    np.fill_diagonal(dist, np.inf)
    symbols = supercell.get_chemical_symbols()
    found: dict[str, tuple[int, int]] = {}
    for i in range(len(supercell)):
        shell = np.flatnonzero(dist[i] <= SHELL_TOL * dist[i].min())
        for j in sorted(shell.tolist(), key=lambda k: (dist[i, k], k)):
            label = pair_label(symbols[i], symbols[j])
            if label not in found:
                found[label] = (i, int(j))
    return dict(sorted(found.items()))


def crystal_curve(calc: Calculator, supercell: Atoms, i: int, j: int, distances: np.ndarray) -> dict[str, Any]:
    """E(r) - E(d1) and the bond force on ``j`` as ``j`` is pushed towards ``i`` to each of
    ``distances`` below the bulk bond d1 (others fixed)."""
    u = supercell.get_distance(i, j, mic=True, vector=True)
    d1 = float(np.linalg.norm(u))
    u = u / d1
    e_bulk, f_bulk, why = energy_and_bond_force(supercell, calc, i, j)
    r_points = [float(r) for r in distances if r < d1 - 1e-6]

    def pushed():
        for r in r_points:
            atoms = supercell.copy()
            atoms.positions[j] = supercell.positions[i] + r * u
            yield r, atoms

    energies, forces, n_failed, failures = _scan(calc, pushed(), i, j, e_bulk)
    error = f"the perfect crystal: {why}" if why else ""
    return {"r_A": r_points, "energy_eV": energies, "force_eV_A": forces, "d1_A": d1, "force_at_d1_eV_A": f_bulk,
            "pair": [int(i), int(j)], "natoms": len(supercell), "failed": n_failed, "error": error or failures}


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Dimer curves of every element pair and close-pair curves of the crystal for one calculator."""
    r = grid()
    elements = sorted(set(system.elements) | set(ground.get_chemical_symbols()))
    out: dict[str, Any] = {"grid_A": r.tolist(), "r_far_A": R_FAR, "dimers": {}, "crystal": {}, "error": ""}
    for n, a in enumerate(elements):
        for b in elements[n:]:
            out["dimers"][pair_label(a, b)] = dimer_curve(calc, a, b, r)
    try:
        supercell = ground.repeat(diagonal_repeats(ground, config.supercell_atoms))
        pairs = close_pairs(supercell)
    except FAILURES as exc:
        out["error"] = f"crystal close pairs: {error_text(exc)}"
        return out
    for label, (i, j) in pairs.items():
        out["crystal"][label] = crystal_curve(calc, supercell, i, j, r)
    return out


# ----------------------------------------------------------------------------- comparison


def search_floor(label: str) -> float:
    """Shortest distance (Å) at which a dimer's bond is looked for: :data:`DIMER_SEARCH_FRACTION`
    x the sum of the two covalent radii."""
    a, b = label.split("-")
    return DIMER_SEARCH_FRACTION * float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


def dimer_minimum(r: np.ndarray, e: np.ndarray, floor: float = R_MIN) -> tuple[float, float, float]:
    """(grid point of the lowest energy at r >= ``floor``, bond length refined by a parabola
    through it and its neighbours, that energy); NaNs when no point there is finite."""
    ok = np.isfinite(e) & (r >= floor - 1e-9)
    if not ok.any():
        return math.nan, math.nan, math.nan
    k = int(np.nanargmin(np.where(ok, e, np.nan)))
    r_grid, e_min, r_fit = float(r[k]), float(e[k]), float(r[k])
    if 0 < k < len(r) - 1 and np.isfinite(e[k - 1 : k + 2]).all():
        denom = e[k - 1] - 2 * e[k] + e[k + 1]
        if denom > 0:
            r_fit = float(r[k] + 0.5 * (r[1] - r[0]) * (e[k - 1] - e[k + 1]) / denom)
    return r_grid, r_fit, e_min


def clean_from(r: np.ndarray, e: np.ndarray, f: np.ndarray, r_check: float) -> float:
    """Smallest r (Å) such that the curve is repulsive (F >= -:data:`F_TOL`) and monotonic (E
    rising with r by at most :data:`E_TOL`) on every grid point from there up to ``r_check``;
    ``r_check`` itself when already the first point below it fails; NaN without data."""
    below = [int(k) for k in np.argsort(-r) if r[k] < r_check - 1e-9]
    if not below or not math.isfinite(r_check):
        return math.nan
    lo, outer = r_check, None
    for k in below:
        ok = math.isfinite(e[k]) and math.isfinite(f[k]) and f[k] >= -F_TOL
        if ok and outer is not None:
            ok = e[outer] - e[k] <= E_TOL
        if not ok:
            break
        lo, outer = float(r[k]), k
    return lo


def wall_problems(r: np.ndarray, e: np.ndarray, f: np.ndarray, lo: float, hi: float) -> dict[str, Any]:
    """Attraction and non-monotonic energy on the grid points in [``lo``, ``hi``): flags and the worst values."""
    inside = (r >= lo - 1e-9) & (r < hi - 1e-9)
    ri, ei, fi = r[inside], e[inside], f[inside]
    missing = int((~(np.isfinite(ei) & np.isfinite(fi))).sum())
    rises = np.diff(ei)
    ok_f, ok_rise = np.isfinite(fi), np.isfinite(rises)
    return {"attractive": bool((fi[ok_f] < -F_TOL).any()), "nonmonotonic": bool((rises[ok_rise] > E_TOL).any() or missing),
            "min_force": float(fi[ok_f].min()) if ok_f.any() else math.nan,
            "r_min_force": float(ri[ok_f][np.argmin(fi[ok_f])]) if ok_f.any() else math.nan,
            "max_rise": float(rises[ok_rise].max()) if ok_rise.any() else math.nan,
            "r_max_rise": float(ri[:-1][ok_rise][np.argmax(rises[ok_rise])]) if ok_rise.any() else math.nan,
            "missing": missing, "points": int(inside.sum())}


def _describe(who: str, p: dict[str, Any]) -> str:
    parts = [f"most attractive {p['min_force']:+.3g} eV/Å at {p['r_min_force']:g} Å" if math.isfinite(p["min_force"])
             else "no finite force"]
    if math.isfinite(p["max_rise"]) and p["max_rise"] > E_TOL:
        parts.append(f"E rises {p['max_rise']:.3g} eV after {p['r_max_rise']:g} Å")
    if p["missing"]:
        parts.append(f"{p['missing']} value(s) missing")
    return f"{who}: " + ", ".join(parts)


def _curve(res: dict[str, Any], kind: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(r, E, F, entry) of one curve of a result (``kind``: "dimers" or "crystal"), grid points only."""
    entry = (res.get(kind) or {}).get(label) or {}
    e, f = _arr(entry.get("energy_eV")), _arr(entry.get("force_eV_A"))
    r = _arr(res.get("grid_A")) if kind == "dimers" else _arr(entry.get("r_A"))
    n = min(len(r), len(e), len(f))
    return r[:n], e[:n], f[:n], entry


def checked_region(teacher: dict[str, Any], kind: str, label: str) -> tuple[float, float]:
    """(lo, r_check): the stretch of the wall where students are checked; see the module docstring."""
    r, e, f, entry = _curve(teacher, kind, label)
    if kind == "dimers":
        r_check = dimer_minimum(r, e, search_floor(label))[0] - DIMER_MARGIN_A
    else:
        r_check = num(entry.get("d1_A"))
    return clean_from(r, e, f, r_check), r_check


def _at(r: np.ndarray, e: np.ndarray, where: float) -> float:
    k = np.flatnonzero(np.abs(r - where) < 1e-6)
    return float(e[k[0]]) if len(k) else math.nan


def _flags(prop: str, teacher: dict[str, Any], student: dict[str, Any], kind: str, label: str,
           note: str) -> list[PropertyRecord]:
    """The attractive and nonmonotonic rows of one curve and the unscored extent of each
    calculator's clean wall; failing rows when there is nothing to decide on."""
    tr, te, tf, _ = _curve(teacher, kind, label)
    sr, se, sf, _ = _curve(student, kind, label)
    lo, r_check = checked_region(teacher, kind, label)
    where = "dimer" if kind == "dimers" else "crystal pair pushed rigidly"
    if not math.isfinite(lo) or len(sr) == 0:
        who = "teacher" if not math.isfinite(lo) else "student"
        why = "; ".join(x for x in (note, f"no {where} curve to check for the {who}") if x)
        return [unavailable(SECTION, f"short_range_{k}_{prop}", why) for k in ("attractive", "nonmonotonic")]
    s_clean = clean_from(sr, se, sf, r_check)
    parts = [f"{where}, checked on {lo:.3g}-{r_check:.3g} Å"]
    if lo >= r_check:  # the teacher fails right below r_check: it has the problem, nothing to hold a student to
        t = wall_problems(tr, te, tf, R_MIN, r_check)
        s = wall_problems(sr, se, sf, R_MIN, r_check)
        parts += ["the teacher is not repulsive and monotonic even just below the bond", _describe("teacher", t)]
    else:
        t = wall_problems(tr, te, tf, lo, r_check)
        s = wall_problems(sr, se, sf, lo, r_check)
        parts.append("where the teacher's wall is repulsive and monotonic")
        if lo > float(np.min(tr)) + 1e-9:
            parts.append(_describe(f"below {lo:g} Å the teacher itself", wall_problems(tr, te, tf, R_MIN, lo)))
    parts += [_describe("student", s), note]
    details = "; ".join(x for x in parts if x)
    return [flag(SECTION, f"short_range_attractive_{prop}", t["attractive"], s["attractive"],
                 f"bond force < -{F_TOL:g} eV/Å; {details}"),
            flag(SECTION, f"short_range_nonmonotonic_{prop}", t["nonmonotonic"], s["nonmonotonic"],
                 f"E rising with r by > {E_TOL:g} eV, or a failed point; {details}"),
            absolute(SECTION, f"wall_clean_down_to_{prop}_A", "Å", lo, s_clean, None,
                     f"each curve repulsive and monotonic from here up to {r_check:.3g} Å")]


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Flag rows (attractive, nonmonotonic) of every dimer and crystal close pair; energies at
    fixed distances, dimer bond lengths, binding and lowest energies, the extent of each clean
    wall (not scored)."""
    rows: list[PropertyRecord] = []
    td, sd = teacher.get("dimers") or {}, student.get("dimers") or {}
    for label in dict.fromkeys([*td, *sd]):
        tr, te, _, t = _curve(teacher, "dimers", label)
        sr, se, _, s = _curve(student, "dimers", label)
        rows += _flags(label, teacher, student, "dimers", label, errors_note(t, s))
        for where in REPORT_DIMER_A:
            rows.append(absolute(SECTION, f"dimer_energy_{label}_{where:.1f}A_eV", "eV", _at(tr, te, where),
                                 _at(sr, se, where), None, f"E(r) - E({R_FAR:g} Å)"))
        floor = search_floor(label)
        (_, t_bond, t_e), (_, s_bond, s_e) = dimer_minimum(tr, te, floor), dimer_minimum(sr, se, floor)
        rows.append(absolute(SECTION, f"dimer_bond_length_{label}_A", "Å", t_bond, s_bond, None,
                             f"lowest E(r) at r >= {floor:.3g} Å, refined by a parabola"))
        rows.append(absolute(SECTION, f"dimer_binding_energy_{label}_eV", "eV", -t_e, -s_e, None,
                             f"E({R_FAR:g} Å) - E(bond): positive when bound"))
        (t_r, _, t_low), (s_r, _, s_low) = dimer_minimum(tr, te), dimer_minimum(sr, se)
        rows.append(absolute(SECTION, f"dimer_lowest_energy_{label}_eV", "eV", t_low, s_low, None,
                             f"lowest E(r) - E({R_FAR:g} Å) on the whole grid: teacher at {t_r:g} Å, student at {s_r:g} Å"))
    tc, sc = teacher.get("crystal") or {}, student.get("crystal") or {}
    for label in dict.fromkeys([*tc, *sc]):
        tr, te, _, t = _curve(teacher, "crystal", label)
        sr, se, _, s = _curve(student, "crystal", label)
        note = errors_note(t, s)
        if label not in tc or label not in sc:
            who = "teacher" if label not in tc else "student"
            note = "; ".join(x for x in (note, f"not a nearest-neighbour pair for the {who}") if x)
        rows += _flags(f"{label}_crystal", teacher, student, "crystal", label, note)
        for where in REPORT_CRYSTAL_A:
            rows.append(absolute(SECTION, f"crystal_pair_energy_{label}_{where:.1f}A_eV", "eV", _at(tr, te, where),
                                 _at(sr, se, where), None, "E(r) - E(perfect crystal), one neighbour pushed, others fixed"))
    errors = errors_note(teacher, student)
    if errors or not rows:
        rows.append(unavailable(SECTION, "short_range", errors or "no short-range results"))
    return rows


# ----------------------------------------------------------------------------- figure


def _symlog_view(ax: Any, values: np.ndarray, floor: float) -> None:
    """Symmetric-log y axis fitted to ``values`` (the teacher's, on its trusted part): linear
    within ±2x its deepest negative value (at least ``floor``), so the well is readable and the
    steep wall fits; a curve beyond the view runs off it instead of rescaling the rest away."""
    v = values[np.isfinite(values)]
    if not len(v):
        return
    lin = max(floor, 2.0 * abs(min(float(v.min()), 0.0)))
    ax.set_yscale("symlog", linthresh=lin)
    lo, hi = float(v.min()), float(v.max())
    ax.set_ylim(lo - 2.0 * lin, hi * 2.0 if hi > lin else hi + 0.5 * lin)  # room to see a curve dive below zero


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Per pair: E(r) (top) and F(r) (bottom) of the dimer (left) and the crystal close pair
    (right), teacher solid, student dashed, the checked region shaded; the view follows the
    teacher from the start of the checked region outwards."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import COLORS, no_data
    from md_validation.report import figure_png

    out: dict[str, bytes] = {}
    names = list(dict.fromkeys([*(teacher.get("dimers") or {}), *(student.get("dimers") or {}),
                                *(teacher.get("crystal") or {}), *(student.get("crystal") or {})]))
    for label in names:
        fig = Figure(figsize=(10.0, 7.0), layout="constrained")
        axes = fig.subplots(2, 2, sharex="col")
        for col, kind in enumerate(("dimers", "crystal")):
            ax_e, ax_f = axes[0, col], axes[1, col]
            lo, r_check = checked_region(teacher, kind, label)
            for role, res, style in (("teacher", teacher, "-"), ("student", student, "--")):
                r, e, f, entry = _curve(res, kind, label)
                if kind == "crystal" and len(r) and math.isfinite(num(entry.get("d1_A"))):  # the perfect crystal's point
                    r, e, f = (np.append(r, entry["d1_A"]), np.append(e, 0.0),
                               np.append(f, num(entry.get("force_at_d1_eV_A"))))
                if not len(r):
                    continue
                failed = int(entry.get("failed") or 0)
                name = labels.get(role, role) + (f" ({failed} failed)" if failed else "")
                color = COLORS[role]
                ax_e.plot(r, e, style, color=color, lw=1.3, label=name)
                ax_f.plot(r, f, style, color=color, lw=1.3, label=name)
                if role == "teacher":
                    trusted = r >= (lo if math.isfinite(lo) else R_MIN) - 1e-9
                    _symlog_view(ax_e, e[trusted], 0.05)
                    _symlog_view(ax_f, f[trusted], 0.1)
            for ax in (ax_e, ax_f):
                ax.axhline(0.0, color="0.7", lw=0.6)
                if math.isfinite(lo) and lo < r_check:
                    ax.axvspan(lo, r_check, color="0.9", zorder=0)
                if math.isfinite(r_check):
                    ax.axvline(r_check, color="0.4", ls=":", lw=1.0)
                if not _curve(teacher, kind, label)[0].size and not _curve(student, kind, label)[0].size:
                    no_data(ax, "no data")
            ax_e.set_title(f"{label} dimer" if kind == "dimers" else f"{label} pair in the crystal (rigid push)", fontsize=10)
            ax_e.set_ylabel("E(r) − E(reference) (eV)")
            ax_f.set_ylabel("bond force (eV/Å, + repulsive)")
            ax_f.set_xlabel("r (Å)")
            ax_e.legend(fontsize=8)
        fig.suptitle(f"short range {label}: shaded = checked region (the teacher's clean wall), dotted = its outer edge",
                     fontsize=10)
        out[f"short_range_{label}"] = figure_png(fig)
    return out
