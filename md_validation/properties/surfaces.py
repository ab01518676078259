"""Surface energies of low-index slabs of the relaxed ground state.

Facets: (100), (110), (111) of cubic ground states (diamond, fcc, bcc, simple cubic), (0001)
of hcp; for user structures (100), (110), (111) of the ground cell.

Each slab is ASE's ``surface()`` of the ground cell (Miller indices of that cell, one surface
cell in the plane: no reconstruction such as Si(100) 2x1 can form), repeated along the normal
until it is at least :data:`MIN_THICKNESS_A` thick, with :data:`VACUUM_A` of vacuum between
periodic images. Termination of the built-in ground states: the cut is put in the widest gap
between atomic planes, the cleavage plane that breaks the fewest bonds (diamond (111): between
the widely spaced bilayers, so each surface atom keeps 3 of its 4 bonds, not the 1 of a cut
inside a bilayer). Repeating whole periods makes both faces equivalent (a symmetric slab).
User structures get ASE's default termination, whose faces need not be equivalent.

γ = (E_slab - N e_bulk) / (2 A), e_bulk the calculator's own energy per atom of its relaxed
ground state, A the area of the surface cell; reported in J/m² (1 eV/Å² = 16.0218 J/m²),
unrelaxed (bulk positions) and relaxed (positions at fixed cell).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import surface
from ase.calculators.calculator import Calculator

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.records import PropertyRecord, errors_note, looser, relative, unavailable
from md_validation.properties.relax import energy_at, relax
from md_validation.properties.system import System

SECTION = "surfaces"
#: 1 eV/Å² in J/m²
EV_PER_A2_TO_J_PER_M2 = 16.02176634
#: slabs are at least this thick (Å, outermost atom planes): both faces see bulk underneath
#: beyond the ~5-6 Å reach of a machine-learned potential
MIN_THICKNESS_A = 9.0
#: vacuum between a slab and its periodic image (Å), beyond any potential's cutoff
VACUUM_A = 15.0
#: force threshold (eV/Å) of the slab relaxations, if config.fmax is tighter
SURFACE_FMAX = 0.01
#: planes closer than this (Å) along the normal are one plane when looking for the widest gap
PLANE_TOL_A = 1e-3
#: facets of each built-in ground state: key -> Miller indices in the ground cell
FACETS: dict[str, dict[str, tuple[int, int, int]]] = {
    "diamond": {"100": (1, 0, 0), "110": (1, 1, 0), "111": (1, 1, 1)},
    "fcc": {"100": (1, 0, 0), "110": (1, 1, 0), "111": (1, 1, 1)},
    "bcc": {"100": (1, 0, 0), "110": (1, 1, 0), "111": (1, 1, 1)},
    "sc": {"100": (1, 0, 0), "110": (1, 1, 0), "111": (1, 1, 1)},
    "hcp": {"0001": (0, 0, 1)},
}
_DEFAULT_FACETS = {"100": (1, 0, 0), "110": (1, 1, 0), "111": (1, 1, 1)}


def make_slab(ground: Atoms, miller: tuple[int, int, int], cleave: bool) -> tuple[Atoms, dict[str, Any]]:
    """A slab of ``ground`` with faces ``miller``, cut at the widest gap between planes when
    ``cleave`` (else ASE's default termination); with its periods, thickness and area."""
    # ASE's surface() stacks lattice-correct layers along z but, without vacuum, leaves the cell's
    # third vector undefined (and periodic=True replaces it by its projection on the normal,
    # which breaks the stacking of diamond (111)): the slab is cut from a stack instead
    one = surface(ground, miller, layers=1)
    area = float(np.linalg.norm(np.cross(one.cell[0], one.cell[1])))
    period = len(one) * abs(ground.cell.volume) / len(ground) / area  # layer repeat along the normal
    heights = np.sort(one.positions[:, 2] % period)
    gaps = np.diff(np.append(heights, heights[0] + period))
    k = int(np.flatnonzero(gaps >= gaps.max() - PLANE_TOL_A)[0])
    gap = float(gaps[k])
    if cleave:
        bottom = heights[k] + 0.5 * gap  # mid-gap: no atom near either cut
        repeats = max(1, math.ceil((MIN_THICKNESS_A + gap) / period))
        stack = surface(ground, miller, layers=repeats + 2)
        z = stack.positions[:, 2]
        keep = (z >= bottom) & (z < bottom + repeats * period)
        slab = stack[keep]
        if len(slab) != repeats * len(one):
            raise ValueError(f"slab ({''.join(map(str, miller))}) has {len(slab)} atoms, expected {repeats * len(one)}")
        termination = "cleavage plane (widest gap between atomic planes)"
    else:
        repeats = max(1, math.ceil(MIN_THICKNESS_A / period))
        slab = surface(ground, miller, layers=repeats)
        if np.ptp(slab.positions[:, 2]) < MIN_THICKNESS_A:
            repeats += 1
            slab = surface(ground, miller, layers=repeats)
        termination = "ASE's default termination of surface()"
    z = slab.positions[:, 2]
    thickness = float(np.ptp(z))
    slab.positions[:, 2] += 0.5 * VACUUM_A - z.min()  # half the vacuum below, half above
    slab.set_cell([one.cell[0], one.cell[1], [0.0, 0.0, thickness + VACUUM_A]], scale_atoms=False)
    slab.pbc = True
    slab.wrap()
    return slab, {"miller": list(miller), "periods": repeats, "thickness_A": thickness, "area_A2": area,
                  "natoms": len(slab), "termination": termination}


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Unrelaxed and relaxed surface energies (J/m²) of every facet for one calculator."""
    facets = FACETS.get(system.prototype or "", _DEFAULT_FACETS)
    cleave = system.prototype in FACETS
    e_bulk = energy_at(ground, calc) / len(ground)
    out: dict[str, Any] = {"bulk_energy_per_atom": e_bulk, "error": "", "surfaces": {},
                           "fmax": max(config.fmax, SURFACE_FMAX)}
    if not math.isfinite(e_bulk):
        out["error"] = "the ground state's energy is not finite (the calculator refused it)"
    for key, miller in facets.items():
        entry: dict[str, Any] = {"gamma_J_m2": math.nan, "unrelaxed_J_m2": math.nan, "error": ""}
        try:
            slab, info = make_slab(ground, miller, cleave)
            entry.update(info)
            scale = EV_PER_A2_TO_J_PER_M2 / (2.0 * info["area_A2"])
            entry["unrelaxed_J_m2"] = (energy_at(slab, calc) - len(slab) * e_bulk) * scale
            r = relax(slab, calc, fmax=out["fmax"], steps=config.relax_steps, cell=False, symmetry=False)
            entry.update({"gamma_J_m2": (r.energy - len(slab) * e_bulk) * scale, "converged": r.converged,
                          "steps": r.steps, "min_distance_A": r.min_distance, "error": r.error})
        except FAILURES as exc:
            entry["error"] = error_text(exc)
        out["surfaces"][key] = entry
    return out


# ----------------------------------------------------------------------------- comparison


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: the relaxed surface energy of every facet (relative ``surface_pct`` or absolute
    ``surface_abs_J_m2``, whichever is looser); the unrelaxed one (not scored)."""
    note = errors_note(teacher, student)
    ts, ss = teacher.get("surfaces") or {}, student.get("surfaces") or {}
    rows: list[PropertyRecord] = []
    for key in dict.fromkeys([*ts, *ss]):
        t, s = ts.get(key) or {}, ss.get(key) or {}
        parts = [note] + [f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error")]
        if key not in ts or key not in ss:
            parts.append(f"({key}) missing for the {'teacher' if key not in ts else 'student'}")
        parts += [f"{who}: not converged in {x.get('steps')} steps" for who, x in (("teacher", t), ("student", s))
                  if x.get("converged") is False and not x.get("error")]
        info = t or s
        if info.get("termination"):
            parts.append(f"{info.get('natoms')} atoms, {num(info.get('thickness_A')):.3g} Å thick; {info['termination']}")
        row_note = "; ".join(p for p in parts if p)
        rows.append(looser(SECTION, f"surface_{key}_J_m2", "J/m^2", num(t.get("gamma_J_m2")), num(s.get("gamma_J_m2")),
                           tolerances.surface_pct, tolerances.surface_abs_J_m2, row_note))
        rows.append(relative(SECTION, f"surface_{key}_unrelaxed_J_m2", "J/m^2", num(t.get("unrelaxed_J_m2")),
                             num(s.get("unrelaxed_J_m2")), None, "bulk positions"))
    if not rows:
        rows.append(unavailable(SECTION, "surfaces", note or "no surface results", unit="J/m^2"))
    return rows


# ----------------------------------------------------------------------------- figure


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Bar chart of surface energies, teacher vs student, relaxed (filled) and unrelaxed (hatched)."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import no_data, paired_bars
    from md_validation.report import figure_png

    ts, ss = teacher.get("surfaces") or {}, student.get("surfaces") or {}
    keys = list(dict.fromkeys([*ts, *ss]))
    fig = Figure(figsize=(max(6.0, 1.6 * len(keys) + 2), 4.5))
    ax = fig.subplots()
    x = paired_bars(ax, keys, (("teacher", ts), ("student", ss)),
                    (("gamma_J_m2", "relaxed"), ("unrelaxed_J_m2", "unrelaxed")),
                    lambda res, field, k: num((res.get(k) or {}).get(field)), labels, mark_failed=True)
    ax.set_xticks(x)
    ax.set_xticklabels([f"({k})" for k in keys])
    ax.set_ylabel("surface energy (J/m²)")
    ax.set_title("surface energies")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    if not keys:
        no_data(ax, "no surface results")
    return {"surface_energies": figure_png(fig)}
