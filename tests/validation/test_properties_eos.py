"""Equation-of-state section: known answers (Lennard-Jones lattice sums, Stillinger-Weber
silicon, LAMMPS' pair_style sw), a planted spurious minimum, and bad data in compare/figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_stress
from ase.eos import EquationOfState

from md_validation.properties import PropertiesConfig, Tolerances, element_system, structures_system
from md_validation.properties import eos
from md_validation.properties.relax import relax
from property_refs import lammps_sw, lj_calc, lj_fcc_exact

def test_lj_fcc_a0_and_bulk_modulus_match_lattice_sums():
    a0, b, bp = lj_fcc_exact()
    assert bp == pytest.approx(8.0, abs=1e-9)  # (n + m + 6) / 3 for an n-m potential at its minimum
    start = bulk("Ar", "fcc", a=1.01 * a0)  # primitive cell, one atom: a0 needs the conventional count
    system = structures_system([start], ["fcc"])
    calc = lj_calc()
    ground = relax(start, calc, fmax=1e-4).atoms
    res = eos.compute(calc, system, ground, PropertiesConfig(eos_points=7))
    fit = res["phases"]["fcc"]["fit"]
    assert res["cubic"] and not fit["error"]
    assert res["a0_A"] == pytest.approx(a0, rel=2e-4)  # 1/10 of the 0.2 % tolerance
    assert fit["B_GPa"] == pytest.approx(b, rel=5e-3)
    assert fit["Bprime"] == pytest.approx(bp, abs=0.1)
    # the numbers are ASE's Birch-Murnaghan fit of the stored points, to the last digit
    entry = res["phases"]["fcc"]
    ref = EquationOfState(entry["fit_volumes"], entry["fit_energies"], eos="birchmurnaghan")
    v0, e0, b_ase = ref.fit(warn=False)
    assert (fit["V0"], fit["E0"], fit["B_GPa"]) == pytest.approx((v0, e0, b_ase / units.GPa), rel=1e-12)
    # and a wrong answer is caught: a 1 % larger sigma is 1 % off in a0, 5x the tolerance
    rows = {r.property: r for r in eos.compare(res, res | {"a0_A": res["a0_A"] * 1.01}, Tolerances())}
    assert rows["a0_A"].passed is False and rows["bulk_modulus_GPa"].passed


SI_CONFIG = PropertiesConfig(phases=("beta_sn",), eos_points=7)


def test_stillinger_weber_silicon_against_published_values_and_lammps(sw_calc, tmp_path):
    """SW silicon: a0 = 5.431 Å and B = 101.4 GPa = (C11 + 2 C12) / 3 with Cowley's C11 = 151.4,
    C12 = 76.4 GPa (E. R. Cowley, PRL 60, 2379 (1988), quoted in LAMMPS examples/ELASTIC/in.elastic;
    Stillinger & Weber, PRB 31, 5262 (1985) for a0), and LAMMPS' pair_style sw through the same code."""
    system = element_system("Si", phases=("beta_sn",))
    results = {}
    for name, calc in (("mlffd", sw_calc), ("lammps", lammps_sw(tmp_path))):
        ground = relax(system.ground_atoms, calc).atoms
        results[name] = eos.compute(calc, system, ground, SI_CONFIG)
    res = results["mlffd"]
    fit = res["phases"]["diamond"]["fit"]
    assert res["a0_A"] == pytest.approx(5.431, abs=1e-3)
    assert fit["B_GPa"] == pytest.approx(101.4, rel=5e-3)
    assert res["phases"]["diamond"]["relaxed_energy"] == pytest.approx(-4.3366, abs=1e-4)  # -2 eps (SW 1985)
    lmp = results["lammps"]
    assert lmp["a0_A"] == pytest.approx(res["a0_A"], rel=1e-6)
    for name in ("diamond", "beta_sn"):
        a, b = res["phases"][name], lmp["phases"][name]
        assert a["fit"]["B_GPa"] == pytest.approx(b["fit"]["B_GPa"], rel=1e-4)
        assert a["relaxed_energy"] == pytest.approx(b["relaxed_energy"], abs=1e-6)
    rows = eos.compare(res, lmp, Tolerances())
    assert all(r.passed for r in rows if r.passed is not None), [r for r in rows if r.passed is False]
    beta = next(r for r in rows if r.property == "phase_energy_beta_sn_meV_per_atom")
    assert beta.teacher == pytest.approx(199.7, abs=2.0)  # SW's beta-tin lies ~0.2 eV/atom above diamond


class VolumeWell(Calculator):
    """``base`` plus a Gaussian well in the volume per atom v: E_w = -depth N exp(-(v - c)^2 / 2 w^2).
    Forces are unchanged; the stress gains dE_w/dV on the diagonal (ASE: sigma = (1/V) dE/d eps)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, base: Calculator, center: float, width: float, depth: float) -> None:
        super().__init__()
        self.base, self.center, self.width, self.depth = base, center, width, depth

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.base
        n = len(work)
        v = work.get_volume() / n
        g = math.exp(-0.5 * ((v - self.center) / self.width) ** 2)
        energy = work.get_potential_energy() - self.depth * n * g
        de_dv = self.depth * g * (v - self.center) / self.width ** 2
        self.results = {"energy": energy, "free_energy": energy, "forces": work.get_forces(),
                        "stress": work.get_stress(voigt=True) + de_dv * np.array([1.0, 1, 1, 0, 0, 0])}


def test_planted_false_minimum_is_flagged_and_teacher_against_itself_passes():
    system = element_system("Cu", phases=("bcc",))
    config = PropertiesConfig(phases=("bcc",))  # default 70-120 % grid: a point at 0.75 V0
    teacher = EMT()
    t_ground = relax(system.ground_atoms, teacher).atoms
    v0 = t_ground.get_volume() / len(t_ground)
    student = VolumeWell(EMT(), center=0.75 * v0, width=0.04 * v0, depth=0.5)
    probe = t_ground.copy()
    probe.set_cell(probe.cell * 0.91, scale_atoms=True)  # inside the well: its stress must be its dE/dV
    probe.calc = student
    assert probe.get_stress() == pytest.approx(calculate_numerical_stress(probe, eps=1e-5, force_consistent=False),
                                               abs=1e-7)
    t = eos.compute(teacher, system, t_ground, config)
    s = eos.compute(student, system, relax(system.ground_atoms, student).atoms, config)
    assert all(r.passed for r in eos.compare(t, t, config.tolerances) if r.passed is not None)
    rows = {r.property: r for r in eos.compare(t, s, config.tolerances)}
    assert rows["spurious_minimum_fcc"].passed is False and rows["spurious_minimum_bcc"].passed is False
    assert "0.7" in rows["spurious_minimum_fcc"].note  # the student's extra minimum, near 0.75 V0
    assert rows["eos_curve_fcc_meV"].passed is False
    # the well leaves V0 alone: a0, B and the fcc-bcc energy still agree
    for key in ("a0_A", "bulk_modulus_GPa", "phase_energy_bcc_meV_per_atom"):
        assert rows[key].passed, rows[key]


def test_curve_minima_edges_plateaus_and_noise():
    f = np.linspace(0.7, 1.2, 11)
    bowl = 0.5 * (f - 1.0) ** 2
    assert eos.curve_minima(f, bowl) == [pytest.approx(1.0)]
    assert eos.curve_minima(f, bowl - 2.0 * (f < 0.72)) == [pytest.approx(0.7), pytest.approx(1.0)]  # falls at 70 %
    assert eos.curve_minima(f, -f) == [pytest.approx(1.2)]  # still falling on expansion
    assert eos.curve_minima(f, np.zeros(11) + 1e-5 * np.sin(37 * f)) == []  # flat within noise
    assert eos.curve_minima(f, [None] * 11) == []


def test_basin_ends_where_the_teacher_leaves_the_phase_and_only_it_is_scored():
    f = np.linspace(0.7, 1.2, 11)
    bowl = 0.5 * (f - 1.0) ** 2
    assert eos.basin(f, bowl) == (pytest.approx(0.7), pytest.approx(1.2))
    opened = np.where(f > 1.07, bowl - 0.2, bowl)  # hcp-like: the structure opens into another on expansion
    assert eos.basin(f, opened) == (pytest.approx(0.7), pytest.approx(1.05))
    assert eos.basin(f, [None] * 5 + [0.01, 0.0, 0.01] + [None] * 3) == (pytest.approx(0.95), pytest.approx(1.05))
    teacher = {"fractions": f.tolist(), "energies": opened.tolist(), "relaxed_energy": 0.0}
    stays = {"fractions": f.tolist(), "energies": bowl.tolist(), "relaxed_energy": 0.0}
    dev, note = eos.curve_deviation(teacher, stays)  # a student that keeps the phase is not blamed for it
    assert dev == pytest.approx(0.0, abs=1e-9) and "0.7-1.05" in note and "1.1, 1.15, 1.2" in note
    off = {**stays, "energies": (bowl + 0.03 * (f < 0.72)).tolist()}  # inside the basin: still scored
    assert eos.curve_deviation(teacher, off)[0] == pytest.approx(30.0)
    rows = {r.property: r for r in eos.compare(_two_phase(teacher), _two_phase(stays), Tolerances())}
    assert rows["eos_curve_hcp_meV"].passed and "leaves the phase" in rows["eos_curve_hcp_meV"].note


def _two_phase(hcp: dict) -> dict:
    d = _synthetic()
    d["phases"]["hcp"] = {**d["phases"]["beta_sn"], **hcp}
    return d


def _synthetic(energy_shift: float = 0.0) -> dict:
    f = np.linspace(0.7, 1.2, 7)
    phase = lambda e0, v0: {"fractions": f.tolist(), "volumes": (f * v0).tolist(),  # noqa: E731
                            "energies": (e0 + 2.0 * (f - 1.0) ** 2).tolist(), "relaxed_energy": e0, "error": "",
                            "fit": {"V0": v0, "E0": e0, "B_GPa": 100.0, "Bprime": 4.0, "error": ""}}
    return {"ground": "diamond", "cubic": True, "a0_A": 5.43,
            "phases": {"diamond": phase(-4.0, 20.0), "beta_sn": phase(-3.8 + energy_shift, 17.0)}}


def test_compare_and_figures_survive_missing_and_nan_values():
    t = _synthetic()
    rows = eos.compare(t, _synthetic(energy_shift=0.005), Tolerances())
    assert all(r.passed for r in rows if r.passed is not None)
    broken = _synthetic()
    broken["a0_A"] = None  # a cached NaN comes back as JSON null
    broken["phases"]["beta_sn"]["energies"][2] = float("nan")
    broken["phases"]["diamond"]["fit"] = {"error": "Birch-Murnaghan fit failed: RuntimeError: no convergence"}
    rows = {r.property: r for r in eos.compare(t, broken, Tolerances())}
    assert not rows["a0_A"].passed and not rows["bulk_modulus_GPa"].passed
    assert "fit failed" in rows["bulk_modulus_GPa"].note
    assert not rows["eos_curve_beta_sn_meV"].passed and "0.867" in rows["eos_curve_beta_sn_meV"].note
    gone = _synthetic()
    del gone["phases"]["beta_sn"]
    rows = {r.property: r for r in eos.compare(t, gone, Tolerances())}
    assert rows["phase_energy_beta_sn_meV_per_atom"].passed is False
    assert rows["spurious_minimum_beta_sn"].passed is False and rows["below_ground_beta_sn"].passed is False
    below = _synthetic(energy_shift=-0.3)  # beta-tin 100 meV below diamond
    rows = {r.property: r for r in eos.compare(t, below, Tolerances())}
    assert rows["below_ground_beta_sn"].passed is False and rows["below_ground_diamond"].passed
    for student in (broken, gone, {}):
        png = eos.figures(t, student, {"teacher": "T", "student": "S"})["eos_curves"]
        assert png[:4] == b"\x89PNG"


def test_failing_calculator_gives_failed_rows_not_an_exception():
    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("model refused the structure")

    system = element_system("Cu", phases=("bcc",))
    config = PropertiesConfig(phases=("bcc",), eos_points=5)
    ground = system.ground_atoms
    s = eos.compute(Broken(), system, ground, config)
    assert "model refused" in s["phases"]["fcc"]["error"]
    t = eos.compute(EMT(), system, relax(ground, EMT()).atoms, config)
    rows = eos.compare(t, s, config.tolerances)
    assert rows and all(r.passed is False for r in rows if r.passed is not None)


def test_eos_relaxations_converge_to_eos_fmax_even_when_the_config_is_coarser(sw_calc, monkeypatch):
    """Whether a phase is held at a volume is decided by its constant-volume relaxation, so each
    point is converged to EOS_FMAX (or to the config's fmax where that is tighter): the forces on
    atoms and cell shape of every relaxed point are below it."""
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter

    seen = []
    real = eos.at_volume

    def spy(start, calc, volume, fmax):
        energy, relaxed = real(start, calc, volume, fmax)
        seen.append((fmax, relaxed))
        return energy, relaxed

    monkeypatch.setattr(eos, "at_volume", spy)
    start = element_system("Si", phases=("beta_sn",)).phases["beta_sn"]
    eos.phase_curve(sw_calc, start, PropertiesConfig(fmax=0.05, eos_points=5))
    assert seen and {f for f, _ in seen} == {eos.EOS_FMAX}
    for _, atoms in seen:
        work = atoms.copy()
        work.calc = sw_calc
        work.set_constraint(FixSymmetry(work, symprec=1e-3))
        assert np.abs(FrechetCellFilter(work, constant_volume=True).get_forces()).max() <= eos.EOS_FMAX
    seen.clear()
    eos.phase_curve(sw_calc, start, PropertiesConfig(fmax=0.0005, eos_points=5))
    assert {f for f, _ in seen} == {0.0005}
