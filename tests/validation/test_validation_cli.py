"""``mlffd-validate`` smoke tests (click CliRunner) on tiny systems with random students and EMT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner

from md_validation.cli import cli
from md_validation.md import AseEngine, MDPlan, Stage, lammps_available, run_md
from mlffd import DistilledCalculator
from mlffd.testing import random_artifact


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    out = {
        "si": random_artifact(d / "si.mlffd.pt", "ultra-tiny", dtype=torch.float64),
        "si_teacher": random_artifact(d / "si_teacher.mlffd.pt", "ultra-tiny", dtype=torch.float64, seed=1),
        "cu": random_artifact(d / "cu.mlffd.pt", "ultra-tiny", dtype=torch.float64, elements=("Cu",)),
        "si8": d / "si8.xyz",
        "cu_labelled": d / "cu_labelled.extxyz",
        "cu_plain": d / "cu_plain.extxyz",
        "dir": d,
    }
    write(out["si8"], bulk("Si", "diamond", a=5.43, cubic=True))
    labelled, plain = [], []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.08, seed=k)
        atoms.info["config_type"] = ["bulk", "hot"][k % 2]
        plain.append(atoms.copy())
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
        labelled.append(atoms)
    write(out["cu_labelled"], labelled)
    write(out["cu_plain"], plain)
    return out


def invoke(*args):
    result = CliRunner().invoke(cli, ["--threads", "1", *map(str, args)])
    return result


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for cmd in ("nve", "forces", "rdf", "compare"):
        assert cmd in result.output


def test_nve_pass_then_fail_on_threshold(files, tmp_path):
    args = ["nve", "--model", files["si"], "--structure", files["si8"], "--temperature", "300", "--time", "100fs",
            "--thermalise", "20fs", "--interval", "5", "--out", tmp_path, "--quiet"]
    threads = torch.get_num_threads()
    ok = invoke(*args)
    assert ok.exit_code == 0, ok.output
    assert torch.get_num_threads() == threads  # --threads applies to the command only
    assert "PASS" in ok.output and "drift_meV_per_atom_per_ps" in ok.output
    saved = json.loads((tmp_path / "nve.json").read_text())
    assert saved["passed"] and saved["n_frames"] == 21
    assert 'id="fig-nve_energy"' in (tmp_path / "nve.html").read_text()
    strict = invoke(*args, "--threshold", "0")  # any drift fails; the MD is reused from the cache
    assert strict.exit_code == 1
    assert "FAIL" in strict.output


def test_bad_inputs_are_click_errors(files, tmp_path):
    bad = invoke("nve", "--model", files["si"], "--time", "ten minutes", "--out", tmp_path)
    assert bad.exit_code == 2 and "cannot read time" in bad.output
    missing = invoke("nve", "--model", tmp_path / "nope.mlffd.pt", "--out", tmp_path, "--quiet")
    assert missing.exit_code == 1 and "cannot load model" in missing.output
    teacher = invoke("compare", "--model", files["si"], "--teacher", "nonsense:thing", "--structure", files["si8"],
                     "--out", tmp_path, "--quiet")
    assert teacher.exit_code == 1 and "cannot load teacher" in teacher.output


def test_lammps_engine_or_clear_error(files, tmp_path):
    result = invoke("nve", "--model", files["si"], "--structure", files["si8"], "--temperature", "300", "--time", "20fs",
                    "--thermalise", "0fs", "--interval", "10", "--engine", "lammps", "--out", tmp_path, "--quiet")
    if lammps_available():
        assert result.exit_code == 0, result.output
        assert "engine lammps" in result.output
    else:
        assert result.exit_code == 1 and "not available" in result.output


def test_forces_labelled_and_teacher(files, tmp_path):
    a = invoke("forces", "--model", files["cu"], "--data", files["cu_labelled"], "--out", tmp_path / "a", "--quiet")
    assert a.exit_code == 0, a.output
    b = invoke("forces", "--model", files["cu"], "--teacher", "emt", "--data", files["cu_plain"], "--out", tmp_path / "b", "--quiet")
    assert b.exit_code == 0, b.output
    ma = json.loads((tmp_path / "a" / "forces.json").read_text())
    mb = json.loads((tmp_path / "b" / "forces.json").read_text())
    assert ma["overall"]["force_rmse"] == pytest.approx(mb["overall"]["force_rmse"], rel=1e-6)
    assert set(ma["per_config_type"]) == {"bulk", "hot"}
    assert (tmp_path / "a" / "forces.png").exists()
    c = invoke("forces", "--model", files["cu"], "--data", files["cu_plain"], "--out", tmp_path / "c", "--quiet")
    assert c.exit_code == 1 and "no reference forces" in c.output


def test_rdf_of_two_trajectories(files, tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    plan = MDPlan(300.0, 2.0, stages=(Stage("nvt", "nvt", 20, 5),))
    paths = []
    for calc, label in ((EMT(), "emt"), (DistilledCalculator(files["cu"]), "student")):
        paths.append(run_md(cu, plan, AseEngine(calc), tmp_path / "md", label, label, progress=False)[0].path)
    result = invoke("rdf", *paths, "--r-max", "5", "--nbins", "50", "--out", tmp_path / "rdf", "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "rdf" / "rdf.json").read_text())
    err = saved["rdf_error"][paths[1].name]["Cu-Cu"]
    assert err["mean"] > 0 and err["integral"] == pytest.approx(err["mean"] * 5.0)
    assert saved["rdf"][paths[0].name]["Cu-Cu"]["first_peak_A"] == pytest.approx(2.55, abs=0.15)
    assert "RDF error" in result.output
    same = invoke("rdf", paths[0], paths[0], "--r-max", "5", "--nbins", "50", "--out", tmp_path / "same", "--quiet")
    assert same.exit_code == 0
    errs = json.loads((tmp_path / "same" / "rdf.json").read_text())["rdf_error"]
    assert list(errs.values())[0]["Cu-Cu"]["mean"] == 0.0


def test_compare_si_with_model_teacher(files, tmp_path):
    args = ["compare", "--model", files["si"], "--teacher", f"model:{files['si_teacher']}", "--structure", files["si8"],
            "--temperature", "500", "--time", "100fs", "--equilibration", "20fs", "--nve-time", "40fs", "--dt", "2fs",
            "--interval", "5", "--window", "40fs", "--r-max", "5", "--nbins", "50", "--out", tmp_path, "--quiet"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "| metric | teacher | student |" in result.output
    for name in ("report.html", "metrics.json", "summary.md"):
        assert (tmp_path / name).exists()
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["structure"]["n_atoms"] == 8 and "Si-Si" in m["comparison"]["rdf_error"]
    assert not m["runs"]["student"]["cached"]
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "md").glob("*.traj")}
    again = invoke(*args)
    assert again.exit_code == 0
    m2 = json.loads((tmp_path / "metrics.json").read_text())
    assert m2["runs"]["student"]["cached"] and m2["runs"]["teacher"]["cached"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "md").glob("*.traj")} == before
    assert np.isclose(m2["comparison"]["rdf_error_mean"], m["comparison"]["rdf_error_mean"])


def test_compare_a_molecule_in_vacuum(tmp_path):
    """`compare` on a molecule with no cell: pair distributions normalised per pair count (no box
    density), a model against itself gives zero RDF error; an element with one atom has no pair of its own."""
    from ase.build import molecule

    from mlffd.models import ModelConfig
    from mlffd.testing import random_artifact

    cfg = ModelConfig(elements=("H", "C", "O"), cutoff=4.0, features=8, channels=4, hidden=8, readout_hidden=4)
    model = random_artifact(tmp_path / "hco.mlffd.pt", config=cfg, dtype=torch.float64, seed=5)
    start = molecule("CH3CH2OH")
    write(tmp_path / "ethanol.xyz", start)
    result = invoke("compare", "--model", model, "--teacher", f"model:{model}", "--structure", tmp_path / "ethanol.xyz",
                    "--temperature", "300", "--time", "60fs", "--equilibration", "10fs", "--nve-time", "20fs", "--dt", "0.5fs",
                    "--interval", "5", "--window", "20fs", "--r-max", "5", "--nbins", "50", "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert {"C-O", "O-H", "all"} <= set(m["comparison"]["rdf_error"]) and "O-O" not in m["comparison"]["rdf_error"]
    assert m["comparison"]["rdf_error_mean"] == pytest.approx(0.0, abs=1e-12)
