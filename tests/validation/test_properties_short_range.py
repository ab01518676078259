"""Short-range section: the Lennard-Jones dimer against its formula, a planted short-range well
flagged in dimers and in the crystal, a student held only to the teacher's clean stretch of the
wall, Stillinger-Weber silicon's close pair against a push done here and a finite difference of
its energy, refused points as NaN, and the runner end to end."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list

from md_validation.properties import PropertiesConfig, Side, Tolerances, element_system, run_properties
from md_validation.properties import short_range as sr
from md_validation.properties.report import write_properties_report
from property_refs import EPSILON, SIGMA, sw_artifact_calc

LABELS = {"teacher": "teacher", "student": "student"}
CONFIG = PropertiesConfig(sections=("short_range",), supercell_atoms=32)

# a Morse pair (eV, Å) with a bond like copper's, cut off smoothly between the first and
# second fcc shells, and a Gaussian well planted inside its wall
MORSE_D, MORSE_A, MORSE_R0 = 0.5, 1.5, 2.55
CUT_ON, CUT_OFF = 3.0, 3.3
WELL_DEPTH, WELL_R, WELL_WIDTH = 100.0, 1.0, 0.15


def _taper(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.clip((r - CUT_ON) / (CUT_OFF - CUT_ON), 0.0, 1.0)
    f = 0.5 * (1.0 + np.cos(np.pi * x))
    df = np.where((x > 0) & (x < 1), -0.5 * np.pi * np.sin(np.pi * x) / (CUT_OFF - CUT_ON), 0.0)
    return f, df


def morse(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """phi(r) and phi'(r) of the tapered Morse pair."""
    e1, e2 = np.exp(-MORSE_A * (r - MORSE_R0)), np.exp(-2 * MORSE_A * (r - MORSE_R0))
    phi, dphi = MORSE_D * (e2 - 2 * e1), MORSE_D * (-2 * MORSE_A * e2 + 2 * MORSE_A * e1)
    f, df = _taper(r)
    return phi * f, dphi * f + phi * df


def with_well(depth: float = WELL_DEPTH, at: float = WELL_R, width: float = WELL_WIDTH):
    """The Morse pair plus a Gaussian well -depth exp(-(r - at)^2 / (2 width^2))."""

    def pair(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        phi, dphi = morse(r)
        g = np.exp(-((r - at) ** 2) / (2 * width ** 2))
        return phi - depth * g, dphi + depth * (r - at) / width ** 2 * g

    return pair


class PairCalc(Calculator):
    """E = sum over pairs of phi(r), forces from phi'(r); raises below ``refuse_below`` Å."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, pair: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], refuse_below: float = 0.0):
        super().__init__()
        self.pair, self.refuse_below = pair, refuse_below

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, d, vec = neighbor_list("idD", self.atoms, CUT_OFF)
        if len(d) and d.min() < self.refuse_below:
            raise RuntimeError(f"atoms {d.min():.2f} Å apart: outside the training domain")
        phi, dphi = self.pair(d)
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, (dphi / d)[:, None] * vec)  # vec = r_j - r_i: F_i = phi'(d) vec / d
        self.results = {"energy": 0.5 * float(phi.sum()), "forces": forces}


def _fcc_cu() -> Atoms:
    return bulk("Cu", "fcc", a=MORSE_R0 * math.sqrt(2), cubic=True)


def test_lj_dimer_matches_the_formula_and_its_minimum():
    """E(r) - E(12 Å) and F = -dE/dr of the untruncated LJ dimer on the whole grid; its minimum at
    2^(1/6) sigma; the dimer checks pass for LJ against itself (crystal: argon fcc, short cutoff)."""
    calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=50.0, smooth=False)
    r = sr.grid()
    assert r[0] == sr.R_MIN and r[-1] == sr.R_MAX and np.allclose(np.diff(r), sr.R_STEP)
    curve = sr.dimer_curve(calc, "Ar", "Ar", r)

    def lj(x):
        return 4 * EPSILON * ((SIGMA / x) ** 12 - (SIGMA / x) ** 6)

    expected_e = lj(r) - lj(sr.R_FAR)
    expected_f = 24 * EPSILON / r * (2 * (SIGMA / r) ** 12 - (SIGMA / r) ** 6)
    assert curve["failed"] == 0 and curve["error"] == ""
    assert np.allclose(curve["energy_eV"], expected_e, rtol=1e-9, atol=1e-12)
    assert np.allclose(curve["force_eV_A"], expected_f, rtol=1e-9, atol=1e-12)
    r_grid, r_bond, e_min = sr.dimer_minimum(r, np.array(curve["energy_eV"]))
    assert abs(r_grid - 2 ** (1 / 6) * SIGMA) <= sr.R_STEP / 2 + 1e-9
    assert r_bond == pytest.approx(2 ** (1 / 6) * SIGMA, abs=0.01)  # the parabola beats the grid
    assert e_min == pytest.approx(-EPSILON - lj(sr.R_FAR), abs=2e-4)

    short = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=2.5 * SIGMA, ro=2.2 * SIGMA, smooth=True)
    ground = bulk("Ar", "fcc", a=2 ** (1 / 6) * SIGMA * math.sqrt(2), cubic=True)
    res = sr.compute(short, element_system("Ar", phases=()), ground, CONFIG)
    rows = {x.property: x for x in sr.compare(res, res, Tolerances())}
    flags = [k for k, x in rows.items() if x.tolerance_kind == "flag"]
    assert sorted(flags) == sorted(f"short_range_{kind}_Ar-Ar{sfx}" for kind in ("attractive", "nonmonotonic")
                                   for sfx in ("", "_crystal"))
    assert all(rows[k].passed and rows[k].student == 0.0 for k in flags)
    assert rows["dimer_bond_length_Ar-Ar_A"].passed is None and rows["dimer_energy_Ar-Ar_1.0A_eV"].teacher > 1e4


def test_planted_short_range_well_is_flagged_in_dimer_and_crystal():
    """Morse + a 100 eV Gaussian well at 1 Å as the student, plain Morse as the teacher: both
    flags fail for the dimer and the crystal pair; with the well on both sides they pass."""
    clean, holed = PairCalc(morse), PairCalc(with_well())
    system, ground = element_system("Cu", phases=()), _fcc_cu()
    t = sr.compute(clean, system, ground, CONFIG)
    s = sr.compute(holed, system, ground, CONFIG)
    assert list(t["crystal"]) == ["Cu-Cu"] and t["crystal"]["Cu-Cu"]["d1_A"] == pytest.approx(MORSE_R0)
    rows = {x.property: x for x in sr.compare(t, s, Tolerances())}
    for sfx in ("", "_crystal"):
        for kind in ("attractive", "nonmonotonic"):
            row = rows[f"short_range_{kind}_Cu-Cu{sfx}"]
            assert row.passed is False and row.teacher == 0.0 and row.student == 1.0, row
    assert "student: most attractive" in rows["short_range_attractive_Cu-Cu"].note
    # the well is 100 eV deep where the Morse wall is 42 eV high: the student's E at 1 Å is negative
    assert rows["dimer_energy_Cu-Cu_1.0A_eV"].teacher > 10 and rows["dimer_energy_Cu-Cu_1.0A_eV"].student < -30
    assert rows["dimer_bond_length_Cu-Cu_A"].teacher == pytest.approx(MORSE_R0, abs=0.01)
    assert rows["dimer_binding_energy_Cu-Cu_eV"].teacher == pytest.approx(MORSE_D, abs=1e-3)
    both = {x.property: x for x in sr.compare(s, s, Tolerances())}
    assert all(x.passed for x in both.values() if x.passed is not None)
    assert rows["wall_clean_down_to_Cu-Cu_A"].teacher == sr.R_MIN and rows["wall_clean_down_to_Cu-Cu_A"].student > 1.2
    figs = sr.figures(t, s, LABELS)
    assert list(figs) == ["short_range_Cu-Cu"] and figs["short_range_Cu-Cu"].startswith(b"\x89PNG")


def test_student_is_held_to_the_teachers_clean_wall_only():
    """A teacher with the 1 Å hole: its wall is clean from ~1.4 Å up; a student with a small well
    at 1.8 Å (inside that stretch) is flagged, one with its hole at 0.9 Å (below it) is not, and
    the teacher's own hole shows in the notes and the wall_clean_down_to rows."""
    system, ground = element_system("Cu", phases=()), _fcc_cu()
    t = sr.compute(PairCalc(with_well()), system, ground, CONFIG)
    lo, r_check = sr.checked_region(t, "dimers", "Cu-Cu")
    assert r_check == pytest.approx(MORSE_R0 - sr.DIMER_MARGIN_A, abs=sr.R_STEP) and 1.2 < lo < 1.6
    shallow = sr.compute(PairCalc(with_well(depth=3.0, at=1.8, width=0.1)), system, ground, CONFIG)
    deep = sr.compute(PairCalc(with_well(at=0.9)), system, ground, CONFIG)
    rows = {x.property: x for x in sr.compare(t, shallow, Tolerances())}
    for sfx in ("", "_crystal"):
        assert rows[f"short_range_attractive_Cu-Cu{sfx}"].passed is False
        assert rows[f"short_range_attractive_Cu-Cu{sfx}"].teacher == 0.0
        assert f"below {lo:g} Å the teacher itself: most attractive" in rows[f"short_range_attractive_Cu-Cu{sfx}"].note
    assert rows["wall_clean_down_to_Cu-Cu_A"].student > 1.8 and rows["wall_clean_down_to_Cu-Cu_A"].teacher == lo
    rows = {x.property: x for x in sr.compare(t, deep, Tolerances())}
    assert all(x.passed for x in rows.values() if x.passed is not None)
    lowest = rows["dimer_lowest_energy_Cu-Cu_eV"]
    assert lowest.teacher < -30 and "teacher at 1.05 Å" in lowest.note


def test_sw_crystal_push_against_a_direct_build_and_finite_differences(tmp_path):
    """SW silicon, 64 atoms: the pushed pair is a diamond bond; E(r) - E(perfect) equals a push
    done here with ASE; the bond force equals -dE/dr by central differences of that push."""
    calc = sw_artifact_calc(tmp_path)
    ground = bulk("Si", "diamond", a=5.431, cubic=True)  # SW's own lattice constant: forces vanish
    res = sr.compute(calc, element_system("Si", phases=()), ground, PropertiesConfig(sections=("short_range",)))
    c = res["crystal"]["Si-Si"]
    assert c["natoms"] == 64 and c["failed"] == 0 and c["error"] == ""
    assert c["d1_A"] == pytest.approx(5.431 * math.sqrt(3) / 4, abs=1e-9)
    assert abs(c["force_at_d1_eV_A"]) < 1e-6
    assert c["r_A"][0] == sr.R_MIN and c["r_A"][-1] < c["d1_A"] and len(c["r_A"]) == 38
    supercell = ground.repeat((2, 2, 2))
    i, j = c["pair"]
    perfect = supercell.copy()
    perfect.calc = calc
    e0 = perfect.get_potential_energy()
    u = supercell.get_distance(i, j, mic=True, vector=True) / c["d1_A"]

    def pushed(x: float) -> float:
        atoms = supercell.copy()
        atoms.positions[j] = supercell.positions[i] + x * u
        atoms.calc = calc
        return atoms.get_potential_energy() - e0

    h = 1e-4
    for r in (0.8, 1.5, 2.0, 2.3):
        k = c["r_A"].index(r)
        assert c["energy_eV"][k] == pytest.approx(pushed(r), rel=1e-9, abs=1e-9)
        fd = -(pushed(r + h) - pushed(r - h)) / (2 * h)
        assert c["force_eV_A"][k] == pytest.approx(fd, rel=1e-5, abs=1e-5), r
    assert all(np.diff(c["energy_eV"]) < 0) and min(c["force_eV_A"]) > 0  # SW's wall: steep and repulsive
    rows = {x.property: x for x in sr.compare(res, res, Tolerances())}
    assert rows["crystal_pair_energy_Si-Si_1.0A_eV"].teacher == pytest.approx(c["energy_eV"][c["r_A"].index(1.0)])
    assert all(x.passed for x in rows.values() if x.passed is not None)


def test_close_pairs_are_first_shell_bonds_only():
    """Zincblende: only the cation-anion bond; fcc: the like pair at a / sqrt(2)."""
    pairs = sr.close_pairs(bulk("GaAs", "zincblende", a=5.65, cubic=True).repeat(2))
    assert list(pairs) == ["As-Ga"]
    pairs = sr.close_pairs(_fcc_cu().repeat(2))
    i, j = pairs["Cu-Cu"]
    assert _fcc_cu().repeat(2).get_distance(i, j, mic=True) == pytest.approx(MORSE_R0)
    assert sr.pair_label("Si", "C") == "C-Si"


def test_refused_points_are_nan_and_fail_the_monotonic_check():
    """A student that raises below 1 Å: NaN at those points (also after the cache's JSON
    round trip), no exception; its nonmonotonic flags fail, its attractive ones do not."""
    from md_validation.report import jsonable

    system, ground = element_system("Cu", phases=()), _fcc_cu()
    t = sr.compute(PairCalc(morse), system, ground, CONFIG)
    s = sr.compute(PairCalc(morse, refuse_below=0.99), system, ground, CONFIG)
    e = np.array(s["dimers"]["Cu-Cu"]["energy_eV"], float)
    r = np.array(s["grid_A"])
    assert np.isnan(e[r < 1.0 - 1e-9]).all() and np.isfinite(e[r >= 1.0 - 1e-9]).all()
    assert s["dimers"]["Cu-Cu"]["failed"] == 10 and "RuntimeError" in s["dimers"]["Cu-Cu"]["error"]
    assert s["crystal"]["Cu-Cu"]["failed"] == 10
    for student in (s, jsonable(s)):
        rows = {x.property: x for x in sr.compare(t, student, Tolerances())}
        for sfx in ("", "_crystal"):
            assert rows[f"short_range_nonmonotonic_Cu-Cu{sfx}"].passed is False
            assert rows[f"short_range_attractive_Cu-Cu{sfx}"].passed
            assert "value(s) missing" in rows[f"short_range_nonmonotonic_Cu-Cu{sfx}"].note
        assert rows["dimer_energy_Cu-Cu_1.0A_eV"].student is not None
    assert sr.figures(t, jsonable(s), LABELS)["short_range_Cu-Cu"].startswith(b"\x89PNG")
    # nothing at all: failing rows, a figure that still renders
    empty = {x.property: x for x in sr.compare(t, {}, Tolerances())}
    assert empty["short_range_attractive_Cu-Cu"].passed is False
    assert empty["short_range_nonmonotonic_Cu-Cu_crystal"].passed is False
    assert sr.compare({}, {}, Tolerances())[0].passed is False
    assert sr.figures(t, {}, LABELS)["short_range_Cu-Cu"].startswith(b"\x89PNG")


def test_runner_end_to_end_with_lennard_jones(tmp_path):
    """The section inside run_properties, report files written, the section's figure on the page."""
    calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=2.5 * SIGMA, ro=2.2 * SIGMA, smooth=True)
    result = run_properties(Side(calc, "lj", None), Side(PairCalc(morse), "pair"), element_system("Ar", phases=("fcc",)),
                            CONFIG, progress=False)
    props = {x.property for x in result.records if x.section == "short_range"}
    assert "short_range_attractive_Ar-Ar_crystal" in props and "dimer_energy_Ar-Ar_1.5A_eV" in props
    assert set(result.figures["short_range"]) == {"short_range_Ar-Ar"}
    files = write_properties_report(result, tmp_path, CONFIG)
    assert "Short range" in files["html"].read_text() and "short_range_nonmonotonic_Ar-Ar" in files["markdown"].read_text()
