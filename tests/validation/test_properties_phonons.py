"""Phonon section: Stillinger-Weber silicon and EMT copper against phonopy run directly, the Γ
optical frequency of SW silicon against a frozen phonon, acoustic modes at Γ, the stable keys
under a split degeneracy, imaginary modes, and bad data in compare/figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from md_validation.properties import PropertiesConfig, Tolerances, element_system
from md_validation.properties import phonons, recipes
from md_validation.properties.relax import relax

CONFIG = PropertiesConfig(sections=("phonons",))
LABELS = {"teacher": "teacher", "student": "student"}


@pytest.fixture(scope="module")
def sw_result(sw_calc):
    system = element_system("Si", phases=())
    ground = relax(system.ground_atoms, sw_calc, fmax=1e-5).atoms
    return ground, phonons.compute(sw_calc, system, ground, CONFIG)


def _direct_phonopy(ground: Atoms, calc: Calculator, repeats, qpoints: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Frequencies at ``qpoints`` from phonopy's force constants and dynamical matrix, driven
    by hand and diagonalised here: the test's own code path."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=ground.get_chemical_symbols(), cell=ground.cell.array,
                        scaled_positions=ground.get_scaled_positions())
    ph = Phonopy(unit, supercell_matrix=np.diag(repeats), primitive_matrix=np.linalg.inv(ground.cell.array).T
                 @ _primitive_cell(ground).T, symprec=1e-3)
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.calc = calc
        forces.append(a.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    out = {}
    for name, q in qpoints.items():
        ph.dynamical_matrix.run(q)
        eig = np.linalg.eigvalsh(ph.dynamical_matrix.dynamical_matrix)
        out[name] = np.sort(np.sign(eig) * np.sqrt(np.abs(eig)) * ph.unit_conversion_factor)
    return out


def _primitive_cell(ground: Atoms) -> np.ndarray:
    """The fcc-lattice primitive vectors (rows) of a cubic diamond or fcc cell, written out."""
    a = ground.cell.lengths()[0]
    return 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_sw_silicon_matches_direct_phonopy_and_frozen_phonon(sw_result, sw_calc):
    """Every special-point frequency equals phonopy's own to 1e-6 THz; Γ acoustic modes vanish;
    the Γ optical mode equals a frozen phonon (one sublattice displaced, K = F/u, ω² = 2K/m):
    17.83 THz for SW (experiment 15.5 THz: SW's optical branch is known to be too stiff)."""
    ground, res = sw_result
    assert res["error"] == "" and res["repeats"] == [2, 2, 2] and res["primitive_atoms"] == 2
    assert set(res["points"]) == {"Gamma", "X", "W", "K", "L", "U"}
    direct = _direct_phonopy(ground, sw_calc, res["repeats"], {k: v["q"] for k, v in res["points"].items()})
    for name, point in res["points"].items():
        assert np.allclose(point["frequencies_THz"], direct[name], atol=1e-6), name
    gamma = res["points"]["Gamma"]["frequencies_THz"]
    assert np.abs(gamma[:3]).max() < 1e-3
    prim = bulk("Si", "diamond", a=ground.cell.lengths()[0])
    moved = prim.copy()
    u = 1e-3
    moved.positions[1, 0] += u
    moved.calc = sw_calc
    k = moved.get_forces()[0, 0] / u  # eV/Å², restoring pull of atom 0 towards the moved sublattice
    omega = math.sqrt(2 * k / prim.get_masses()[0] * units._e / units._amu * 1e20) / (2 * math.pi) / 1e12
    assert gamma[3:] == pytest.approx([omega] * 3, abs=1e-3)
    assert omega == pytest.approx(17.83, abs=0.02)
    # X: 2-fold TA, LA=LO, 2-fold TO (the diamond structure's sticking bands)
    assert res["groups"]["X"] == [2, 2, 2] and res["groups"]["Gamma"] == [3, 3]
    assert res["min_frequency_THz"] > -1e-3 and res["imaginary_fraction"] == 0.0
    assert len(res["dos"]["frequency_THz"]) == len(res["dos"]["dos"]) > 50
    # the DOS integrates to 3 modes per atom of the primitive cell
    assert np.trapezoid(res["dos"]["dos"], res["dos"]["frequency_THz"]) == pytest.approx(6.0, rel=0.02)


def test_emt_copper_matches_direct_phonopy():
    """fcc copper (conventional 4-atom cell, 3x3x3 supercell, 1-atom primitive cell)."""
    system = element_system("Cu", phases=())
    ground = relax(system.ground_atoms, EMT(), fmax=1e-5).atoms
    res = phonons.compute(EMT(), system, ground, CONFIG)
    assert res["error"] == "" and res["repeats"] == [3, 3, 3] and res["primitive_atoms"] == 1
    direct = _direct_phonopy(ground, EMT(), res["repeats"], {k: v["q"] for k, v in res["points"].items()})
    for name, point in res["points"].items():
        assert np.allclose(point["frequencies_THz"], direct[name], atol=1e-6), name
    assert res["groups"]["X"] == [2, 1] and res["groups"]["L"] == [2, 1]
    rows = {r.property: r for r in phonons.compare(res, res, Tolerances())}
    assert rows["phonon_X_2_THz"].teacher == pytest.approx(res["points"]["X"]["frequencies_THz"][2])
    assert rows["phonon_Gamma_1_THz"].tolerance_kind == "abs" and rows["phonon_X_2_THz"].tolerance_kind == "rel_%"
    assert all(r.passed for r in rows.values() if r.passed is not None)


def test_diagonal_repeats():
    assert recipes.diagonal_repeats(bulk("Si", "diamond", a=5.43, cubic=True), 64) == (2, 2, 2)
    assert recipes.diagonal_repeats(bulk("Mg", "hcp", a=3.2, c=5.2), 64) == (4, 4, 2)
    with pytest.raises(ValueError, match="volume"):
        recipes.diagonal_repeats(Atoms("H", cell=np.zeros((3, 3))), 64)


def _synthetic(points: dict[str, list[float]], min_f: float = 0.0) -> dict:
    return {"error": "", "points": {k: {"q": [0, 0, 0], "frequencies_THz": v} for k, v in points.items()},
            "groups": {k: phonons.degeneracy_groups(v) for k, v in points.items()}, "segments": [],
            "dos": {"frequency_THz": [], "dos": []}, "min_frequency_THz": min_f, "imaginary_fraction": 0.0}


def test_compare_keys_follow_the_teachers_degeneracies():
    """A student splitting a degenerate level by 0.1 THz keeps the teacher's keys (the mean of
    the same modes is scored); a 10 % error fails; acoustic zeros are scored absolutely."""
    t = _synthetic({"Gamma": [0, 0, 0, 15.0, 15.0, 15.0], "X": [4.0, 4.0, 12.0, 12.0, 14.0, 14.0]})
    s = _synthetic({"Gamma": [0.01, 0.01, 0.02, 14.9, 15.0, 15.1], "X": [4.0, 4.0, 12.0, 12.0, 15.4, 15.4]})
    rows = {r.property: r for r in phonons.compare(t, s, Tolerances())}
    assert [k for k in rows if k.startswith("phonon_Gamma")] == ["phonon_Gamma_1_THz", "phonon_Gamma_2_THz"]
    assert rows["phonon_Gamma_2_THz"].passed and rows["phonon_Gamma_2_THz"].student == pytest.approx(15.0)
    assert rows["phonon_Gamma_1_THz"].passed and rows["phonon_Gamma_1_THz"].tolerance_kind == "abs"
    assert rows["phonon_X_3_THz"].passed is False and rows["phonon_X_3_THz"].error == pytest.approx(10.0)
    assert rows["phonon_imaginary_modes"].passed


def test_imaginary_modes_flag():
    t = _synthetic({"Gamma": [0, 0, 0]}, min_f=0.0)
    s = _synthetic({"Gamma": [0, 0, 0]}, min_f=-1.5)
    rows = {r.property: r for r in phonons.compare(t, s, Tolerances())}
    assert rows["phonon_imaginary_modes"].passed is False
    assert rows["phonon_min_frequency_THz"].student == -1.5 and rows["phonon_min_frequency_THz"].passed is None
    rows = {r.property: r for r in phonons.compare(s, s, Tolerances())}
    assert rows["phonon_imaginary_modes"].passed  # the teacher has them too


class _Failing(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("model left its domain")


def test_failing_calculator_missing_and_nan_values():
    """A calculator that raises gives an error entry, not an exception; compare fails its rows;
    missing points, NaN/None frequencies and empty dicts give failed rows and figures still render."""
    ground = bulk("Cu", "fcc", a=3.6, cubic=True)
    bad = phonons.compute(_Failing(), element_system("Cu", phases=()), ground, CONFIG)
    assert "RuntimeError: model left its domain" in bad["error"] and math.isnan(bad["min_frequency_THz"])
    good = _synthetic({"Gamma": [0, 0, 0], "X": [5.0, 5.0, 8.0]})
    rows = phonons.compare(good, bad, Tolerances())
    scored = [r for r in rows if r.passed is not None]
    assert scored and not any(r.passed for r in scored)
    assert all("model left its domain" in r.note for r in rows if r.property != "phonon_min_frequency_THz")
    nan = _synthetic({"Gamma": [0, 0, 0], "X": [float("nan"), None, 8.0]})
    rows = {r.property: r for r in phonons.compare(good, nan, Tolerances())}
    assert rows["phonon_X_1_THz"].passed is False and rows["phonon_X_2_THz"].passed is False
    rows = {r.property: r for r in phonons.compare({}, {}, Tolerances())}
    assert rows["phonon_imaginary_modes"].passed is False
    for t, s in ((good, bad), ({}, {}), (bad, nan)):
        png = phonons.figures(t, s, LABELS)["phonon_dispersion"]
        assert png.startswith(b"\x89PNG")
