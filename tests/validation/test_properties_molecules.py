"""The molecular property sections (geometry, vibrations, torsions, conformers) against
independent references: a diatomic's harmonic frequency from its force constant, the RMSD of a
rigidly moved molecule, a model against itself (every error zero) and against the same model
with its energy scaled by s (the same minima; frequencies x sqrt(s); profiles and conformer
energies x s), all with a small analytic force field (harmonic bonds and angles, a torsion
term) whose forces come from autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from scipy.spatial.transform import Rotation

from md_validation.properties import PropertiesConfig, Side, Tolerances, molecule_system, run_properties
from md_validation.properties import geometry, vibrations
from md_validation.properties.cache import ResultCache
from md_validation.properties.molecules import aligned_rmsd, angle_triples

pytest.importorskip("rdkit")


class ToyForceField(Calculator):
    """Harmonic bonds (k_b, r0) and angles (k_a, theta0) of a reference geometry, and on each
    dihedral i-j-k-l of the molecule's rotatable bonds v3 (1 + cos 3 phi) + v1 (1 + cos phi),
    all times ``scale``; forces from torch autograd (float64)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, bonds, reference: np.ndarray, dihedrals=(), scale: float = 1.0, k_bond: float = 30.0,
                 k_angle: float = 3.0, v3: float = 0.06, v1: float = 0.04):
        super().__init__()
        self.bonds = torch.as_tensor(np.asarray(bonds, int).reshape(-1, 2))
        self.triples = torch.as_tensor(angle_triples(len(reference), np.asarray(bonds)))
        self.dihedrals = torch.as_tensor(np.asarray(dihedrals, int).reshape(-1, 4))
        ref = torch.as_tensor(reference, dtype=torch.float64)
        self.r0 = self._lengths(ref)
        self.t0 = self._angles(ref)
        self.scale, self.k_bond, self.k_angle, self.v3, self.v1 = scale, k_bond, k_angle, v3, v1

    def _lengths(self, x):
        return torch.linalg.norm(x[self.bonds[:, 1]] - x[self.bonds[:, 0]], dim=1)

    def _angles(self, x):
        u = x[self.triples[:, 0]] - x[self.triples[:, 1]]
        v = x[self.triples[:, 2]] - x[self.triples[:, 1]]
        return torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=1), dim=1), (u * v).sum(1))

    def _dihedrals(self, x):
        i, j, k, l = (x[self.dihedrals[:, c]] for c in range(4))
        b0, b1, b2 = j - i, k - j, l - k
        n1, n2 = torch.cross(b0, b1, dim=1), torch.cross(b1, b2, dim=1)
        m = torch.cross(n1, b1 / torch.linalg.norm(b1, dim=1, keepdim=True), dim=1)
        return torch.atan2((m * n2).sum(1), (n1 * n2).sum(1))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions, dtype=torch.float64, requires_grad=True)
        e = 0.5 * self.k_bond * ((self._lengths(x) - self.r0) ** 2).sum()
        e = e + 0.5 * self.k_angle * ((self._angles(x) - self.t0) ** 2).sum()
        if len(self.dihedrals):
            phi = self._dihedrals(x)
            e = e + (self.v3 * (1 + torch.cos(3 * phi)) + self.v1 * (1 + torch.cos(phi))).sum()
        e = self.scale * e
        (grad,) = torch.autograd.grad(e, x)
        self.results = {"energy": float(e.detach()), "forces": -grad.numpy()}


def test_aligned_rmsd_of_a_rigidly_moved_molecule_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    moved = x @ Rotation.random(random_state=1).as_matrix().T + [3.0, -2.0, 7.0]
    assert aligned_rmsd(moved, x) < 1e-12
    # a mirror image is not a rotation: its RMSD is not zero
    assert aligned_rmsd(x * [1, 1, -1], x) > 0.1
    shifted = x.copy()
    shifted[0] += [0.3, 0.0, 0.0]
    assert aligned_rmsd(shifted, x) > 0.0


@pytest.mark.parametrize("k, symbols", [(50.0, "N2"), (36.0, "H2")])
def test_diatomic_frequency_is_the_analytic_harmonic_one(k, symbols):
    """A spring k between two atoms: one internal mode at sqrt(k / mu) (cm^-1 by ASE's units)."""
    atoms = Atoms(symbols, positions=[[0, 0, 0], [0.3, 0.5, 1.0]])
    calc = ToyForceField([[0, 1]], atoms.positions, k_bond=k)
    h = vibrations.hessian(atoms, calc, 0.001)  # central differences: error ~ (delta / r0)^2
    freqs = vibrations.frequencies_cm(h, atoms.positions, atoms.get_masses())
    m = atoms.get_masses()
    mu = m[0] * m[1] / (m[0] + m[1])
    expected = units._hbar * 1e10 / math.sqrt(units._e * units._amu) * math.sqrt(k / mu) / units.invcm
    assert freqs.shape == (1,)  # linear: 3N - 5 modes
    assert freqs[0] == pytest.approx(expected, rel=1e-5)


def test_frequencies_match_ase_vibrations_for_a_polyatomic(tmp_path):
    """The projected Hessian's modes equal ASE's Vibrations (same displacement) for water."""
    from ase.build import molecule
    from ase.vibrations import Vibrations

    atoms = molecule("H2O")
    calc = ToyForceField([[0, 1], [0, 2]], atoms.positions)
    ours = vibrations.frequencies_cm(vibrations.hessian(atoms, calc, 0.005), atoms.positions, atoms.get_masses())
    work = atoms.copy()
    work.calc = calc
    vib = Vibrations(work, delta=0.005, nfree=2, name=str(tmp_path / "vib"))
    vib.run()
    ase_freqs = np.sort(np.real(vib.get_frequencies()))[-3:]
    np.testing.assert_allclose(ours, ase_freqs, rtol=1e-4)


@pytest.fixture(scope="module")
def butane():
    from md_validation.properties.torsions import scan_dihedral

    system = molecule_system({"butane": "CCCC"}, conformers=3)
    start = system.molecules["butane"]
    dihedral, _ = scan_dihedral(start)
    return system, start, dihedral


def _run(system, teacher, student, tmp_path, **kw):
    config = PropertiesConfig(sections=("geometry", "vibrations", "torsions", "conformers"), torsion_points=6,
                              molecule_fmax=0.005, **kw)
    return run_properties(Side(teacher, "toy", "toy-teacher"), Side(student, "toy-student"), system, config,
                          cache=ResultCache(tmp_path), progress=False)


def test_a_model_against_itself_has_no_error(butane, tmp_path):
    system, start, dihedral = butane
    assert dihedral[1:3] in ((1, 2), (2, 1))  # butane's central C-C
    assert len(start.info["conformers"]) >= 2
    ff = ToyForceField(start.info["bonds"], start.positions, [dihedral])
    result = _run(system, ff, ToyForceField(start.info["bonds"], start.positions, [dihedral]), tmp_path)
    rows = {r.property: r for r in result.records}
    assert result.passed, [r for r in result.scored if not r.passed]
    for name in ("butane_heavy_rmsd_A", "butane_bond_mae_A", "butane_angle_mae_deg", "butane_frequency_mae_cm",
                 "butane_torsion_profile_meV", "butane_torsion_barrier_meV", "butane_conformer_mae_meV"):
        assert abs(rows[name].error) < 1e-6, name
    assert rows["butane_conformer_spearman"].student == pytest.approx(1.0)
    assert rows["butane_bonds_changed"].passed and rows["butane_imaginary_modes"].passed
    # the scan found a barrier, and the teacher was cached: a second run computes nothing new for it
    assert rows["butane_torsion_barrier_meV"].teacher > 50.0
    again = _run(system, ff, ff, tmp_path)
    assert again.cache["hits"] == 5 and again.cache["misses"] == 0


def test_a_scaled_energy_scales_every_metric_exactly(butane, tmp_path):
    """Student = teacher x s: the same minima (RMSD, bond and angle errors zero), every frequency
    x sqrt(s), profile and conformer energies x s, the ranking unchanged."""
    system, start, dihedral = butane
    s = 1.1025  # frequencies x 1.05
    t = ToyForceField(start.info["bonds"], start.positions, [dihedral])
    st = ToyForceField(start.info["bonds"], start.positions, [dihedral], scale=s)
    result = _run(system, t, st, tmp_path, torsion_mode="rigid")
    rows = {r.property: r for r in result.records}
    raw = result.raw
    assert rows["butane_heavy_rmsd_A"].student < 1e-3
    assert rows["butane_bond_mae_A"].student < 1e-4
    ft = np.asarray(raw["vibrations"]["teacher"]["butane"]["frequencies_cm"])
    fs = np.asarray(raw["vibrations"]["student"]["butane"]["frequencies_cm"])
    real = ft > 50  # the soft methyl torsions depend on how well the minimum converged
    np.testing.assert_allclose(fs[real], ft[real] * math.sqrt(s), rtol=2e-3)
    assert rows["butane_frequency_worst_cm"].error == pytest.approx(100 * (math.sqrt(s) - 1), abs=0.3)
    assert rows["butane_frequency_worst_cm"].passed is True  # 5 % within the 10 % tolerance
    pt = np.asarray(raw["torsions"]["teacher"]["butane"]["profile_meV"])
    ps = np.asarray(raw["torsions"]["student"]["butane"]["profile_meV"])
    np.testing.assert_allclose(ps, s * pt, rtol=1e-3, atol=0.05)
    assert rows["butane_torsion_barrier_meV"].error == pytest.approx((s - 1) * rows["butane_torsion_barrier_meV"].teacher, rel=1e-3)
    ct = np.asarray(raw["conformers"]["teacher"]["butane"]["relative_meV"])
    cs = np.asarray(raw["conformers"]["student"]["butane"]["relative_meV"])
    np.testing.assert_allclose(cs, s * ct, rtol=1e-3, atol=0.05)
    assert rows["butane_conformer_mae_meV"].student == pytest.approx((s - 1) * np.mean(ct), rel=1e-2, abs=0.05)


def test_a_shifted_bond_length_is_measured(butane, tmp_path):
    """A student whose C-C bonds are 0.05 Å longer: bond MAE = 0.05 x (C-C bonds / all bonds)
    (angles and C-H bonds keep their reference, the harmonic terms are independent at a minimum
    reachable by all of them at once)."""
    system, start, dihedral = butane
    bonds = np.asarray(start.info["bonds"])
    t = ToyForceField(bonds, start.positions, [dihedral])
    s = ToyForceField(bonds, start.positions, [dihedral])
    cc = torch.as_tensor((start.numbers[bonds[:, 0]] == 6) & (start.numbers[bonds[:, 1]] == 6))
    s.r0 = s.r0 + 0.05 * cc
    config = PropertiesConfig(sections=("geometry",), molecule_fmax=0.001)
    result = run_properties(Side(t, "t"), Side(s, "s"), system, config, progress=False)
    rows = {r.property: r for r in result.records}
    assert rows["butane_bond_mae_A"].student == pytest.approx(0.05 * int(cc.sum()) / len(bonds), rel=0.05)
    assert rows["butane_bond_mae_A"].passed is False
    assert rows["butane_heavy_rmsd_A"].student > 0.01


def test_sections_must_fit_the_system(butane):
    system, _, _ = butane
    ff = ToyForceField([[0, 1]], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="need a periodic crystal"):
        run_properties(Side(ff, "t"), Side(ff, "s"), system, PropertiesConfig(sections=("eos", "geometry")), progress=False)
    with pytest.raises(ValueError, match="unknown tolerance"):
        Tolerances().with_overrides({"rmsd": 1.0})
    assert Tolerances().with_overrides({"rmsd_A": 0.2}).rmsd_A == 0.2


def test_cli_runs_the_molecular_sections_for_a_molecular_model(tmp_path):
    """`mlffd-validate properties` on a model of several elements: molecular sections by default
    (here restricted), a model against itself passes; crystal sections on molecules and a model
    without the default molecules' elements are one-line errors."""
    import json

    from click.testing import CliRunner

    from md_validation.cli import cli
    from mlffd.models import ModelConfig
    from mlffd.testing import random_artifact

    cfg = ModelConfig(elements=("H", "C", "O"), cutoff=4.0, features=8, channels=4, hidden=8, readout_hidden=4)
    model = random_artifact(tmp_path / "hco.mlffd.pt", config=cfg, dtype=torch.float64, seed=2)
    base = ["properties", "--model", str(model), "--teacher", f"model:{model}", "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    ok = CliRunner().invoke(cli, [*base, "--smiles", "ethanol=CCO", "--sections", "geometry,vibrations",
                                  "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "o" / "properties.json").read_text())
    assert {r["section"] for r in report["records"]} == {"geometry", "vibrations"}
    assert report["molecules"] == {"ethanol": "CCO"}
    assert all(r["passed"] for r in report["records"] if r["passed"] is not None)
    wrong = CliRunner().invoke(cli, [*base, "--smiles", "ethanol=CCO", "--sections", "eos", "--out", str(tmp_path / "w")])
    assert wrong.exit_code != 0 and "do not apply to molecules" in wrong.output
    none = CliRunner().invoke(cli, [*base, "--sections", "geometry", "--out", str(tmp_path / "n")])
    assert none.exit_code != 0 and "no default test molecule" in none.output
    bad = CliRunner().invoke(cli, [*base, "--smiles", "ethanol", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "expected NAME=SMILES" in bad.output


def test_conformers_that_tie_are_not_ranked():
    """Two conformers relaxing into one minimum (energies within 1 meV): no ranking to score;
    a reversed order of distinct energies is rho = -1 and fails."""
    from md_validation.properties import conformers

    tie = {"m": {"relative_meV": [0.0, 2e-5], "converged": [True, True], "error": ""}}
    rev = {"m": {"relative_meV": [2e-5, 0.0], "converged": [True, True], "error": ""}}
    rows = {r.property: r for r in conformers.compare(tie, rev, Tolerances())}
    assert rows["m_conformer_spearman"].passed is None and rows["m_conformer_mae_meV"].passed
    t = {"m": {"relative_meV": [0.0, 20.0, 40.0], "converged": [True] * 3, "error": ""}}
    s = {"m": {"relative_meV": [40.0, 20.0, 0.0], "converged": [True] * 3, "error": ""}}
    rows = {r.property: r for r in conformers.compare(t, s, Tolerances())}
    assert rows["m_conformer_spearman"].student == pytest.approx(-1.0) and rows["m_conformer_spearman"].passed is False
