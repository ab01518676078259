"""NPT in md_validation (Langevin BAOAB with a hydrostatic barostat) against the static
equation of state, and `mlffd-validate trust --pressure`."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from click.testing import CliRunner

from md_validation.md import AseEngine, MDPlan, Stage, run_md
from md_validation.units import EV_PER_A3_TO_GPA


def _static_volume_at(pressure_GPa: float) -> float:
    """Volume per atom of EMT Cu where -dE/dV equals the pressure, from an EOS fit."""
    volumes, energies = [], []
    for s in np.linspace(0.94, 1.02, 9):
        atoms = bulk("Cu", "fcc", a=3.59 * s, cubic=True)
        atoms.calc = EMT()
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


def test_trust_pressure_needs_the_ase_engine_and_a_number(tmp_path):
    from md_validation.cli import cli

    for args, text in ((["--pressure", "5", "--engine", "lammps"], "ASE engine only"),
                       (["--pressure", "nan"], "not finite")):
        res = CliRunner().invoke(cli, ["trust", "--temperature", "300", "--time", "20fs", "--quiet",
                                       "--out", str(tmp_path / "o"), *args])
        assert res.exit_code == 2 and text in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1
