"""The molecular-crystal section against independent references: a Lennard-Jones fcc crystal
(each atom its own molecule) whose equilibrium lattice constant and energy come from a scan of
the same potential, a Lennard-Jones potential with every length scaled by s (the same crystal
scaled by s, the same lattice energy), the molecules of urea found whole across the cell faces,
and the CLI's errors for files that are not molecular crystals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.lj import LennardJones
from ase.io import read, write
from click.testing import CliRunner
from scipy.optimize import minimize_scalar

from md_validation.cli import cli
from md_validation.properties import PropertiesConfig, Side, run_properties
from md_validation.properties.molecular_crystal import (KJ_MOL_PER_EV, check_crystal, compare, crystal_result, formula,
                                                        formula_unit, lattice_energy, whole_molecules)
from md_validation.properties.system import with_molecular_crystals
from md_validation.properties.config import Tolerances

UREA = "examples/druglike/urea.cif"
SIGMA = 3.4  # Å, argon-like: nearest neighbours (3.7 Å) are far from bonded by covalent radii
CONFIG = PropertiesConfig(sections=("molecular_crystal",), fmax=1e-4, relax_steps=300)


def lj(scale: float = 1.0) -> LennardJones:
    """Lennard-Jones (epsilon 1 eV), every length (sigma, cut-off) times ``scale``, smoothly cut off."""
    return LennardJones(sigma=SIGMA * scale, epsilon=1.0, rc=3.0 * SIGMA * scale, smooth=True)


@pytest.fixture(scope="module")
def fcc_minimum() -> tuple[float, float]:
    """The lattice constant (Å) and energy per atom (eV) of the LJ fcc minimum, by a bounded scan
    of the one-atom primitive cell (independent of the cell relaxation under test)."""
    def energy(a: float) -> float:
        atoms = bulk("Ar", "fcc", a=a)
        atoms.calc = lj()
        return atoms.get_potential_energy() / len(atoms)

    r = minimize_scalar(energy, bounds=(1.4 * SIGMA, 1.7 * SIGMA), method="bounded", options={"xatol": 1e-10})
    return float(r.x), float(r.fun)


def test_lennard_jones_fcc_relaxes_to_the_scanned_minimum(fcc_minimum):
    a0, e0 = fcc_minimum
    # the isolated atom of a cut-off LJ has no partner: its energy is zero
    single = Atoms("Ar", positions=[[0, 0, 0]])
    single.calc = lj()
    assert single.get_potential_energy() == 0.0
    start = bulk("Ar", "fcc", a=1.06 * a0, cubic=True)  # 4 atoms, 6 % too large
    res = crystal_result(start, lj(), CONFIG)
    assert res["error"] == "" and res["converged"] and res["molecules_kept"]
    # the 5.3 Å cubic cell is relaxed as a 2x2x2 supercell (9 Å wide); numbers per file cell
    assert res["supercell"] == [2, 2, 2] and res["n_mol"] == 4 and res["composition"] == {"Ar": 4}
    assert res["volume_per_molecule_A3"] == pytest.approx(a0 ** 3 / 4, rel=1e-5)
    assert [res["a"], res["b"], res["c"]] == pytest.approx([a0] * 3, rel=1e-5)
    assert res["molecules"]["Ar"]["energy_eV"] == 0.0
    assert res["lattice_energy_eV"] == pytest.approx(e0, rel=1e-7)
    assert res["lattice_energy_kJ_mol"] == pytest.approx(e0 * 96.485332, rel=1e-6)
    mass = 39.948 * 1.66053907e-24  # g
    assert res["density_g_cm3"] == pytest.approx(mass / (a0 ** 3 / 4 * 1e-24), rel=1e-4)


def test_co_crystal_lattice_energy_per_formula_unit(fcc_minimum):
    """Two kinds of 'molecule' (Ar and Kr, the same LJ): per formula unit Ar + Kr, twice the
    energy per atom; and the formula itself by hand."""
    a0, e0 = fcc_minimum
    start = bulk("Ar", "fcc", a=0.97 * a0, cubic=True)
    start.symbols[[1, 2]] = "Kr"
    res = crystal_result(start, lj(), CONFIG)
    assert res["composition"] == {"Ar": 2, "Kr": 2} and res["formula_unit"] == {"Ar": 1, "Kr": 1}
    assert res["lattice_energy_eV"] == pytest.approx(2 * e0, rel=1e-6)
    assert formula_unit({"A": 4, "B2": 2}) == {"A": 2, "B2": 1}
    assert lattice_energy(-10.0, {"A": 4, "B2": 2}, {"A": -1.0, "B2": -2.5}) == pytest.approx((-10.0 + 4.0 + 5.0) / 2)


def test_scaled_potential_gives_a_scaled_crystal_and_the_same_lattice_energy(fcc_minimum):
    """A student whose LJ lengths are 1.005 (1.03) x the teacher's: cell lengths +0.5 % (+3 %),
    volume per molecule x s^3, lattice energy unchanged; scored by the default tolerances."""
    a0, _ = fcc_minimum
    system = with_molecular_crystals(None, {"ar": bulk("Ar", "fcc", a=1.04 * a0, cubic=True)})
    rows = {}
    for s in (1.005, 1.03):
        result = run_properties(Side(lj(), "lj"), Side(lj(s), f"lj x{s}"), system, CONFIG, progress=False)
        rows[s] = {r.property: r for r in result.records}
        assert rows[s]["ar_volume_per_molecule_A3"].error == pytest.approx(100 * (s ** 3 - 1), rel=1e-3)
        assert rows[s]["ar_a_A"].error == pytest.approx(100 * (s - 1), rel=1e-3)
        assert abs(rows[s]["ar_lattice_energy_kJ_mol"].error) < 1e-4
        assert rows[s]["ar_not_converged"].passed and rows[s]["ar_molecules_changed"].passed
    assert all(r.passed is not False for r in rows[1.005].values())
    assert not rows[1.03]["ar_a_A"].passed and not rows[1.03]["ar_volume_per_molecule_A3"].passed
    assert rows[1.03]["ar_lattice_energy_kJ_mol"].passed


class Broken(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("student left its domain")


def test_failures_are_failed_rows_with_the_reason_never_nan(fcc_minimum):
    a0, _ = fcc_minimum
    start = bulk("Ar", "fcc", a=1.06 * a0, cubic=True)
    teacher = crystal_result(start, lj(), CONFIG)
    broken = crystal_result(start, Broken(), CONFIG)
    assert broken["lattice_energy_kJ_mol"] is None and "student left its domain" in broken["error"]
    json.dumps(broken, allow_nan=False)  # no NaN anywhere in the cached result
    rows = compare({"ar": teacher}, {"ar": broken}, Tolerances())
    scored = [r for r in rows if r.passed is not None and r.tolerance_kind != "flag"]
    assert scored and all(r.passed is False and r.student is None for r in scored)
    assert "student left its domain" in next(r for r in rows if r.property == "ar_lattice_energy_kJ_mol").note
    # a relaxation stopped at the step limit is reported and fails, whichever side it is
    short = crystal_result(start, lj(), PropertiesConfig(fmax=1e-4, relax_steps=1))
    assert not short["converged"]
    row = next(r for r in compare({"ar": short}, {"ar": teacher}, Tolerances()) if r.property == "ar_not_converged")
    assert row.passed is False and "teacher: not converged" in row.note


def test_urea_has_two_whole_molecules():
    atoms = read(UREA)
    assert check_crystal(atoms, UREA) == {"CH4N2O": 2}
    groups, positions = whole_molecules(atoms)
    assert len(groups) == 2 and sorted(np.concatenate(groups).tolist()) == list(range(16))
    straddles = False
    for g in groups:
        assert formula(atoms.numbers[g]) == "CH4N2O"
        heavy = g[atoms.numbers[g] > 1]
        whole = np.linalg.norm(positions[heavy][:, None] - positions[heavy][None], axis=-1)
        assert whole.max() < 3.0  # C, N, N, O of one urea: N...N is the longest, 2.3 Å
        # every H within bonding distance of a heavy atom of its own molecule
        h = g[atoms.numbers[g] == 1]
        assert np.linalg.norm(positions[h][:, None] - positions[heavy][None], axis=-1).min(axis=1).max() < 1.1
        wrapped = np.linalg.norm(atoms.positions[g][:, None] - atoms.positions[g][None], axis=-1)
        straddles |= bool(wrapped.max() > 4.5)  # as stored in the file, a molecule is cut by a cell face
    assert straddles


def test_not_a_molecular_crystal_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="periodic in 3 directions"):
        check_crystal(Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), "water.xyz")
    with pytest.raises(ValueError, match="bonded to its own periodic image"):
        check_crystal(bulk("Si", "diamond", a=5.43), "si.cif")


def test_missing_hydrogens_and_disorder_are_value_errors(tmp_path):
    """Urea without its hydrogens (as X-ray files often give it) is a crystal of radicals, not of
    molecules; a file with partial occupancies is a disordered structure."""
    pytest.importorskip("rdkit")
    atoms = read(UREA)
    with pytest.raises(ValueError, match="molecule CN2O is not a neutral closed-shell molecule.*hydrogens missing"):
        check_crystal(atoms[[a.index for a in atoms if a.symbol != "H"]], "urea-no-h.cif")
    disordered = atoms.copy()
    disordered.info["occupancy"] = {str(i): {a.symbol: 1.0} for i, a in enumerate(atoms)} | {"15": {"H": 0.5}}
    with pytest.raises(ValueError, match="partial occupancies"):
        check_crystal(disordered, "urea-disordered.cif")


def invoke(*args):
    return CliRunner().invoke(cli, ["--threads", "1", "properties", *map(str, args)])


def test_cli_rejects_a_file_that_is_not_a_molecular_crystal(tmp_path):
    water = tmp_path / "water.xyz"
    write(water, Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    res = invoke("--teacher", "emt", "--molecular-crystal", water, "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1, res.output
    assert res.output.strip().count("\n") == 0 and "water.xyz" in res.output and "periodic in 3 directions" in res.output
    missing = invoke("--teacher", "emt", "--molecular-crystal", tmp_path / "nope.cif", "--out", tmp_path / "o", "--quiet")
    assert missing.exit_code != 0 and "nope.cif" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "o").exists()


def test_cli_section_needs_its_file(tmp_path):
    res = invoke("--teacher", "emt", "--smiles", "water=O", "--sections", "molecular_crystal", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "need --molecular-crystal FILE" in res.output
    both = invoke("--teacher", "emt", "--molecular-crystal", UREA, "--element", "Si", "--out", tmp_path / "o")
    assert both.exit_code == 2 and "another run" in both.output and not (tmp_path / "o").exists()


def test_cli_molecular_crystal_alone_reports_a_collapse(tmp_path):
    """A random CHNO student (against itself) on urea, no molecules given: the section runs alone,
    the random model crushes the crystal (atoms overlap), and that is failed rows naming the
    reason, exit status 1 and no NaN in the JSON."""
    torch = pytest.importorskip("torch")
    from mlffd.testing import random_artifact

    model = random_artifact(tmp_path / "chno.mlffd.pt", "ultra-tiny", dtype=torch.float64, elements=("C", "H", "N", "O"))
    res = invoke("--model", model, "--teacher", f"model:{model}", "--molecular-crystal", UREA, "--fmax", "0.05",
                 "--molecule-fmax", "0.05", "--no-cache", "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 1 and "urea_lattice_energy_kJ_mol" in res.output, res.output

    def no_nan(c):
        raise AssertionError(f"{c} in properties.json")

    data = json.loads((tmp_path / "o" / "properties.json").read_text(), parse_constant=no_nan)
    assert set(data["settings"]) == {"ground", "molecular_crystal"} and data["raw"]["ground"] == {"teacher": {}, "student": {}}
    assert data["meta"]["molecular_crystals"] == UREA
    rows = {r["property"]: r for r in data["records"]}
    row = rows["urea_lattice_energy_kJ_mol"]
    assert row["passed"] is False and row["student"] is None and "overlapping atoms" in row["note"]
    assert row["note"].startswith("per CH4N2O")
    assert data["raw"]["molecular_crystal"]["teacher"]["urea"]["n_mol"] == 2
    assert math.isclose(KJ_MOL_PER_EV, 96.485, rel_tol=1e-4)
