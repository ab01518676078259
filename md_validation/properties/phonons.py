"""Phonons of the relaxed ground state: dispersion along the standard high-symmetry path, the
density of states, and the frequencies at the high-symmetry points, all with phonopy.

Finite displacements (phonopy, :data:`DISPLACEMENT` Å) in a diagonal supercell of the ground
cell with about ``config.supercell_atoms`` atoms; phonopy finds the primitive cell
(``primitive_matrix='auto'``) and builds the force constants, symmetrized (index permutation
and translational invariance) so that noise in a student's forces does not open a gap at Γ.

The path is ASE's ``Cell.bandpath()`` of phonopy's primitive cell (Setyawan-Curtarolo labels,
special points in that cell's reciprocal basis, which is phonopy's q basis): phonopy's own
automatic path needs seekpath, an extra dependency, and ASE's labels are the ones the rest of
the report uses. The DOS is phonopy's tetrahedron DOS on a :data:`MESH_LENGTH` mesh.

Frequencies at each special point are sorted and degenerate ones merged: key
``phonon_<point>_<k>_THz`` is the k-th distinct level (1-based, ascending; ``Gamma`` for Γ). The
teacher's degeneracy groups define the levels for both calculators, so a student that splits
a degenerate level slightly is scored on the mean of the same modes, not on shifted keys.
Imaginary frequencies are negative numbers (phonopy's convention).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.recipes import diagonal_repeats
from md_validation.properties.records import PropertyRecord, absolute, errors_note, flag, looser, unavailable
from md_validation.properties.system import System

SECTION = "phonons"
#: finite displacement (Å): phonopy's default for VASP, small enough for harmonic forces
DISPLACEMENT = 0.01
#: symmetry tolerance (Å) for phonopy's primitive cell and displacements: relaxed cells carry
#: ~1e-5 Å noise, which phonopy's default 1e-5 would read as broken symmetry
SYMPREC = 1e-3
#: q points per path segment
SEGMENT_POINTS = 51
#: phonopy mesh "length" (Å) of the DOS q mesh (about 20x20x20 for silicon's primitive cell)
MESH_LENGTH = 60.0
#: frequencies closer than this (THz) at a special point are one degenerate level
DEGENERACY_THz = 0.02
#: a frequency below -IMAGINARY_THz is an imaginary mode (small negatives near Γ are numerical)
IMAGINARY_THz = 0.1


def _label(name: str) -> str:
    return "Gamma" if name == "G" else name


def _phonopy(ground: Atoms, repeats: tuple[int, int, int]):
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=ground.get_chemical_symbols(), cell=ground.cell.array,
                        scaled_positions=ground.get_scaled_positions(), masses=ground.get_masses())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # phonopy notes that 'auto' differs from its old default
        return Phonopy(unit, supercell_matrix=np.diag(repeats), primitive_matrix="auto", symprec=SYMPREC)


def _forces(phonon, calc: Calculator) -> np.ndarray:
    """Forces (eV/Å) on every displaced supercell of ``phonon``."""
    out = []
    for cell in phonon.supercells_with_displacements:
        atoms = Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        atoms.calc = calc
        f = np.asarray(atoms.get_forces(), float)
        if not np.isfinite(f).all():
            raise FloatingPointError("non-finite forces on a displaced supercell")
        out.append(f)
    return np.array(out)


def band_path(primitive_cell: np.ndarray) -> tuple[list[list[str]], dict[str, list[float]]]:
    """ASE's standard path of ``primitive_cell``: continuous pieces of special-point labels and
    each point's coordinates in that cell's reciprocal basis."""
    from ase.cell import Cell
    from ase.dft.kpoints import parse_path_string

    bp = Cell(primitive_cell).bandpath(npoints=0)
    pieces = parse_path_string(bp.path)
    return pieces, {k: [float(x) for x in v] for k, v in bp.special_points.items()}


def degeneracy_groups(freqs: list[float], tol: float = DEGENERACY_THz) -> list[int]:
    """Sizes of the runs of sorted ``freqs`` whose neighbours are within ``tol``."""
    groups: list[int] = []
    prev = None
    for f in np.sort(np.array([num(x) for x in freqs], float)):  # NaN last, each its own group
        if prev is not None and abs(f - prev) <= tol:
            groups[-1] += 1
        else:
            groups.append(1)
        prev = f
    return groups


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Dispersion, DOS and special-point frequencies (THz) of ``ground`` for one calculator."""
    repeats = diagonal_repeats(ground, config.supercell_atoms)
    out: dict[str, Any] = {"repeats": list(repeats), "supercell_atoms": len(ground) * int(np.prod(repeats)),
                           "displacement_A": DISPLACEMENT, "error": "", "points": {}, "groups": {}, "segments": [],
                           "dos": {"frequency_THz": [], "dos": []}, "min_frequency_THz": math.nan,
                           "imaginary_fraction": math.nan}
    try:
        phonon = _phonopy(ground, repeats)
        out["primitive_atoms"] = len(phonon.primitive)
        phonon.generate_displacements(distance=DISPLACEMENT)
        out["displacements"] = len(phonon.supercells_with_displacements)
        phonon.forces = _forces(phonon, calc)
        phonon.produce_force_constants()
        phonon.symmetrize_force_constants()
        pieces, special = band_path(np.asarray(phonon.primitive.cell))
        out["path"] = [[_label(x) for x in piece] for piece in pieces]
        names = list(dict.fromkeys(x for piece in pieces for x in piece))
        phonon.run_qpoints([special[name] for name in names])
        for name, freqs in zip(names, phonon.qpoints.frequencies):
            f = sorted(float(x) for x in freqs)
            out["points"][_label(name)] = {"q": special[name], "frequencies_THz": f}
            out["groups"][_label(name)] = degeneracy_groups(f)
        from phonopy.phonon.band_structure import get_band_qpoints

        bands = [[special[x] for x in piece] for piece in pieces]
        qpoints = get_band_qpoints(bands, npoints=SEGMENT_POINTS)
        phonon.run_band_structure(qpoints)
        bs = phonon.band_structure
        ends = [(_label(a), _label(b)) for piece in pieces for a, b in zip(piece[:-1], piece[1:])]
        for (a, b), d, f in zip(ends, bs.distances, bs.frequencies):
            out["segments"].append({"from": a, "to": b, "distance": np.asarray(d).tolist(),
                                    "frequencies_THz": np.asarray(f).tolist()})
        phonon.run_mesh(MESH_LENGTH)
        mesh = np.asarray(phonon.mesh.frequencies)
        phonon.run_total_dos()
        dos = phonon.total_dos
        out["dos"] = {"frequency_THz": np.asarray(dos.frequency_points).tolist(), "dos": np.asarray(dos.dos).tolist()}
        everything = np.concatenate([mesh.ravel(), *(np.asarray(s["frequencies_THz"]).ravel() for s in out["segments"])])
        if not np.isfinite(everything).all():
            raise FloatingPointError("non-finite phonon frequencies")
        out["min_frequency_THz"] = float(everything.min())
        out["imaginary_fraction"] = float(np.mean(mesh < -IMAGINARY_THz))
    except FAILURES as exc:
        out["error"] = error_text(exc)
    return out


# ----------------------------------------------------------------------------- comparison


def levels(freqs: list[float], groups: list[int]) -> list[float]:
    """Mean of each degeneracy group of sorted ``freqs`` (NaN-filled if the counts disagree)."""
    f = np.sort(np.array([num(x) for x in freqs], float))
    if sum(groups) != len(f):
        return [math.nan] * len(groups)
    out, start = [], 0
    for n in groups:
        out.append(float(np.mean(f[start:start + n])))
        start += n
    return out


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: every distinct frequency at every special point (the teacher's degeneracy
    groups; relative ``phonon_pct`` or absolute ``phonon_abs_THz``, whichever is looser); the
    lowest frequency (not scored); a flag for imaginary modes the teacher lacks."""
    note = errors_note(teacher, student)
    tp, sp = teacher.get("points") or {}, student.get("points") or {}
    groups = {**(student.get("groups") or {}), **(teacher.get("groups") or {})}
    rows: list[PropertyRecord] = []
    for point in dict.fromkeys([*tp, *sp]):
        g = groups.get(point) or []
        tl = levels((tp.get(point) or {}).get("frequencies_THz") or [], g) if point in tp else [math.nan] * len(g)
        sl = levels((sp.get(point) or {}).get("frequencies_THz") or [], g) if point in sp else [math.nan] * len(g)
        extra = "" if point in tp and point in sp else f"{point} missing for the {'teacher' if point not in tp else 'student'}"
        for k, (t, s) in enumerate(zip(tl, sl), start=1):
            deg = f"{g[k - 1]}-fold" if g[k - 1] > 1 else ""
            rows.append(looser(SECTION, f"phonon_{point}_{k}_THz", "THz", t, s, tolerances.phonon_pct,
                               tolerances.phonon_abs_THz, "; ".join(x for x in (note, extra, deg) if x)))
    t_min, s_min = num(teacher.get("min_frequency_THz")), num(student.get("min_frequency_THz"))
    rows.append(absolute(SECTION, "phonon_min_frequency_THz", "THz", t_min, s_min, None,
                         "lowest frequency on the path and the DOS mesh; negative = imaginary"))
    if math.isfinite(t_min) and math.isfinite(s_min):
        rows.append(flag(SECTION, "phonon_imaginary_modes", t_min < -IMAGINARY_THz, s_min < -IMAGINARY_THz,
                         f"lowest frequency: teacher {t_min:.3g}, student {s_min:.3g} THz; imaginary below "
                         f"-{IMAGINARY_THz} THz; student's fraction of imaginary mesh modes "
                         f"{num(student.get('imaginary_fraction')):.3g}"))
    else:
        rows.append(unavailable(SECTION, "phonon_imaginary_modes", note or "phonon frequencies missing"))
    return rows


# ----------------------------------------------------------------------------- figure


def _on_axis(segments: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each segment's (x, frequencies), x mapped linearly onto the reference path's segment
    (the student's path is a little longer or shorter when its lattice constant differs)."""
    ref = reference if len(reference) == len(segments) else segments
    out = []
    for seg, rseg in zip(segments, ref):
        d = np.asarray(seg.get("distance") or [], float)
        rd = np.asarray(rseg.get("distance") or [], float)
        f = np.asarray(seg.get("frequencies_THz") or [], float)
        if len(d) < 2 or len(rd) < 2 or f.ndim != 2:
            continue
        x = rd[0] + (d - d[0]) / max(d[-1] - d[0], 1e-12) * (rd[-1] - rd[0])
        out.append((x, f))
    return out


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Dispersions overlaid (teacher vs student) along the path, with the DOS alongside."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import COLORS, no_data
    from md_validation.report import figure_png

    fig = Figure(figsize=(10, 4.8))
    ax, ax_dos = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3.2, 1]})
    reference = teacher.get("segments") or student.get("segments") or []
    ticks: dict[float, str] = {}
    for rseg in reference:
        d = rseg.get("distance") or []
        if len(d) >= 2:
            for x, name in ((d[0], rseg["from"]), (d[-1], rseg["to"])):
                key = round(float(x), 6)
                ticks[key] = name if key not in ticks or ticks[key] == name else f"{ticks[key]}|{name}"
    drawn, lo, hi = False, 0.0, 1.0
    for role, res, style in (("teacher", teacher, "-"), ("student", student, "--")):
        for n, (x, f) in enumerate(_on_axis(res.get("segments") or [], reference)):
            ax.plot(x, f, style, color=COLORS[role], lw=1.1, label=labels.get(role, role) if n == 0 else None)
            finite = f[np.isfinite(f)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
            drawn = True
        dos = res.get("dos") or {}
        fr, g = np.asarray(dos.get("frequency_THz") or [], float), np.asarray(dos.get("dos") or [], float)
        if len(fr) and len(fr) == len(g):
            ax_dos.plot(g, fr, style, color=COLORS[role], lw=1.1, label=labels.get(role, role))
    # one legend entry per role (every band of the first segment carries the label)
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles))
    if uniq:
        ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    for x in ticks:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.set_xticks(list(ticks))
    ax.set_xticklabels(["Γ" if t == "Gamma" else t.replace("Gamma", "Γ") for t in ticks.values()])
    if ticks:
        ax.set_xlim(min(ticks), max(ticks))
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))  # the bands, not the DOS's padding
    ax.set_ylabel("frequency (THz)")
    ax.set_title("phonon dispersion")
    ax_dos.set_xlabel("DOS (states/THz)")
    ax_dos.set_title("density of states")
    if not drawn:
        no_data(ax, "no phonon dispersion")
    return {"phonon_dispersion": figure_png(fig)}
