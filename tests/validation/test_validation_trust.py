"""mlffd-validate trust: PASS on a student's own conditions, FAIL with reasons outside them
(a crystal-only Cu student asked about the liquid), exit statuses, reports, teacher budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from click.testing import CliRunner
from cu_frames import SMALL_MODEL, cu_frames, write_frames

from md_validation.cli import cli
from md_validation.trust import choose_spot_checks


@pytest.fixture(scope="module")
def crystal_student(tmp_path_factory):
    """A 4-head Cu student trained on rattled crystals only (EMT), and start structures."""
    from ase import units
    from ase.md.langevin import Langevin

    from mlffd.training import TrainConfig, train

    d = tmp_path_factory.mktemp("trust")
    cfg = TrainConfig.from_dict(dict(
        train=[str(write_frames(d / "train.extxyz", cu_frames(n_traj=6, per_traj=6, seed=0, slab=False)))],
        test=[str(write_frames(d / "test.extxyz", cu_frames(n_traj=2, per_traj=3, seed=7, slab=False)))],
        output=str(d / "out"), name="cu", teacher="emt", model="ultra-tiny",
        model_overrides={**SMALL_MODEL, "ensemble": 4}, val_fraction=0.3, batch_size=4, max_epochs=30, lr=5e-3,
        warmup_steps=4, eval_every=0, checkpoint_every=1000, threads=1, progress=False))
    model = train(cfg)["artifact"]
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    write(d / "crystal.xyz", crystal, format="extxyz")
    liquid = crystal.copy()  # melted by the teacher itself: a liquid the student never saw
    liquid.calc = EMT()
    dyn = Langevin(liquid, 2 * units.fs, temperature_K=3500, friction=0.05, fixcm=False, rng=np.random.default_rng(0))
    dyn.run(400)
    liquid.calc = None
    write(d / "liquid.xyz", liquid, format="extxyz")
    return {"model": model, "dir": d}


def _trust(student, *args):
    out = student["dir"] / f"out-{abs(hash(args))}"
    result = CliRunner().invoke(cli, ["trust", "--model", student["model"], "--quiet", "--out", str(out), *args])
    return result, out


def test_pass_on_its_own_conditions(crystal_student):
    res, out = _trust(crystal_student, "--structure", str(crystal_student["dir"] / "crystal.xyz"),
                      "--temperature", "300", "--time", "0.4ps", "--teacher", "emt", "--teacher-calls", "8")
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("PASS")
    data = json.loads((out / "trust.json").read_text())
    assert data["verdict"] == "PASS" and data["spot_checks"]["teacher_calls"] == 8
    assert data["uncertainty"]["fraction_over"] == 0.0 and data["novelty"]["fraction_over"] == 0.0 and data["stability"]["stable"]
    page = (out / "trust.html").read_text()
    assert "Verdict: PASS" in page and page.count("data:image/png;base64") >= 4  # uncertainty, novelty, parity, worst frames
    assert "**PASS**" in (out / "summary.md").read_text()


def test_fail_on_the_liquid_it_never_saw(crystal_student):
    res, out = _trust(crystal_student, "--structure", str(crystal_student["dir"] / "liquid.xyz"),
                      "--temperature", "2000", "--time", "0.3ps", "--teacher", "emt", "--teacher-calls", "6")
    assert res.exit_code == 1, res.output
    data = json.loads((out / "trust.json").read_text())
    assert data["verdict"] == "FAIL" and data["reasons"] and "FAIL: " in res.output
    assert data["spot_checks"]["teacher_calls"] <= 6
    assert data["spot_checks"]["force_rmse"] > data["spot_checks"]["tolerance"]  # the teacher disagrees
    # the uncertainty knew: far higher than on the crystal it was trained for (the heads are
    # refitted to the training errors at export, so the ratio is an honest one, not a blow-up)
    _, crystal = _trust(crystal_student, "--structure", str(crystal_student["dir"] / "crystal.xyz"),
                        "--temperature", "300", "--time", "0.2ps")
    crystal_data = json.loads((crystal / "trust.json").read_text())
    crystal_unc = np.mean(crystal_data["series"]["max_force_uncertainty"])
    assert np.mean(data["series"]["max_force_uncertainty"]) > 2 * crystal_unc
    # the novelty (fitted on the training frames at export) is judged on every frame; this
    # 8-feature student's features do not tell the liquid from its hot, rattled crystals (on the
    # 66-feature `tiny` they do: tests/model/test_novelty.py), and it raises no false alarm
    assert len(data["series"]["novelty"]) == len(data["series"]["time_ps"])
    assert crystal_data["novelty"]["fraction_over"] == 0.0


def test_without_teacher_the_report_says_what_the_verdict_rests_on(crystal_student):
    res, out = _trust(crystal_student, "--structure", str(crystal_student["dir"] / "crystal.xyz"),
                      "--temperature", "300", "--time", "0.2ps")
    assert res.exit_code == 0, res.output
    assert "no teacher: the verdict rests on uncertainty and stability alone" in res.output
    assert "spot_checks" not in json.loads((out / "trust.json").read_text())


def test_a_student_without_heads_is_judged_on_spot_checks_and_says_so(tmp_path):
    from mlffd.reference.sw import export_sw

    headless = export_sw(tmp_path / "sw.mlffd.pt")  # an artifact without ensemble heads, stable in MD
    res = CliRunner().invoke(cli, ["trust", "--model", str(headless), "--temperature", "300", "--time", "50fs",
                                   "--interval", "5", "--quiet", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "no ensemble heads: no uncertainty check" in res.output


def test_errors_exit_2_with_one_line(tmp_path):
    for args, text in ((["--model", str(tmp_path / "none.pt")], "cannot load model"),
                       (["--teacher", "nonsense:thing"], "cannot load teacher")):
        res = CliRunner().invoke(cli, ["trust", "--temperature", "300", "--time", "20fs", "--quiet",
                                       "--out", str(tmp_path / "o"), *args])
        assert res.exit_code == 2 and text in res.output, (args, res.output)


def test_spot_checks_take_the_most_uncertain_half_and_random_others():
    unc = np.array([0.1, 5.0, 0.2, 3.0, 0.3, 4.0, 0.0, 0.05])
    picks = choose_spot_checks(unc, len(unc), 4, seed=0)
    assert len(picks) == 4 and {1, 5} <= set(picks) and picks == sorted(picks)
    assert choose_spot_checks(None, 3, 20, seed=0) == [0, 1, 2]  # never more calls than frames
    assert choose_spot_checks(unc, len(unc), 0, seed=0) == []
