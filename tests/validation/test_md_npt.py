"""NPT in md_validation (Langevin BAOAB with a hydrostatic barostat) against the static
equation of state, and `mlffd-validate trust --pressure`."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from click.testing import CliRunner

from md_validation.md import AseEngine, MDPlan, Stage, get_engine, lammps_available, run_md
from md_validation.units import EV_PER_A3_TO_GPA


def _emt_cu(s: float):
    atoms = bulk("Cu", "fcc", a=3.59 * s, cubic=True)
    atoms.calc = EMT()
    return atoms


def _static_volume_at(pressure_GPa: float, structure=_emt_cu, scales=np.linspace(0.94, 1.02, 9)) -> float:
    """Volume per atom where -dE/dV equals the pressure, from an EOS fit of ``structure(scale)``
    (default: EMT Cu)."""
    volumes, energies = [], []
    for s in scales:
        atoms = structure(s)
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    eos.fit()
    grid = np.linspace(min(volumes), max(volumes), 2001)
    pressure = -np.gradient(eos.func(grid, *eos.eos_parameters), grid) * EV_PER_A3_TO_GPA
    return float(np.interp(pressure_GPa, pressure[::-1], grid[::-1]))


def test_npt_reaches_the_volume_of_the_equation_of_state(tmp_path):
    """Cold Cu at 8 GPa: the mean volume of the second half matches the static EOS within 0.5 %
    (thermal expansion and the kinetic pressure at 50 K are far smaller), and the measured
    pressure averages to the target."""
    start = bulk("Cu", "fcc", a=3.615, cubic=True) * (2, 2, 2)
    plan = MDPlan(temperature_K=50.0, dt_fs=2.0, friction_per_fs=0.02, seed=1, pressure_GPa=8.0, barostat_fs=400.0,
                  stages=(Stage("npt", "npt", 1500, 10),))
    result = run_md(start, plan, AseEngine(EMT()), tmp_path, "emt", "emt", progress=False)[0]
    assert result.completed, result.error
    frames = result.frames()
    half = len(frames) // 2
    volume = np.mean([f.get_volume() / len(f) for f in frames[half:]])
    expected = _static_volume_at(8.0)
    assert volume == pytest.approx(expected, rel=5e-3), (volume, expected)
    assert volume < 0.97 * start.get_volume() / len(start)  # it did compress
    assert np.mean(result.series["pressure_GPa"][half:]) == pytest.approx(8.0, abs=1.0)
    np.testing.assert_allclose(frames[-1].cell.angles(), [90, 90, 90], atol=1e-8)  # hydrostatic: shape kept


def test_stage_and_plan_validation():
    with pytest.raises(ValueError, match="'nvt', 'nve' or 'npt'"):
        Stage("x", "nph", 10)
    with pytest.raises(ValueError, match="pressure_GPa must be a finite number"):
        MDPlan(temperature_K=300, pressure_GPa=float("nan"))
    with pytest.raises(ValueError, match="barostat_fs must be positive"):
        MDPlan(temperature_K=300, barostat_fs=0.0)


@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (mlffd.lammps + lmp) not available")
def test_lammps_npt_reaches_the_static_volume_and_agrees_with_ase(tmp_path):
    """Diamond Si with the shipped ultra-tiny at 10 GPa and 300 K: LAMMPS' 'fix nph iso' with
    its Langevin thermostat ends near the student's own static EOS volume at 10 GPa (thermal
    expansion at 300 K is a few tenths of a per cent), at the ASE engine's volume, with the target
    pressure on average and the cell's shape kept; the frames carry the changing cell."""
    from mlffd.calculator import DistilledCalculator

    start = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    calc = DistilledCalculator("ultra-tiny")
    expected = _static_volume_at(10.0, lambda s: _scaled(start, s, calc), np.linspace(0.88, 1.0, 9))
    plan = MDPlan(temperature_K=300.0, dt_fs=1.0, friction_per_fs=0.02, seed=2, pressure_GPa=10.0, barostat_fs=300.0,
                  stages=(Stage("npt", "npt", 3000, 10),))
    volumes = {}
    for name, engine in (("lammps", get_engine("lammps", model="ultra-tiny")), ("ase", AseEngine(calc))):
        result = run_md(start, plan, engine, tmp_path / name, name, name, progress=False)[0]
        assert result.completed, result.error
        frames = result.frames()
        half = len(frames) // 2
        volumes[name] = np.mean([f.get_volume() / len(f) for f in frames[half:]])
        assert np.mean(result.series["pressure_GPa"][half:]) == pytest.approx(10.0, abs=1.0), name
        np.testing.assert_allclose(frames[-1].cell.angles(), [90, 90, 90], atol=1e-6)
        # each frame's positions belong to its own cell: the student's energy there is the recorded one
        last = frames[-1].copy()
        last.calc = calc
        assert last.get_potential_energy() == pytest.approx(frames[-1].get_potential_energy(), abs=1e-3), name
        # and its forces are the model's, without the thermostat's friction and noise
        np.testing.assert_allclose(frames[-1].get_forces(), last.get_forces(), atol=1e-4, err_msg=name)
    assert volumes["lammps"] < 0.97 * start.get_volume() / len(start)  # it did compress
    assert volumes["lammps"] == pytest.approx(expected, rel=6e-3), (volumes, expected)
    assert volumes["lammps"] == pytest.approx(volumes["ase"], rel=4e-3), volumes


def _scaled(atoms, s, calc):
    a = atoms.copy()
    a.set_cell(a.cell * s, scale_atoms=True)
    a.calc = calc
    return a


def test_trust_pressure_needs_a_number(tmp_path):
    from md_validation.cli import cli

    res = CliRunner().invoke(cli, ["trust", "--temperature", "300", "--time", "20fs", "--quiet",
                                   "--out", str(tmp_path / "o"), "--pressure", "nan"])
    assert res.exit_code == 2 and "not finite" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
