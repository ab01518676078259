"""Point defects in a supercell of the relaxed ground state: the vacancy and interstitials at
several sites, each relaxed from a gentle start and from a tight one.

The supercell is a diagonal repeat of the ground cell with about ``config.supercell_atoms``
atoms (64 for diamond: 2x2x2 conventional cells). Interstitial sites of the built-in ground
states, as offsets from a host atom in the conventional cell (hcp: its 2-atom cell):

- diamond: tetrahedral, hexagonal, ⟨110⟩ split dumbbell;
- fcc: octahedral, tetrahedral, ⟨100⟩ split dumbbell;
- bcc: octahedral, tetrahedral, ⟨110⟩ and ⟨111⟩ split dumbbells;
- hcp: octahedral, tetrahedral, [0001] split dumbbell;
- anything else (user structures, simple cubic): a vacancy on each symmetry-distinct site and
  an atom of each species at the largest void of the cell (the point farthest from every atom).

Gentle start: the site geometry (every start rattled by :data:`RATTLE_A` Å), with host atoms closer than :data:`GENTLE_CONTACT` x the bulk
bond to an added atom pushed radially out to that distance (the fcc tetrahedral site is
0.61 bonds from its neighbours), dumbbell atoms :data:`DUMBBELL_GAP` bonds apart. Tight start:
the same defect without the push, its added atom moved straight at its nearest neighbour until
they are :data:`TIGHT_CONTACT` Å apart (a dumbbell: squeezed to that length; the vacancy: a
neighbour of the vacant site moved at another one). A potential whose short-range repulsion is
too soft lets the tight start fall into a spurious close-contact minimum.

Positions relax at fixed cell, no symmetry. Formation energy: E_f = E_defect - N_defect e_bulk,
e_bulk the calculator's own energy per atom of the perfect supercell (for compounds this takes
the bulk energy per atom as every species' chemical potential: the same convention for both
calculators, not a physical formation energy). A relaxation ending with two atoms closer than
``tolerances.collapse_fraction`` x the teacher's shortest bond, or failing, is a collapse; the
teacher's shortest bond is the shorter of its bulk bond and its own shortest distance in that
defect (either start): a ⟨100⟩ dumbbell in fcc copper is 0.84 bulk bonds long, which is
physics, not a collapse.

Same structure: the teacher's and the student's relaxed ends of each start are compared atom
environment by atom environment (:func:`structure_gap`: each atom's distances to its eight
nearest neighbours, atoms paired to match); a difference above ``tolerances.defect_structure_A``
means the student stopped in another structure. An energy row can pass by chance there: a
student that keeps diamond's hexagonal interstitial, which the teacher relaxes into the
tetrahedral site, is scored against the teacher's tetrahedral energy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.geometry import find_mic

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.recipes import diagonal_repeats, nearest_distance
from md_validation.properties.records import PropertyRecord, absolute, errors_note, flag, unavailable
from md_validation.properties.relax import energy_at, relax
from md_validation.properties.system import System

SECTION = "defects"
#: force threshold (eV/Å) of the defect relaxations, if config.fmax is tighter: formation
#: energies converge to ~1 meV well before, and each step of a 64-atom cell costs a full call
DEFECT_FMAX = 0.01
#: host atoms closer than this (x the bulk bond) to an added atom start pushed out to it
GENTLE_CONTACT = 0.8
#: length of a gentle split dumbbell (x the bulk bond)
DUMBBELL_GAP = 0.9
#: nearest contact of a tight start (Å)
TIGHT_CONTACT = 1.5
#: formation energies of the tight and gentle starts within this (eV) reached the same minimum
SAME_MINIMUM_eV = 0.05
#: grid points per cell vector when searching a user structure's largest void
VOID_GRID = 24
#: every start is rattled by this much (Å, Gaussian, fixed seed: the same for both calculators):
#: symmetric starts can sit on saddle points (Stillinger-Weber's unrelaxed vacancy has zero
#: forces, 1.5 eV above its relaxed minimum)
RATTLE_A = 0.02
RATTLE_SEED = 7
#: neighbours per atom whose distances describe its environment when two relaxed defects are compared
ENVIRONMENT = 8

_S3 = 1.0 / math.sqrt(3.0)
_S2 = 1.0 / math.sqrt(2.0)
#: prototype -> site -> ("site", fractional offset from a host atom) or ("dumbbell", Cartesian axis)
SITES: dict[str, dict[str, tuple[str, tuple[float, float, float]]]] = {
    "diamond": {"tetrahedral": ("site", (0.5, 0.5, 0.5)), "hexagonal": ("site", (0.625, 0.625, 0.625)),
                "dumbbell_110": ("dumbbell", (_S2, _S2, 0.0))},
    "fcc": {"octahedral": ("site", (0.5, 0.0, 0.0)), "tetrahedral": ("site", (0.25, 0.25, 0.25)),
            "dumbbell_100": ("dumbbell", (1.0, 0.0, 0.0))},
    "bcc": {"octahedral": ("site", (0.5, 0.5, 0.0)), "tetrahedral": ("site", (0.5, 0.25, 0.0)),
            "dumbbell_110": ("dumbbell", (_S2, _S2, 0.0)), "dumbbell_111": ("dumbbell", (_S3, _S3, _S3))},
    "hcp": {"octahedral": ("site", (2 / 3, 1 / 3, 0.25)), "tetrahedral": ("site", (0.0, 0.0, 0.375)),
            "dumbbell_0001": ("dumbbell", (0.0, 0.0, 1.0))},
}


def _vec(atoms: Atoms, frm: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Minimum-image vector from ``frm`` to ``to`` (Cartesian, Å)."""
    return find_mic(np.asarray(to, float) - np.asarray(frm, float), atoms.cell, pbc=True)[0]


def _contact(atoms: Atoms, index: int) -> tuple[float, int]:
    """Distance (Å) from atom ``index`` to its nearest other atom, and that atom's index."""
    d = atoms.get_distances(index, range(len(atoms)), mic=True)
    d[index] = math.inf
    j = int(np.argmin(d))
    return float(d[j]), j


def _push_out(atoms: Atoms, added: list[int], radius: float) -> None:
    """Move host atoms within ``radius`` of an added atom radially out to ``radius``."""
    host = [i for i in range(len(atoms)) if i not in added]
    for a in added:
        for i in host:
            v = _vec(atoms, atoms.positions[a], atoms.positions[i])
            r = float(np.linalg.norm(v))
            if 1e-8 < r < radius:
                atoms.positions[i] += v / r * (radius - r)


def _place_at(atoms: Atoms, probe: int, target: int, distance: float) -> None:
    """Move atom ``probe`` along the line to atom ``target`` until they are ``distance`` apart."""
    v = _vec(atoms, atoms.positions[target], atoms.positions[probe])
    atoms.positions[probe] = atoms.positions[target] + v / np.linalg.norm(v) * distance


def largest_void(cell: Atoms, grid: int = VOID_GRID) -> np.ndarray:
    """Cartesian position of the grid point of ``cell`` farthest from every atom (periodic)."""
    # the grid includes halves and quarters of the cell vectors, where high-symmetry voids sit
    f = np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3) / grid
    frac = cell.get_scaled_positions()
    best = np.full(len(f), np.inf)
    for p in frac:
        d = f - p
        d -= np.round(d)
        best = np.minimum(best, np.linalg.norm(d @ cell.cell.array, axis=1))
    return f[int(np.argmax(best))] @ cell.cell.array


def _host_index(supercell: Atoms, repeats: tuple[int, int, int]) -> int:
    """The copy of the ground cell's atom 0 nearest the middle of the supercell (defects away
    from the cell's edges look better in a viewer; the physics is the same)."""
    n_cell = len(supercell) // int(np.prod(repeats))
    middle = np.array([r // 2 for r in repeats])
    # Atoms.repeat lays copies out cell by cell, x slowest: copy (i, j, k) starts at this index
    copy = (middle[0] * repeats[1] + middle[1]) * repeats[2] + middle[2]
    return int(copy * n_cell)


def defect_starts(ground: Atoms, prototype: str | None, target_atoms: int) -> tuple[Atoms, dict[str, dict[str, Any]]]:
    """The perfect supercell and every defect's two starts: name -> {"gentle": Atoms,
    "tight": Atoms, "added": number of atoms added (negative: removed), "species": symbol}."""
    repeats = diagonal_repeats(ground, target_atoms)
    bulk = ground.repeat(repeats)
    bond = nearest_distance(ground)
    h = _host_index(bulk, repeats)
    out: dict[str, dict[str, Any]] = {}
    if prototype in SITES:
        vacancies = [("vacancy", h)]
    else:
        import spglib

        ds = spglib.get_symmetry_dataset((ground.cell.array, ground.get_scaled_positions(), ground.numbers), symprec=1e-3)
        reps = sorted(set(ds.equivalent_atoms.tolist())) if ds is not None else list(range(len(ground)))
        single = len(reps) == 1
        # copy of ground atom r in the same cell as atom h
        vacancies = [("vacancy" if single else f"vacancy_{ground[r].symbol}{r}", h + r) for r in reps]
    for name, v in vacancies:
        gentle = bulk.copy()
        del gentle[v]
        tight = bulk.copy()
        d = tight.get_distances(v, range(len(tight)), mic=True)
        d[v] = math.inf
        first = np.flatnonzero(d < 1.15 * d.min())  # the vacant site's shell of nearest neighbours
        probe = int(first[0])
        others = [int(j) for j in first[1:]] or [int(np.argsort(d)[1])]
        target = min(others, key=lambda j: tight.get_distance(probe, j, mic=True))
        _place_at(tight, probe, target, TIGHT_CONTACT)
        del tight[v]
        out[name] = {"gentle": gentle, "tight": tight, "added": -1, "species": bulk[v].symbol}
    origin = bulk.positions[h]
    symbol = bulk[h].symbol
    if prototype in SITES:
        sites = SITES[prototype]
        extra = [(f"interstitial_{k}", kind, vec, symbol) for k, (kind, vec) in sites.items()]
    else:
        void = largest_void(ground) - ground.positions[0] + origin
        species = sorted(set(ground.get_chemical_symbols()))
        extra = [("interstitial_void" if len(species) == 1 else f"interstitial_void_{s}", "void", tuple(void), s)
                 for s in species]
    for name, kind, vec, sym in extra:
        if kind == "dumbbell":
            axis = np.asarray(vec, float)
            gentle, tight = bulk.copy(), bulk.copy()
            for atoms, half in ((gentle, 0.5 * DUMBBELL_GAP * bond), (tight, 0.5 * TIGHT_CONTACT)):
                del atoms[h]
                atoms += Atoms(sym * 2, positions=[origin + half * axis, origin - half * axis])
            _push_out(gentle, [len(gentle) - 2, len(gentle) - 1], GENTLE_CONTACT * bond)
        else:
            pos = np.asarray(vec, float) if kind == "void" else origin + np.asarray(vec) @ ground.cell.array
            gentle = bulk + Atoms(sym, positions=[pos])
            tight = gentle.copy()
            _push_out(gentle, [len(gentle) - 1], GENTLE_CONTACT * bond)
            _place_at(tight, len(tight) - 1, _contact(tight, len(tight) - 1)[1], TIGHT_CONTACT)
        out[name] = {"gentle": gentle, "tight": tight, "added": 1, "species": sym}
    for starts in out.values():
        for key in ("gentle", "tight"):
            starts[key].rattle(RATTLE_A, seed=RATTLE_SEED)
            starts[key].wrap()
    return bulk, out


def run_defects(calc: Calculator, ground: Atoms, prototype: str | None, target_atoms: int, fmax: float, steps: int,
                names: list[str] | None = None) -> dict[str, Any]:
    """Formation energies and shortest distances of every defect (or ``names``) for one calculator."""
    bulk, starts = defect_starts(ground, prototype, target_atoms)
    e_bulk = energy_at(bulk, calc) / len(bulk)
    out: dict[str, Any] = {"natoms": len(bulk), "bulk_energy_per_atom": e_bulk, "bond_A": nearest_distance(ground),
                           "fmax": fmax, "error": "", "cell": bulk.cell.array.tolist(), "pbc": bulk.pbc.tolist(), "defects": {}}
    if not math.isfinite(e_bulk):
        out["error"] = "the perfect supercell's energy is not finite (the calculator refused it)"
    for name, spec in starts.items():
        if names is not None and name not in names:
            continue
        entry: dict[str, Any] = {"species": spec["species"], "atoms_added": spec["added"]}
        for start in ("gentle", "tight"):
            atoms = spec[start]
            e0 = energy_at(atoms, calc)
            r = relax(atoms, calc, fmax=fmax, steps=steps, cell=False, symmetry=False)
            entry[start] = {"formation_eV": r.energy - len(atoms) * e_bulk,
                            "unrelaxed_formation_eV": e0 - len(atoms) * e_bulk,
                            "start_min_distance_A": nearest_distance(atoms), "min_distance_A": r.min_distance,
                            "converged": r.converged, "steps": r.steps, "error": r.error,
                            "positions": r.atoms.positions.tolist()}
        out["defects"][name] = entry
    return out


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Every defect of ``system``'s ground state for one calculator (JSON-able)."""
    try:
        return run_defects(calc, ground, system.prototype, config.supercell_atoms, max(config.fmax, DEFECT_FMAX),
                           config.relax_steps)
    except FAILURES as exc:
        return {"error": error_text(exc), "defects": {}, "bond_A": math.nan}


# ----------------------------------------------------------------------------- comparison


def _prop(name: str, start: str, what: str) -> str:
    return f"{name}{'_tight' if start == 'tight' else ''}_{what}"


def _where(entry: dict[str, Any]) -> str:
    """Where the tight start ended relative to the gentle one."""
    g, t = num((entry.get("gentle") or {}).get("formation_eV")), num((entry.get("tight") or {}).get("formation_eV"))
    if not (math.isfinite(g) and math.isfinite(t)):
        return "no comparison"
    if abs(t - g) <= SAME_MINIMUM_eV:
        return "same minimum"
    return f"{abs(t - g):.3g} eV {'above' if t > g else 'below'} the gentle start's minimum"


def _environments(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """[N, k] every atom's distances to its :data:`ENVIRONMENT` nearest neighbours, sorted (Å)."""
    from ase.geometry import get_distances

    _, d = get_distances(positions, cell=cell, pbc=pbc)
    k = min(ENVIRONMENT, len(positions) - 1)
    return np.sort(d, axis=1)[:, 1:k + 1]


def structure_gap(teacher: dict[str, Any], student: dict[str, Any], cell: Any, pbc: Any) -> float:
    """How far two relaxed ends (their ``positions``) are from being one structure (Å): atoms
    of the two are paired to match their local environments (each atom's sorted distances to
    its :data:`ENVIRONMENT` nearest neighbours, minimum image in ``cell``) and the largest
    difference of one distance between paired atoms is returned. Blind to rigid motion, to
    the order of atoms and to a symmetry operation of the host (two mirror-image tetrahedral
    sites are one structure); NaN when either is missing or they differ in size."""
    from scipy.optimize import linear_sum_assignment

    t, s = teacher.get("positions"), student.get("positions")
    if t is None or s is None or cell is None or np.shape(t) != np.shape(s) or len(t) < 2:
        return math.nan
    t, s = np.asarray(t, dtype=float), np.asarray(s, dtype=float)
    if not (np.isfinite(t).all() and np.isfinite(s).all()):
        return math.nan
    cell, pbc = np.asarray(cell, dtype=float), np.asarray(pbc, dtype=bool)
    et, es = _environments(t, cell, pbc), _environments(s, cell, pbc)
    cost = np.abs(et[:, None, :] - es[None, :, :]).max(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: formation energies of both starts of every defect (``defect_eV``); whether
    the student ended in the teacher's structure (``defect_structure_A``); shortest distances
    (not scored); a collapse flag per defect and start."""
    note = errors_note(teacher, student)
    td, sd = teacher.get("defects") or {}, student.get("defects") or {}
    bond = num(teacher.get("bond_A"))
    if not math.isfinite(bond):
        bond = num(student.get("bond_A"))
    rows: list[PropertyRecord] = []
    for name in dict.fromkeys([*td, *sd]):
        t_entry, s_entry = td.get(name) or {}, sd.get(name) or {}
        missing = "" if name in td and name in sd else f"{name} missing for the {'teacher' if name not in td else 'student'}"
        shortest = min([d for d in (bond, *(num((t_entry.get(k) or {}).get("min_distance_A")) for k in ("gentle", "tight")))
                        if math.isfinite(d)], default=math.nan)
        limit = tolerances.collapse_fraction * shortest
        for start in ("gentle", "tight"):
            t, s = t_entry.get(start) or {}, s_entry.get(start) or {}
            parts = [note, missing] + [f"{who}: {x['error']}" for who, x in (("teacher", t), ("student", s)) if x.get("error")]
            parts += [f"{who}: not converged in {x.get('steps')} steps" for who, x in (("teacher", t), ("student", s))
                      if x and x.get("converged") is False and not x.get("error")]
            if start == "tight":
                parts.append(f"tight start ended at: teacher {_where(t_entry)}, student {_where(s_entry)}")
            row_note = "; ".join(p for p in parts if p)
            rows.append(absolute(SECTION, _prop(name, start, "formation_eV"), "eV", num(t.get("formation_eV")),
                                 num(s.get("formation_eV")), tolerances.defect_eV, row_note))
            gap = structure_gap(t, s, teacher.get("cell"), teacher.get("pbc"))
            rows.append(absolute(SECTION, _prop(name, start, "structure_A"), "Å", 0.0, gap, tolerances.defect_structure_A,
                                 "largest difference of an atom's neighbour distances from the teacher's end (same start)"))
            t_min, s_min = num(t.get("min_distance_A")), num(s.get("min_distance_A"))
            rows.append(absolute(SECTION, _prop(name, start, "min_distance_A"), "Å", t_min, s_min, None,
                                 "shortest distance after relaxing"))

            def bad(x: dict[str, Any], d: float) -> bool:
                return bool(not x or x.get("error") or not math.isfinite(d) or not math.isfinite(limit) or d < limit)

            if not t:  # nothing to judge the student against: the row fails, it does not pass by default
                rows.append(PropertyRecord(SECTION, f"collapse_{name}_{start}", "flag", None, float(bad(s, s_min)), None,
                                           None, "flag", False, row_note or "teacher result missing"))
                continue
            rows.append(flag(SECTION, f"collapse_{name}_{start}", bad(t, t_min), bad(s, s_min),
                             f"shortest distance teacher {t_min:.3g}, student {s_min:.3g} Å; collapse below "
                             f"{tolerances.collapse_fraction} x the teacher's shortest bond {shortest:.4g} Å" +
                             (f"; {row_note}" if row_note else "")))
    if not rows:
        rows.append(unavailable(SECTION, "defects", note or "no defect results"))
    return rows


# ----------------------------------------------------------------------------- figure


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """Bar chart of formation energies, teacher vs student, gentle (filled) and tight (hatched) starts."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import no_data, paired_bars
    from md_validation.report import figure_png

    td, sd = teacher.get("defects") or {}, student.get("defects") or {}
    names = list(dict.fromkeys([*td, *sd]))
    fig = Figure(figsize=(max(6.0, 1.4 * len(names) + 2), 4.5))
    ax = fig.subplots()
    x = paired_bars(ax, names, (("teacher", td), ("student", sd)), (("gentle", "gentle start"), ("tight", "tight start")),
                    lambda res, start, k: num(((res.get(k) or {}).get(start) or {}).get("formation_eV")), labels,
                    mark_failed=True)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels([k.replace("interstitial_", "") for k in names], rotation=20, ha="right")
    ax.set_ylabel("formation energy (eV)")
    ax.set_title("point defects")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)  # below: bars fill the top
    if not names:
        no_data(ax, "no defect results")
    return {"defect_formation_energies": figure_png(fig)}
