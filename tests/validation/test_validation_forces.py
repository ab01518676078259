"""md_validation.forces: metrics computed by hand, labels from files or a teacher, the six-panel report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from md_validation.forces import evaluate, force_metrics, forces_report, parity_metrics
from mlffd.metrics import angular_errors, force_errors
from mlffd import DistilledCalculator
from mlffd.testing import random_artifact

FORCE_KEYS = {"force_r2", "force_rmse", "force_mae", "force_max_error", "force_p90_error", "force_p95_error",
              "force_angular_error_deg", "n_atoms"}
FRAME_KEYS = {"energy_mae_meV_per_atom", "stress_mae_GPa", "n_frames"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cu_frames(n=4, labelled=True):
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.rattle(0.1, seed=k)
        atoms.info["config_type"] = "hot" if k % 2 else "cold"
        if labelled:
            atoms.calc = EMT()
            res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
            atoms.calc = SinglePointCalculator(atoms, **res)
        frames.append(atoms)
    return frames


def test_angles_by_hand():
    v = np.array([[1.0, 2.0, -0.5], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(angular_errors(v, v), 0.0, atol=1e-6)
    np.testing.assert_allclose(angular_errors(-v, v), 180.0, atol=1e-6)
    np.testing.assert_allclose(angular_errors(v * 7.0, v), 0.0, atol=1e-6)  # length does not matter
    assert angular_errors([[0, 1.0, 0]], [[1.0, 0, 0]])[0] == pytest.approx(90.0)
    assert angular_errors([[0, 0, 0.0]], [[1.0, 0, 0]])[0] == 90.0  # a zero prediction gives no direction
    assert np.isnan(angular_errors([[1.0, 0, 0]], [[0, 0, 0.0]])[0])  # nor does a zero reference


def test_r2_by_hand():
    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape(2, 3)
    assert force_errors(ref, ref)["r2"] == 1.0
    assert force_errors(np.full((2, 3), ref.mean()), ref)["r2"] == pytest.approx(0.0)
    assert force_errors(ref + 1.0, ref)["r2"] == pytest.approx(1.0 - 6.0 / 17.5)


def test_force_metrics_by_hand():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 3))
    perfect = force_metrics(ref, ref)
    assert perfect["force_r2"] == 1.0 and perfect["force_rmse"] == 0.0 and perfect["force_max_error"] == 0.0
    assert perfect["force_angular_error_deg"] == pytest.approx(0.0, abs=1e-5)
    shifted = force_metrics(ref + np.array([0.3, 0.0, 0.0]), ref)
    assert shifted["force_rmse"] == pytest.approx(np.sqrt(0.09 / 3))
    assert shifted["force_mae"] == pytest.approx(0.1)
    assert shifted["force_max_error"] == pytest.approx(0.3)
    assert shifted["force_p90_error"] == pytest.approx(0.3) and shifted["force_p95_error"] == pytest.approx(0.3)
    flipped = force_metrics(-ref, ref, min_force=0.0)
    assert flipped["force_angular_error_deg"] == pytest.approx(180.0)
    # percentiles of error norms: errors 1..100 along x
    ref = np.zeros((100, 3))
    pred = np.zeros((100, 3))
    pred[:, 0] = np.arange(1, 101)
    m = force_metrics(pred, ref)
    assert m["force_p90_error"] == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert m["force_max_error"] == 100.0


def test_stored_labels_and_teacher_agree():
    stored = evaluate(EMT(), _cu_frames(labelled=True))
    computed = evaluate(EMT(), _cu_frames(labelled=False), teacher=EMT())
    np.testing.assert_allclose(stored.f_ref, computed.f_ref)
    metrics = parity_metrics(stored)
    ov = metrics["overall"]
    assert ov["force_r2"] == pytest.approx(1.0) and ov["force_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert ov["energy_mae_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    assert ov["stress_mae_GPa"] == pytest.approx(0.0, abs=1e-9)
    assert set(metrics["per_element"]) == {"Cu"}
    assert set(metrics["per_config_type"]) == {"cold", "hot"}
    assert metrics["per_config_type"]["hot"]["n_frames"] == 2
    with pytest.raises(ValueError, match="no reference forces"):
        evaluate(EMT(), _cu_frames(labelled=False))


def test_batched_student_and_energy_error(tmp_path):
    path = random_artifact(tmp_path / "si.mlffd.pt", "ultra-tiny", dtype=torch.float64)
    frames = []
    for k in range(3):
        si = bulk("Si", "diamond", a=5.43, cubic=True)
        si.rattle(0.05, seed=k)
        frames.append(si)
    student = DistilledCalculator(path)
    data = evaluate(student, frames, teacher=DistilledCalculator(path))  # student == teacher
    m = parity_metrics(data)["overall"]
    assert m["force_rmse"] == pytest.approx(0.0, abs=1e-10) and m["force_r2"] == pytest.approx(1.0)
    # shift the reference energies by 8 meV/atom: the energy MAE sees exactly that
    for atoms, res in zip(frames, student.calculate_batch(frames)):
        atoms.calc = SinglePointCalculator(atoms, energy=res["energy"] + 0.008 * len(atoms), forces=res["forces"],
                                           stress=res["stress"])
    m = parity_metrics(evaluate(student, frames))["overall"]
    assert m["energy_mae_meV_per_atom"] == pytest.approx(8.0)


def test_forces_report_has_figure_and_every_metric(tmp_path):
    frames = _cu_frames(labelled=True)
    metrics, files = forces_report(EMT(), frames, None, tmp_path)
    saved = json.loads(files["json"].read_text())
    assert FORCE_KEYS | FRAME_KEYS <= set(saved["overall"])
    assert FORCE_KEYS <= set(saved["per_element"]["Cu"])
    for ct in ("cold", "hot"):
        assert FORCE_KEYS | FRAME_KEYS <= set(saved["per_config_type"][ct])
    html = files["html"].read_text()
    assert 'id="fig-forces"' in html and "data:image/png;base64," in html
    assert files["forces"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_and_validate_forces_give_the_same_numbers(tmp_path):
    """`mlffd evaluate` and `mlffd-validate forces` share one definition of every force metric:
    on the same two-element data they agree, overall and per element."""
    from ase.io import write

    from mlffd.calculator import DistilledCalculator
    from mlffd.testing import random_artifact, silicon_germanium
    from mlffd.training.evaluate import evaluate as mlffd_evaluate

    teacher = DistilledCalculator(str(random_artifact(tmp_path / "t.mlffd.pt", "ultra-tiny", seed=1, elements=("Si", "Ge"))))
    student_path = random_artifact(tmp_path / "s.mlffd.pt", "ultra-tiny", seed=2, elements=("Si", "Ge"))
    frames = []
    for seed in range(3):
        atoms = silicon_germanium(1, rattle=0.1, seed=seed)
        atoms.calc = teacher
        atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    write(tmp_path / "data.extxyz", frames)
    ours = mlffd_evaluate(student_path, tmp_path / "data.extxyz")
    theirs = parity_metrics(evaluate(DistilledCalculator(str(student_path)), frames))
    for mine, other in (("force_rmse", "force_rmse"), ("force_mae", "force_mae"), ("force_r2", "force_r2"),
                        ("force_angle_mean_deg", "force_angular_error_deg"), ("force_error_p95", "force_p95_error"),
                        ("force_error_max", "force_max_error")):
        assert ours[mine] == pytest.approx(theirs["overall"][other], rel=1e-6), mine
    assert set(ours["by_element"]) == set(theirs["per_element"]) == {"Si", "Ge"}
    for element, m in ours["by_element"].items():
        assert m["rmse"] == pytest.approx(theirs["per_element"][element]["force_rmse"], rel=1e-6)
        assert m["angle_mean_deg"] == pytest.approx(theirs["per_element"][element]["force_angular_error_deg"], rel=1e-6)
        assert m["atoms"] == theirs["per_element"][element]["n_atoms"] > 0
