"""md_validation.nve / md: the drift metric, time strings, MD runs and their cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from md_validation.md import AseEngine, EngineUnavailable, MDPlan, Stage, get_engine, lammps_available, run_md
from md_validation.nve import NVESettings, drift_metrics, nve_verdict, validate_nve, write_nve_report
from md_validation.units import format_time, parse_time, steps_for


def test_parse_time():
    assert parse_time("50ps") == 50000.0
    assert parse_time("500fs") == 500.0
    assert parse_time("1 fs") == 1.0
    assert parse_time("0.5ps") == 500.0
    assert parse_time("2.5") == 2.5
    assert parse_time("1e3fs") == 1000.0
    assert parse_time(3) == 3.0
    assert format_time(2500.0) == "2.5 ps" and format_time(500.0) == "500 fs"
    assert steps_for(1000.0, 0.5) == 2000
    for bad in ("fast", "10 years", "-5ps"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_drift_recovers_injected_slope():
    t = np.arange(0, 5001, 10.0)  # fs
    n = 64
    slope = 2.5  # meV/atom/ps
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.3, size=t.size)  # meV/atom
    etot = (-300.0 + (slope * t / 1000.0 + noise) / 1000.0) * 1.0 * n / n  # eV per atom
    m = drift_metrics(t, etot * n, n)
    assert m["drift_meV_per_atom_per_ps"] == pytest.approx(slope, rel=0.02)
    assert m["detrended_fluctuation_meV_per_atom"] == pytest.approx(0.3, rel=0.1)
    assert m["duration_ps"] == pytest.approx(5.0)
    exact = drift_metrics(t, (-300.0 + slope * t / 1e6) * n, n)
    assert exact["drift_meV_per_atom_per_ps"] == pytest.approx(slope, rel=1e-9)
    assert exact["max_deviation_meV_per_atom"] == pytest.approx(slope * 5.0, rel=1e-9)


def test_no_drift_for_constant_energy():
    t = np.arange(0, 2001, 10.0)
    m = drift_metrics(t, np.full(t.size, -123.4), 10, temperature=np.full(t.size, 300.0))
    assert m["drift_meV_per_atom_per_ps"] == pytest.approx(0.0, abs=1e-9)
    assert m["fluctuation_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    assert m["max_deviation_meV_per_atom"] == 0.0
    assert m["mean_temperature_K"] == 300.0


def test_verdict():
    s = NVESettings(threshold=1.0, max_deviation=5.0)
    assert nve_verdict({"drift_meV_per_atom_per_ps": 0.5, "max_deviation_meV_per_atom": 1.0}, s, True) == (True, [])
    ok, why = nve_verdict({"drift_meV_per_atom_per_ps": -1.5, "max_deviation_meV_per_atom": 1.0}, s, True)
    assert not ok and "drift" in why[0]
    ok, why = nve_verdict({"drift_meV_per_atom_per_ps": 0.1, "max_deviation_meV_per_atom": 9.0}, s, False)
    assert not ok and len(why) == 2


def test_validate_nve_emt_and_cache(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    settings = NVESettings(temperature_K=300.0, thermalise_fs=40.0, time_fs=200.0, dt_fs=2.0, interval=5)
    result = validate_nve(cu, AseEngine(EMT()), "emt", settings, tmp_path, progress=False)
    m = result.metrics
    assert result.passed, m["fail_reasons"]
    assert abs(m["drift_meV_per_atom_per_ps"]) < 1.0
    assert m["n_frames"] == 21 and m["duration_ps"] == pytest.approx(0.2)
    assert 50.0 < m["mean_temperature_K"] < 600.0
    assert [s.name for s in result.stages] == ["thermalise", "nve"]
    assert not any(s.cached for s in result.stages)
    # same settings: read back from the cache, identical numbers
    again = validate_nve(cu, AseEngine(EMT()), "emt", settings, tmp_path, progress=False)
    assert all(s.cached for s in again.stages)
    assert again.metrics["drift_meV_per_atom_per_ps"] == m["drift_meV_per_atom_per_ps"]
    # a different seed is a different run
    other = validate_nve(cu, AseEngine(EMT()), "emt", NVESettings(**{**settings.__dict__, "seed": 1}), tmp_path, progress=False)
    assert not any(s.cached for s in other.stages)
    files = write_nve_report(result, tmp_path / "report")
    saved = json.loads(files["json"].read_text())
    for key in ("drift_meV_per_atom_per_ps", "fluctuation_meV_per_atom", "max_deviation_meV_per_atom",
                "mean_temperature_K", "passed", "speed"):
        assert key in saved
    assert 'id="fig-nve_energy"' in files["html"].read_text()


def test_same_seed_same_start_and_thermostat(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    plan = MDPlan(500.0, 1.0, 0.02, seed=7, stages=(Stage("nvt", "nvt", 20, 10),))
    a = run_md(cu, plan, AseEngine(EMT()), tmp_path / "a", "x", "emt", progress=False)[0]
    b = run_md(cu, plan, AseEngine(EMT()), tmp_path / "b", "x", "emt", progress=False)[0]
    fa, fb = a.frames(), b.frames()
    assert len(fa) == 3
    np.testing.assert_allclose(fa[-1].positions, fb[-1].positions)
    np.testing.assert_allclose(fa[0].get_momenta(), fb[0].get_momenta())
    assert a.series["time_fs"].tolist() == [0.0, 10.0, 20.0]


def test_exploding_run_is_stopped_and_kept(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    cu.positions[0] = cu.positions[1] + [0.4, 0.0, 0.0]  # two atoms almost on top of each other
    plan = MDPlan(300.0, 1.0, stages=(Stage("nve", "nve", 200, 5), Stage("more", "nve", 10, 5)), max_temperature_factor=5.0)
    results = run_md(cu, plan, AseEngine(EMT()), tmp_path, "boom", "emt", progress=False)
    assert len(results) == 1 and not results[0].completed
    assert "left the physical regime" in results[0].error
    assert results[0].steps_done < 200 and results[0].path.exists()


def test_engines():
    assert get_engine("ase", calc=EMT()).name == "ase"
    with pytest.raises(ValueError):
        get_engine("gromacs", calc=EMT())
    try:
        engine = get_engine("lammps", model="tiny-does-not-exist.mlffd.pt")
    except (EngineUnavailable, ValueError, FileNotFoundError) as exc:
        assert "lammps" in str(exc).lower() or "model" in str(exc).lower()
    else:
        assert engine.name == "lammps"


@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (mlffd.lammps + lmp) not available")
def test_lammps_engine_matches_ase_in_nve(tmp_path):
    import torch

    from mlffd import DistilledCalculator
    from mlffd.testing import random_artifact

    path = random_artifact(tmp_path / "si.mlffd.pt", "ultra-tiny", dtype=torch.float64)
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    plan = MDPlan(600.0, 1.0, stages=(Stage("nve", "nve", 20, 10),))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ase_run = run_md(si, plan, AseEngine(DistilledCalculator(path)), tmp_path, "ase", "m", progress=False)[0]
    finally:
        torch.set_num_threads(threads)
    lmp_run = run_md(si, plan, get_engine("lammps", model=path), tmp_path, "lmp", "m", progress=False)[0]
    assert lmp_run.completed and lmp_run.steps_done == 20
    for key in ("time_fs", "epot", "ekin", "etot", "pressure_GPa"):
        np.testing.assert_allclose(lmp_run.series[key], ase_run.series[key], rtol=1e-6, atol=1e-6, err_msg=key)
    a, b = ase_run.frames()[-1], lmp_run.frames()[-1]
    d = a.cell.scaled_positions(b.positions) - a.cell.scaled_positions(a.positions)
    assert np.abs((d - np.round(d)) @ a.cell.array).max() < 1e-6
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-6)


@pytest.mark.lammps
@pytest.mark.skipif(not lammps_available(), reason="LAMMPS (mlffd.lammps + lmp) not available")
def test_lammps_engine_finishes_a_run_whose_screen_output_exceeds_a_pipe(tmp_path):
    """A thermo line every step for 1,500 steps is ~200 KB of screen output, more than a pipe
    holds: the engine must not block LAMMPS on it (the timeout turns a hang into a failure)."""
    from md_validation.lammps_engine import LammpsEngine
    from mlffd.reference.sw import export_sw

    path = export_sw(tmp_path / "sw.mlffd.pt")  # Stillinger-Weber: stable MD, unlike a random student
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    plan = MDPlan(300.0, 1.0, stages=(Stage("nve", "nve", 1500, 1),))
    run = run_md(si, plan, LammpsEngine(path, timeout=120.0), tmp_path, "lmp", "m", progress=False)[0]
    assert run.completed and run.steps_done == 1500 and len(run.series["etot"]) == 1501


def test_setup_failure_is_raised_not_cached(tmp_path):
    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("no such element in this model")

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    plan = MDPlan(300.0, stages=(Stage("nve", "nve", 10, 5),))
    with pytest.raises(RuntimeError, match="could not start"):
        run_md(cu, plan, AseEngine(Broken()), tmp_path, "x", "broken", progress=False)
    assert not list(tmp_path.glob("*.traj")) and not list(tmp_path.glob("*.json"))
