"""Defect section: start geometries (sites, gentle and tight contacts, the largest void),
Stillinger-Weber silicon's ideal vacancy against bond counting, EMT copper's vacancy against a
vacancy built and relaxed here with ASE, a student with a spurious close-contact well caught
as a collapse, and bad data in compare/figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from ase.calculators.morse import MorsePotential
from ase.optimize import BFGS

from md_validation.properties import PropertiesConfig, Tolerances, element_system, structures_system
from md_validation.properties import defects
from md_validation.properties.recipes import nearest_distance
from md_validation.properties.relax import relax

CONFIG = PropertiesConfig(sections=("defects",))
LABELS = {"teacher": "teacher", "student": "student"}
EPSILON_SW = 2.1683


@pytest.fixture(scope="module")
def sw_ground(sw_calc):
    return relax(element_system("Si", phases=()).ground_atoms, sw_calc, fmax=1e-5).atoms


def test_start_geometries_of_diamond():
    """64 atoms; vacancy 63, interstitials 65; gentle contacts >= 0.8 bonds, tight contacts 1.5 Å (both up to the 0.02 Å rattle)."""
    ground = bulk("Si", "diamond", a=5.431, cubic=True)
    bond = nearest_distance(ground)
    perfect, starts = defects.defect_starts(ground, "diamond", 64)
    assert len(perfect) == 64
    assert set(starts) == {"vacancy", "interstitial_tetrahedral", "interstitial_hexagonal", "interstitial_dumbbell_110"}
    assert len(starts["vacancy"]["gentle"]) == 63 and len(starts["interstitial_hexagonal"]["tight"]) == 65
    for name, s in starts.items():
        assert nearest_distance(s["tight"]) == pytest.approx(defects.TIGHT_CONTACT, abs=0.1), name
        assert nearest_distance(s["gentle"]) > defects.GENTLE_CONTACT * bond - 0.1, name
    # the sites themselves: tetrahedral = 4 neighbours at one bond, hexagonal = 6 at 0.957 bonds
    for site, count, dist in (("tetrahedral", 4, 1.0), ("hexagonal", 6, math.sqrt(11) / 8 / (math.sqrt(3) / 4))):
        pos = np.array(defects.SITES["diamond"][site][1]) @ ground.cell.array
        probe = ground.repeat(3)
        probe += bulk("Si", "sc", a=1.0)[:1]
        probe.positions[-1] = pos + ground.cell.array.sum(axis=0)
        d = np.sort(probe.get_distances(len(probe) - 1, range(len(probe) - 1), mic=True))
        assert d[:count] == pytest.approx([dist * bond] * count, abs=1e-9) and d[count] > dist * bond + 0.1


def test_largest_void_of_diamond_is_a_tetrahedral_site():
    ground = bulk("Si", "diamond", a=5.431, cubic=True)
    void = defects.largest_void(ground)
    probe = ground.copy()
    probe += bulk("Si", "sc", a=1.0)[:1]
    probe.positions[-1] = void
    dist = np.sort(probe.get_distances(len(probe) - 1, range(len(ground)), mic=True))
    assert dist[:4] == pytest.approx([nearest_distance(ground)] * 4, abs=1e-9)


def test_sw_vacancy_bond_counting_and_relaxed_minimum(sw_calc, sw_ground):
    """SW's ideal vacancy breaks 4 bonds at the pair minimum (phi2 = -epsilon, three-body terms
    zero at tetrahedral angles): E_f = 4 eps - 2 eps = 2 eps = 4.3366 eV, and it is a local
    minimum, so the gentle start stays there; the tight start finds the relaxed vacancy ~1.5 eV
    lower, and the note says the two starts ended in different minima."""
    res = defects.compute(sw_calc, element_system("Si", phases=()), sw_ground, CONFIG)
    assert res["error"] == "" and len(res["defects"]) == 4
    v = res["defects"]["vacancy"]
    assert res["bulk_energy_per_atom"] == pytest.approx(-2 * EPSILON_SW, abs=1e-6)
    assert v["gentle"]["formation_eV"] == pytest.approx(2 * EPSILON_SW, abs=2e-3)
    assert v["tight"]["formation_eV"] == pytest.approx(2.835, abs=0.03)
    assert v["tight"]["start_min_distance_A"] == pytest.approx(1.5, abs=0.1)
    rows = {r.property: r for r in defects.compare(res, res, Tolerances())}
    assert "teacher 1.5 eV below the gentle start's minimum" in rows["vacancy_tight_formation_eV"].note
    assert rows["collapse_vacancy_tight"].passed and rows["vacancy_min_distance_A"].passed is None
    assert all(r.passed for r in rows.values() if r.passed is not None)
    # every SW defect relaxes to bonds no shorter than 0.95 of the bulk bond
    assert min(x["min_distance_A"] for e in res["defects"].values() for x in (e["gentle"], e["tight"])) > 0.95 * res["bond_A"]


def test_emt_copper_vacancy_against_a_direct_ase_build():
    """The section's vacancy equals one made here: ASE fcc 3x3x3, one atom deleted, BFGS."""
    system = element_system("Cu", phases=())
    ground = relax(system.ground_atoms, EMT(), fmax=1e-5).atoms
    res = defects.run_defects(EMT(), ground, "fcc", 64, 0.01, 300, names=["vacancy"])
    a0 = ground.cell.lengths()[0]
    perfect = bulk("Cu", "fcc", a=a0, cubic=True).repeat(3)
    perfect.calc = EMT()
    e_bulk = perfect.get_potential_energy()
    vac = perfect.copy()
    del vac[13]
    vac.calc = EMT()
    BFGS(vac, logfile=None).run(fmax=0.002, steps=300)
    direct = vac.get_potential_energy() - e_bulk * (len(vac)) / len(perfect)
    assert res["natoms"] == 108
    for start in ("gentle", "tight"):
        assert res["defects"]["vacancy"][start]["formation_eV"] == pytest.approx(direct, abs=3e-3)


def test_spurious_short_range_well_is_a_collapse(sw_calc, sw_ground):
    """A student = SW + a 15 eV Morse well at 1.4 Å (cut off smoothly by 1.9 Å: the crystal and
    gentle starts never see it): the squeezed dumbbell falls in and is flagged; the gentle one is not."""
    well = MorsePotential(epsilon=15.0, r0=1.4, rho0=6.0, rcut1=1.15, rcut2=1.35)
    student = SumCalculator([sw_calc, well])
    names = ["interstitial_dumbbell_110"]
    t = defects.run_defects(sw_calc, sw_ground, "diamond", 64, 0.01, 300, names=names)
    s = defects.run_defects(student, sw_ground, "diamond", 64, 0.01, 300, names=names)
    rows = {r.property: r for r in defects.compare(t, s, Tolerances())}
    assert rows["collapse_interstitial_dumbbell_110_gentle"].passed
    assert rows["interstitial_dumbbell_110_formation_eV"].passed
    assert rows["collapse_interstitial_dumbbell_110_tight"].passed is False
    assert rows["interstitial_dumbbell_110_tight_formation_eV"].passed is False
    assert rows["interstitial_dumbbell_110_tight_min_distance_A"].student < 1.8
    assert rows["interstitial_dumbbell_110_structure_A"].passed  # the same end as the teacher's
    assert rows["interstitial_dumbbell_110_tight_structure_A"].passed is False  # fell into the well: another structure
    assert "student 5." in rows["interstitial_dumbbell_110_tight_formation_eV"].note  # far below its gentle minimum


def test_user_structure_gets_vacancy_and_void_interstitial():
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    system = structures_system([cell], ["cu"])
    _, starts = defects.defect_starts(cell, system.prototype, 32)
    assert set(starts) == {"vacancy", "interstitial_void"}
    gaas = bulk("GaAs", "zincblende", a=5.65, cubic=True)
    _, starts = defects.defect_starts(gaas, None, 64)
    assert set(starts) == {"vacancy_Ga0", "vacancy_As1", "interstitial_void_As", "interstitial_void_Ga"}
    assert starts["vacancy_As1"]["species"] == "As" and len(starts["vacancy_As1"]["gentle"]) == 63


class _Failing(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("model left its domain")


def test_failing_calculator_missing_and_nan_values():
    """A calculator that raises gives failed entries, not an exception; compare fails formation
    energies and flags collapses; missing defects, NaN and empty dicts fail; figures render."""
    ground = bulk("Cu", "fcc", a=3.6, cubic=True)
    bad = defects.compute(_Failing(), element_system("Cu", phases=()), ground,
                          PropertiesConfig(sections=("defects",), supercell_atoms=4, relax_steps=2))
    assert "not finite" in bad["error"] or bad["defects"]
    good = {"bond_A": 2.55, "error": "", "defects": {"vacancy": {
        "gentle": {"formation_eV": 1.22, "min_distance_A": 2.5, "converged": True, "error": ""},
        "tight": {"formation_eV": 1.22, "min_distance_A": 2.5, "converged": True, "error": ""}}}}
    rows = defects.compare(good, bad, Tolerances())
    scored = [r for r in rows if r.passed is not None]
    assert scored and not any(r.passed for r in scored)
    nan = {"bond_A": None, "defects": {"vacancy": {"gentle": {"formation_eV": float("nan"), "min_distance_A": None},
                                                   "tight": {"formation_eV": 1.25, "min_distance_A": 2.4,
                                                             "converged": False, "steps": 300}}}}
    rows = {r.property: r for r in defects.compare(good, nan, Tolerances())}
    assert rows["vacancy_formation_eV"].passed is False and rows["collapse_vacancy_gentle"].passed is False
    assert rows["vacancy_tight_formation_eV"].passed and "not converged" in rows["vacancy_tight_formation_eV"].note
    rows = {r.property: r for r in defects.compare({}, {}, Tolerances())}
    assert rows["defects"].passed is False
    for t, s in ((good, bad), ({}, {}), (good, nan)):
        assert defects.figures(t, s, LABELS)["defect_formation_energies"].startswith(b"\x89PNG")


def test_structure_gap_tells_sites_apart_but_not_equivalent_ones():
    """Diamond with an interstitial: the same structure translated, its atoms reordered and one
    wrapped into another image, or the interstitial in the mirror-image tetrahedral site of the
    same [111] line, is one structure (gap 0); the hexagonal site is another (its neighbours: 6 at
    a·√11/8 = 2.25 Å against the tetrahedral site's 4 at a·√3/4 = 2.35 Å and 6 at a/2 = 2.72 Å)."""
    a = 5.43
    host = bulk("Si", "diamond", a=a, cubic=True) * (2, 2, 2)
    cell = host.cell.array

    def with_atom(frac):
        return np.vstack([host.positions, np.asarray(frac) * a])

    tet, mirror, hexagonal = with_atom([0.5, 0.5, 0.5]), with_atom([0.75, 0.75, 0.75]), with_atom([0.625, 0.625, 0.625])
    assert np.sort(np.linalg.norm(host.positions - hexagonal[-1], axis=1))[5] == pytest.approx(a * np.sqrt(11) / 8)
    teacher = {"positions": tet.tolist()}
    moved = tet[::-1] + [0.3, -0.2, 0.1]
    moved[3] += cell[1]
    pbc = [True] * 3
    assert defects.structure_gap(teacher, {"positions": moved.tolist()}, cell, pbc) == pytest.approx(0.0, abs=1e-9)
    assert defects.structure_gap(teacher, {"positions": mirror.tolist()}, cell, pbc) == pytest.approx(0.0, abs=1e-9)
    gap = defects.structure_gap(teacher, {"positions": hexagonal.tolist()}, cell, pbc)
    assert gap > 2 * Tolerances().defect_structure_A  # whichever atoms pair up, some environment differs by 0.3 Å or more
    assert math.isnan(defects.structure_gap(teacher, {"positions": tet[:-1].tolist()}, cell, pbc))
    assert math.isnan(defects.structure_gap(teacher, {}, cell, pbc))
    entry = {"formation_eV": 2.65, "min_distance_A": 2.35, "converged": True, "error": ""}
    result = {"bond_A": 2.35, "error": "", "cell": cell.tolist(), "pbc": pbc, "defects": {"interstitial_hexagonal": {
        "gentle": {**entry, "positions": tet.tolist()}, "tight": {**entry, "positions": tet.tolist()}}}}
    stayed = {**result, "defects": {"interstitial_hexagonal": {
        "gentle": {**entry, "positions": hexagonal.tolist()}, "tight": {**entry, "positions": mirror.tolist()}}}}
    rows = {r.property: r for r in defects.compare(result, stayed, Tolerances())}
    assert rows["interstitial_hexagonal_formation_eV"].passed  # the energy alone cannot tell
    assert rows["interstitial_hexagonal_structure_A"].passed is False
    assert rows["interstitial_hexagonal_tight_structure_A"].passed
