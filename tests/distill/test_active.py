"""Active distillation on EMT Cu: committee deviation, planted failures, selection, one round end to
end through ``mlffd distill``, resumption without repeated teacher calls, config errors, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from cu_frames import SMALL_MODEL, cu_frames, write_frames

from mlffd.active import ActiveConfig, run_active
from mlffd.active.committee import Committee, force_deviation
from mlffd.active.report import ROUND_FIELDS
from mlffd.active.sanity import reference_from_frames
from mlffd.active.select import choose, classify
from mlffd.data import read_frames
from mlffd.training import TrainConfig, train

#: a short loop: two temperatures, one random and three defected relaxations, small budgets
LOOP = dict(committee=2, max_rounds=1, min_new_failures=1, teacher_calls_per_round=12, teacher_calls_total=30, audit_frames=2, minima_calls_per_round=6,
            temperatures=[300, 1500], md_steps=60, sample_every=10, relax_random=1, relax_defected=3, relax_phases=1, relax_steps=30, min_atoms=16,
            force_lo=0.1, force_hi=0.3, finetune_steps=100, finetune_lr=3e-3, finetune_warmup_steps=5, progress=False)


class CountingEMT(EMT):
    """EMT that counts its single points, recorded as the ``emt`` teacher; with ``fail_after``
    it raises on the call after that many (a kill in the middle of labelling)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after
        self.mlffd_teacher_info = {"spec": "emt"}

    def calculate(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        super().calculate(*args, **kwargs)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == n, "the loop left torch's thread count changed"


@pytest.fixture(scope="module")
def crystal(tmp_path_factory) -> dict:
    """Rattled, strained Cu crystal cells only (no slab), and three students trained on them."""
    d = tmp_path_factory.mktemp("active")
    data = {"train": str(write_frames(d / "train.extxyz", cu_frames(n_traj=4, per_traj=5, seed=0, slab=False))),
            "test": str(write_frames(d / "test.extxyz", cu_frames(n_traj=2, per_traj=2, seed=7, slab=False)))}
    members = [train(student_config(data, d / f"m{k}", seed=k), resume=True)["artifact"] for k in range(3)]
    return {"dir": d, **data, "members": members}


def student_config(data: dict, output: Path, **changes) -> TrainConfig:
    base = dict(train=[data["train"]], test=[data["test"]], output=str(output), name="cu", teacher="emt", model="ultra-tiny",
                model_overrides=SMALL_MODEL, val_fraction=0.25, batch_size=4, max_steps=150, lr=5e-3, warmup_steps=4, threads=1,
                progress=False)
    return TrainConfig.from_dict({**base, **changes})


def _cu(scale: float = 1.0, rattle: float = 0.05, seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.61 * scale, cubic=True) * (2, 2, 1)
    atoms.positions += np.random.default_rng(seed).normal(0.0, rattle, atoms.positions.shape)
    return atoms


# -- committee -------------------------------------------------------------------------------


def test_force_deviation_is_numpy_std_and_zero_for_identical_members(crystal):
    rng = np.random.default_rng(1)
    forces = rng.normal(size=(4, 7, 3))
    per_atom = np.sqrt(np.sum(np.std(forces, axis=0) ** 2, axis=-1))  # numpy's population std per component
    assert force_deviation(forces) == pytest.approx((per_atom.max(), per_atom.mean()), rel=1e-12)
    assert force_deviation(np.repeat(forces[:1], 3, axis=0)) == (0.0, 0.0)

    frames = [_cu(seed=s) for s in range(3)]
    same = Committee([crystal["members"][0]] * 3).predict(frames)
    assert (same.max_devi_f == 0.0).all() and (same.devi_e == 0.0).all()
    pred = Committee(crystal["members"]).predict(frames)
    for i in range(len(frames)):
        expect = np.sqrt(np.sum(np.std(pred.forces[i], axis=0) ** 2, axis=-1)).max()
        assert pred.max_devi_f[i] == pytest.approx(expect, rel=1e-10) and pred.max_devi_f[i] > 0
        e = pred.energy[:, i] / len(frames[i])
        assert pred.devi_e[i] == pytest.approx(np.std(e), rel=1e-8, abs=1e-12)


def test_planted_failures_are_flagged(crystal):
    """Students that saw only near-ideal crystals disagree on a compressed and a hot, disordered
    cell, agree on a crystal, and a pair at 0.8 Å is a sanity failure whatever they say."""
    # sanity limits out of the way of the disordered cell (its closest pair is ~1.5 Å); the close pair is far below
    config = ActiveConfig.from_dict({**LOOP, "force_lo": 0.15, "force_hi": 0.5, "max_force": 1000.0, "min_distance_A": 1.2})
    close = _cu(rattle=0.0)
    close.positions[1] = close.positions[0] + [0.8, 0.0, 0.0]
    frames = [_cu(seed=1), _cu(seed=2), _cu(scale=0.85, seed=3), _cu(rattle=0.35, seed=4), close]
    reference = reference_from_frames(read_frames(crystal["train"]))
    flags = classify(frames, Committee(crystal["members"]).predict(frames), reference, config)
    assert [f["status"] for f in flags[:2]] == ["accurate", "accurate"], flags[:2]
    assert [f["status"] for f in flags[2:4]] == ["failed_deviation", "failed_deviation"], flags[2:4]
    assert min(f["max_devi_f"] for f in flags[2:4]) > 5 * max(f["max_devi_f"] for f in flags[:2])
    assert flags[4]["status"] == "failed_sanity" and flags[4]["reason"] == "short_distance"
    committee = Committee(crystal["members"])
    (flag,) = classify([close], committee.predict([close]), reference, ActiveConfig.from_dict(LOOP))  # 0.75 x the data's shortest
    assert flag["reason"] == "short_distance" and reference.any_shortest * 0.75 > 0.8


# -- exploration -----------------------------------------------------------------------------


def test_exploration_keeps_the_failed_frame_and_never_raises(crystal):
    """EMT stands in for the student: a calculator that blows up, a collapse, and NPT."""
    from mlffd.active.explore import Run, run_one

    class Exploding(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Exploding.calls += 1
            if Exploding.calls > 8:
                raise FloatingPointError("non-finite forces on atom(s) [3]")
            super().calculate(*args, **kwargs)

    config = ActiveConfig.from_dict(LOOP)
    reference = reference_from_frames(read_frames(crystal["train"]))
    rng = np.random.default_rng(0)
    frames, record = run_one(Run("md-nvt-900K", "md", "crystal", 900.0), _cu(), Exploding(), config, reference, rng, 1)
    assert record["stopped"] == "non_finite" and "FloatingPointError" in record["error"] and record["steps"] < config.md_steps
    assert frames[-1].info["active_explore_reason"] == "non_finite" and frames[-1].info["active_step"] == record["steps"]

    squeezed = _cu(rattle=0.0)
    squeezed.positions[1] = squeezed.positions[0] + [1.2, 0.0, 0.0]
    frames, record = run_one(Run("md-nvt-300K", "md", "crystal", 300.0), squeezed, EMT(), config, reference, rng, 1)
    assert record["stopped"] == "short_distance" and record["steps"] == 0  # the start is checked too, and stops the run
    assert frames[-1].info["active_explore_reason"].startswith("short_distance")

    frames, record = run_one(Run("md-npt-300K-5GPa", "md", "crystal", 300.0, 5.0), _cu(), EMT(), config, reference, rng, 1)
    assert record["stopped"] is None and len(frames) == config.md_steps // config.sample_every
    assert frames[-1].get_volume() < _cu().get_volume() - 0.5  # compressed by the barostat


# -- selection -------------------------------------------------------------------------------


def _flag(status: str, dev: float, reason: str | None = None) -> dict:
    return {"status": status, "reason": reason or {"failed_deviation": "deviation"}.get(status, status), "max_devi_f": dev}


def test_labelling_records_a_failure_on_one_structure_and_stops_on_a_teacher_that_cannot_be_set_up():
    """The active loop's teacher call shares sampling's definition of a teacher failure
    (mlffd.sampling.frames.TEACHER_FAILURES): an SCF failure or a non-finite result is recorded as
    ``teacher_error`` and the loop goes on; a teacher that cannot be set up raises."""
    from ase.calculators.calculator import CalculationFailed, CalculatorSetupError

    from mlffd.active.loop import _label_one

    class Raising(EMT):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def calculate(self, *args, **kwargs):
            raise self.exc

    atoms = _cu()
    ok = _label_one(atoms, EMT(), max_force=50.0)
    assert ok["status"] == "ok"
    reference = atoms.copy()
    reference.calc = EMT()
    assert ok["energy"] == pytest.approx(reference.get_potential_energy())
    assert np.allclose(ok["forces"], reference.get_forces())
    assert _label_one(atoms, EMT(), max_force=1e-6)["status"] == "unphysical"
    for exc in (CalculationFailed("SCF not converged in 250 cycles"), FloatingPointError("non-finite energy")):
        got = _label_one(atoms, Raising(exc), max_force=50.0)
        assert got["status"] == "teacher_error" and str(exc) in got["error"] and "energy" not in got
    with pytest.raises(CalculatorSetupError, match="unknown method"):
        _label_one(atoms, Raising(CalculatorSetupError("unknown method 'GFN7'")), max_force=50.0)


def test_selection_respects_budget_puts_sanity_first_and_spreads():
    flags = ([_flag("failed_sanity", 0.05, "short_distance")] * 2 + [_flag("failed_deviation", d) for d in (0.9, 0.8, 0.7, 0.6)]
             + [_flag("candidate", 0.2)] * 3 + [_flag("accurate", 0.01)] * 5)
    desc = np.zeros((len(flags), 2))
    desc[2:6, 0] = [0.0, 0.01, 5.0, 0.02]  # failures 2, 3 and 5 are near duplicates, 4 is elsewhere
    rng = np.random.default_rng(0)
    picked = choose(flags, desc, budget=6, audit=2, rng=rng)
    assert len(picked) == 6
    assert [p["index"] for p in picked[:2]] == [0, 1] and {p["reason"] for p in picked[:2]} == {"short_distance"}
    assert [p["index"] for p in picked[2:4]] == [2, 4]  # highest deviation first, then the farthest, not the next highest
    assert [p["reason"] for p in picked[4:]] == ["audit", "audit"] and all(flags[p["index"]]["status"] == "accurate" for p in picked[4:])
    assert len(choose(flags, desc, budget=3, audit=0, rng=rng)) == 3
    assert choose(flags, desc, budget=0, audit=1, rng=rng) == []
    assert len({p["index"] for p in choose(flags, desc, budget=100, audit=2, rng=rng)}) == 2 + 4 + 3 + 2


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, key", [
    ({"committee": 1}, "committee"), ({"force_hi": 0.05, "force_lo": 0.1}, "force_hi"), ({"temperatures": [300, -5]}, "temperatures"),
    ({"defects": ["vacancy", "dislocation"]}, "defects"), ({"teacher_calls_total": 0}, "teacher_calls_total"),
    ({"finetune_lr": "fast"}, "finetune_lr"), ({"md_steps": 2.5}, "md_steps"), ({"audit_frames": 12}, "audit_frames"),
    ({"pressures": [1.0], "temperatures": []}, "pressures"), ({"min_distance_A": -1.0}, "min_distance_A"),
    ({"trust_lo": 0.1}, "trust_lo"), ({"minima_calls_per_round": -1}, "minima_calls_per_round"),
    ({"minima_calls_per_round": 10}, "minima_calls_per_round"), ({"descent_steps": -2}, "descent_steps"),
    ({"false_minimum_force": 0.0}, "false_minimum_force"), ({"false_minimum_drop": -0.1}, "false_minimum_drop"),
    ({"relax_phases": -1}, "relax_phases"), ({"phase_volume_range": 1.0}, "phase_volume_range"),
    ({"finetune_active_repeat": 0}, "finetune_active_repeat"), ({"finetune_active_repeat": 1.5}, "finetune_active_repeat"),
])
def test_active_config_rejects_bad_values_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        ActiveConfig.from_dict({**LOOP, **changes})
    assert ActiveConfig.from_dict({"finetune_lr": "1e-3"}).finetune_lr == 1e-3  # YAML 1.1's string


def test_keys_added_later_leave_old_loops_identity_alone():
    """A loop run before the minimum checks existed (none per round) keeps its identity; the
    checks on (the default) or any other added key changed make it a different loop."""
    import hashlib

    from mlffd.active.config import ADDED_KEYS, RESUMABLE

    old = ActiveConfig(**ADDED_KEYS)
    before = {k: v for k, v in old.to_dict().items() if k not in RESUMABLE and k not in ADDED_KEYS}  # what the hash held then
    assert old.identity() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert ActiveConfig().identity() != old.identity()
    assert ActiveConfig(**{**ADDED_KEYS, "descent_steps": 5}).identity() != old.identity()
    assert ActiveConfig(**{**ADDED_KEYS, "relax_phases": 2}).identity() != old.identity()
    assert ActiveConfig(**{**ADDED_KEYS, "finetune_active_repeat": 4}).identity() != old.identity()


# -- one round through mlffd distill ---------------------------------------------------------


def _distill_config(tmp_path: Path, crystal: dict, **active) -> Path:
    for split in ("train", "test"):
        shutil.copy(crystal[split], tmp_path / f"{split}.extxyz")
    cfg = {
        "workdir": "run", "teacher": "emt", "data": {"train": "train.extxyz", "test": "test.extxyz"},
        "train": {"model_overrides": SMALL_MODEL, "batch_size": 4, "max_steps": 150, "lr": 5e-3, "val_fraction": 0.25,
                  "threads": 1, "progress": False, "warmup_steps": 4},
        "students": {"small": {"model": "ultra-tiny"}, "plain": {"model": "ultra-tiny", "max_steps": 4}},
        "active": {"students": ["small"], **LOOP, **active},
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_distill_active_round_end_to_end(tmp_path, crystal):
    from mlffd.distill import load_distill_config, run_distill

    teacher = CountingEMT()
    path = _distill_config(tmp_path, crystal)
    lines: list[str] = []
    run_distill(load_distill_config(path), teacher=teacher, log=lines.append)
    active = tmp_path / "run" / "active" / "small"
    report = json.loads((active / "report.json").read_text())
    (rec,) = report["rounds"]

    # teacher calls: bounded, counted and reported
    assert 0 < teacher.calls == rec["teacher_calls"] == report["teacher_calls"] <= LOOP["teacher_calls_per_round"]
    assert rec["flags"]["failed"] >= LOOP["min_new_failures"]
    minima = rec["minima"]  # every converged relaxation's end checked by the teacher, inside the round's budget
    converged = [r for r in rec["runs"] if r["kind"] == "relax" and r.get("converged") and not r.get("stopped")]
    assert converged and minima["checked"] == len(converged) == len(minima["ends"])  # checks come before descents
    assert minima["teacher_calls"] == minima["checked"] + minima["descent_frames"] <= LOOP["teacher_calls_per_round"]
    assert rec["selected"] + minima["teacher_calls"] == rec["teacher_calls"]

    # the labelled frames carry EMT's own numbers, their reason and round
    labelled = read_frames(active / "labelled.extxyz")
    assert len(labelled) == rec["labelled"] > 0
    for frame in labelled:
        atoms = frame.copy()
        atoms.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.get_forces(), atoms.get_forces(), atol=1e-6)
        assert frame.info["config_type"].startswith("active_") and frame.info["active_round"] == 1
        assert frame.info["teacher"] == "emt"
    assert {f.info["config_type"] for f in labelled} >= {"active_audit"}
    kinds = [f.info["config_type"] for f in labelled]
    assert sum(kinds.count(f"active_{k}") for k in ("minimum", "false_minimum", "shifted_minimum")) == minima["checked"]
    assert kinds.count("active_false_minimum") == minima["false"] and kinds.count("active_descent") == minima["descent_frames"]
    for end in minima["ends"]:  # the verdict is the teacher's largest force at the student's minimum
        frame = next(f for f in labelled if f.info.get("active_source") == end["run"] and "active_frame" in f.info)
        assert end["teacher_fmax"] == pytest.approx(np.linalg.norm(frame.get_forces(), axis=1).max(), rel=1e-6)
        assert (end["verdict"] == "agrees") == (end["teacher_fmax"] <= ActiveConfig().false_minimum_force)
        if end["verdict"] in ("false", "shifted"):  # decided by how far the teacher's descent went down
            assert (end["verdict"] == "false") == (end["descent_drop_eV"] >= ActiveConfig().false_minimum_drop)

    # fine-tuning on them lowered the committee's error there
    before, after = rec["before"], rec["after"]
    assert after["flagged_force_rmse_mean"] < before["flagged_force_rmse_mean"]
    assert after["flagged_force_rmse_member0"] < before["flagged_force_rmse_member0"]
    assert rec["spearman"] is not None and -1.0 <= rec["spearman"] <= 1.0

    # the report, per round
    for field in ROUND_FIELDS + ("before", "after", "spearman", "test_force_rmse_member0"):
        assert field in rec, field
    assert "Spearman" in (active / "report.md").read_text()
    assert "data:image/png;base64," in (active / "report.html").read_text()

    # the export is the final member 0; the student without an active section is untouched by it
    from mlffd.data import dataset_sha256

    exported = tmp_path / "run" / "models" / "small.mlffd.pt"
    assert dataset_sha256(exported) == dataset_sha256(rec["members_after"][0])
    assert not (tmp_path / "run" / "active" / "plain").exists()
    assert any(line.startswith("[active:small] active distillation") for line in lines)

    # a second run skips the stage and calls no teacher
    lines = []
    run_distill(load_distill_config(path), teacher=teacher, log=lines.append)
    assert "[active:small] done, skipped" in lines and "[export:small] done, skipped" in lines
    assert teacher.calls == rec["teacher_calls"]


def test_committee_of_other_students_is_fine_tuned_and_exported(tmp_path, crystal):
    """``committee_students``: the other students are members 1.. of the one loop (no seed copies
    trained) and each exports its own final member."""
    from mlffd.data import dataset_sha256
    from mlffd.distill import load_distill_config, run_distill

    path = _distill_config(tmp_path, crystal, committee_students=["other"], finetune_active_repeat=3)
    cfg = yaml.safe_load(path.read_text())
    cfg["active"].pop("committee")
    cfg["students"]["other"] = {"model": "ultra-tiny", "seed": 5, "batch_size": 2}
    path.write_text(yaml.safe_dump(cfg))
    config = load_distill_config(path)
    assert config.active_owner("other") == "small" and config.active_owner("plain") is None
    assert config.active_config("other") is None and config.active_config("small").committee == 2

    teacher = CountingEMT()
    run_distill(config, teacher=teacher, log=lambda s: None)
    active = tmp_path / "run" / "active" / "small"
    report = json.loads((active / "report.json").read_text())
    (rec,) = report["rounds"]
    assert report["member_names"] == ["small", "other"]
    assert not (active / "members").exists()  # no seed copies trained
    assert dataset_sha256(rec["members_before"][1]) == dataset_sha256(tmp_path / "run" / "students" / "other" / "other.mlffd.pt")
    # each member fine-tuned with its own options
    tuned = [torch.load(active / "round-001" / "members" / f"m{k}" / "checkpoint.pt", weights_only=False)["config"] for k in range(2)]
    assert [(c["name"], c["seed"], c["batch_size"]) for c in tuned] == [("small", 0, 4), ("other", 5, 2)]
    labelled = str(active / "round-001" / "active.extxyz")  # the loop's frames so far, oversampled in every fine-tune
    assert [(c["train"][-1], c["repeat"]) for c in tuned] == [(labelled, {labelled: 3})] * 2
    for k, name in enumerate(["small", "other"]):
        assert dataset_sha256(tmp_path / "run" / "models" / f"{name}.mlffd.pt") == dataset_sha256(rec["members_after"][k])
    assert 0 < teacher.calls == report["teacher_calls"]

    for bad, match in [({"committee": 3}, "committee"), ({"committee_students": ["nobody"]}, "nobody"),
                       ({"students": ["small", "plain"]}, "exactly one"), ({"committee_students": ["small"]}, "exactly one")]:
        cfg2 = {**cfg, "active": {**cfg["active"], **bad}}
        path.write_text(yaml.safe_dump(cfg2))
        with pytest.raises(ValueError, match=match):
            load_distill_config(path)


def test_distill_config_checks_the_active_section(tmp_path, crystal):
    from mlffd.distill import load_distill_config

    path = _distill_config(tmp_path, crystal, force_loo=0.1)
    with pytest.raises(ValueError, match="force_loo"):
        load_distill_config(path)
    cfg = yaml.safe_load(path.read_text())
    cfg["active"].pop("force_loo")
    cfg["active"]["students"] = ["nobody"]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="nobody"):
        load_distill_config(path)


# -- resumption ------------------------------------------------------------------------------


def _journal_lines(round_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (round_dir / "minima.jsonl", round_dir / "labels.jsonl") if p.exists())


@pytest.mark.parametrize("kill_after", [3, 9])  # in the minimum checks (6 calls at most), in the committee's labelling
def test_killed_loop_resumes_without_repeating_teacher_calls(tmp_path, crystal, kill_after):
    student = student_config(crystal, crystal["dir"] / "m0")
    initial = crystal["members"][0]
    config = ActiveConfig.from_dict(LOOP)
    loop_dir = tmp_path / "loop"

    killed = CountingEMT(fail_after=kill_after)
    with pytest.raises(RuntimeError, match="killed"):
        run_active(config, student, loop_dir, initial, teacher=killed, log=lambda s: None)
    assert killed.calls == kill_after == _journal_lines(loop_dir / "round-001")
    reference_dir = tmp_path / "reference"  # the same committee, rounds run uninterrupted
    reference_dir.mkdir()
    for name in ("state.json", "members"):
        (shutil.copytree if name == "members" else shutil.copy)(loop_dir / name, reference_dir / name)

    resumed = CountingEMT()
    summary = run_active(config, student, loop_dir, initial, teacher=resumed, log=lambda s: None)
    (rec,) = summary["rounds"]
    assert killed.calls + resumed.calls == rec["teacher_calls"] == summary["teacher_calls"]
    indices = [json.loads(line)["index"] for line in (loop_dir / "round-001" / "labels.jsonl").read_text().splitlines()]
    assert len(indices) == len(set(indices)) == rec["selected"]
    assert _journal_lines(loop_dir / "round-001") == rec["teacher_calls"] == rec["selected"] + rec["minima"]["teacher_calls"]

    uninterrupted = CountingEMT()
    expected = run_active(config, student, reference_dir, initial, teacher=uninterrupted, log=lambda s: None)
    assert uninterrupted.calls == rec["teacher_calls"]
    got, want = read_frames(loop_dir / "labelled.extxyz"), read_frames(reference_dir / "labelled.extxyz")
    assert [f.info.get("active_frame") for f in got] == [f.info.get("active_frame") for f in want]
    assert [f.info["config_type"] for f in got] == [f.info["config_type"] for f in want]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    assert expected["rounds"][0]["selected_by_reason"] == rec["selected_by_reason"]

    # a round limit is a clean stop: more rounds continue after it, repeating nothing of round 1
    artifacts = {p: p.stat().st_mtime_ns for p in (loop_dir / "round-001" / "members").rglob("*.mlffd.pt")}
    more = CountingEMT()
    summary = run_active(ActiveConfig.from_dict({**LOOP, "max_rounds": 2}), student, loop_dir, initial, teacher=more, log=lambda s: None)
    assert summary["rounds"][0] == rec
    assert more.calls == sum(r["teacher_calls"] for r in summary["rounds"][1:]) == summary["teacher_calls"] - rec["teacher_calls"]
    assert all(p.stat().st_mtime_ns == t for p, t in artifacts.items())
    assert summary["teacher_calls"] <= LOOP["teacher_calls_total"]
    assert json.loads((loop_dir / "report.json").read_text())["finished"]


def test_defected_interstitial_starts_emptiest_or_open_site():
    """``interstitial`` adds the atom at the emptiest of 200 random points (checked against a
    brute-force minimum-image search over the same points); ``interstitial_open`` at any open site,
    which in diamond silicon also reaches the hexagonal site (six neighbours, then a gap), where a
    student relaxed from it can sit in a false minimum the tetrahedral start never finds."""
    from ase import Atoms
    from ase.geometry import find_mic

    from mlffd.active.config import DEFECT_KINDS
    from mlffd.active.explore import defected_start
    from mlffd.active.sanity import Reference

    si = bulk("Si", "diamond", a=5.431, cubic=True) * (2, 2, 2)
    ref = Reference((14,), np.full((1, 1), 2.3), np.zeros(1), 0.0)
    config = ActiveConfig(defects=("interstitial_open",))
    assert "interstitial_open" in DEFECT_KINDS and config.defects == ("interstitial_open",)
    rng = np.random.default_rng(11)
    state = rng.bit_generator.state
    made = defected_start(si, "interstitial", config, ref, rng)
    rng.bit_generator.state = state
    rattled = si.positions + rng.normal(0.0, 0.02, si.positions.shape)
    points = rng.uniform(0.0, 1.0, (200, 3)) @ si.cell.array
    clearance = [np.linalg.norm(find_mic(rattled - p, si.cell, True)[0], axis=1).min() for p in points]
    assert len(made) == len(si) + 1 and np.allclose(made.positions[-1], points[int(np.argmax(clearance))])

    def neighbours(atoms):
        return np.sort(atoms.get_distances(len(atoms) - 1, range(len(atoms) - 1), mic=True))

    opened = [neighbours(defected_start(si, "interstitial_open", config, ref, rng)) for _ in range(40)]
    assert any(d[5] < 2.55 and d[6] > 2.9 for d in opened)  # hexagonal: 6 at 2.25 Å, then none below 3.4
    assert any(d[3] < 2.55 and d[4] > 2.55 for d in opened)  # tetrahedral: 4 at the bond, 6 at 2.72 Å
    with pytest.raises(ValueError, match="defects"):
        ActiveConfig(defects=("octahedral",))


def test_phase_relaxations_visit_every_prototype_at_a_fixed_volume():
    """``relax_phases`` runs cycle through the built-in prototypes over the rounds; each starts
    from the element's prototype between its own volume and the data's (widened by
    ``phase_volume_range``) and relaxes positions and cell shape at that volume."""
    from mlffd.active.config import PHASE_START
    from mlffd.active.explore import phase_start, plan, run_one
    from mlffd.active.sanity import Reference
    from mlffd.prototypes import PROTOTYPES, prototype

    config = ActiveConfig(relax_phases=3, relax_steps=60, relax_cell=False, sample_every=5)
    names = list(PROTOTYPES)
    seen = [r.start[len(PHASE_START):] for k in range(1, 5) for r in plan(config, k) if r.start.startswith(PHASE_START)]
    assert seen == [names[i % len(names)] for i in range(12)] and set(seen) == set(names)

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(5)
    for name in names:
        made = phase_start(crystal, name, config, rng)
        own = prototype(name, "Cu")
        v, lo, hi = made.get_volume() / len(made), own.get_volume() / len(own), crystal.get_volume() / len(crystal)
        assert len(made) == len(own) and set(made.get_chemical_symbols()) == {"Cu"} and made.pbc.all()
        assert min(lo, hi) * 0.9 <= v <= max(lo, hi) * 1.1
    alloy = crystal.copy()
    alloy[0].symbol = "Au"
    slab = crystal.copy()
    slab.pbc = (True, True, False)
    assert phase_start(alloy, "fcc", config, rng) is None and phase_start(slab, "fcc", config, rng) is None

    hcp = [r for r in plan(config, 3) if r.start == PHASE_START + "hcp"][0]
    start = phase_start(crystal, "hcp", config, np.random.default_rng(0))
    start.set_cell(start.cell.array @ np.diag([1.0, 1.0, 1.15]), scale_atoms=True)  # c/a off: the shape must relax
    ref = Reference((29,), np.full((1, 1), 2.2), np.zeros(1), -10.0)
    frames, record = run_one(hcp, start, EMT(), config, ref, np.random.default_rng(1), 3)
    end = frames[-1]
    assert record["steps"] > 0 and record["start"] == PHASE_START + "hcp" and not record["stopped"]
    assert end.get_volume() == pytest.approx(start.get_volume(), rel=1e-9)
    assert abs(end.cell.lengths()[2] / start.cell.lengths()[2] - 1.0) > 0.01  # relax_cell off: the phase's shape still relaxed


def test_random_cells_keep_bonds_apart_when_the_data_have_close_contacts():
    """The reference's bond is the median first-neighbour distance (diamond's a·√3/4 here), not
    the shortest one a dimer frame sets; random starts keep every pair 0.9 × that bond apart."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.geometry import get_distances

    from mlffd.active.explore import random_start

    a = 5.431
    frames = [bulk("Si", "diamond", a=a, cubic=True) * (2, 2, 2) for _ in range(3)]
    frames.append(Atoms("Si2", positions=[[0, 0, 0], [1.5, 0, 0]], cell=[12.0, 12.0, 12.0], pbc=True))
    for k, f in enumerate(frames):
        f.calc = SinglePointCalculator(f, energy=-4.0 * len(f) + k, forces=np.zeros((len(f), 3)))
    ref = reference_from_frames(frames)
    assert ref.any_shortest == pytest.approx(1.5)
    assert ref.bond == pytest.approx(a * np.sqrt(3) / 4, rel=1e-9)

    start = bulk("Si", "diamond", a=a, cubic=True) * (2, 2, 2)
    config = ActiveConfig(random_min_distance=0.9)
    for seed in range(3):
        atoms = random_start(start, config, ref, np.random.default_rng(seed))
        _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)
        closest = d[np.triu_indices(len(atoms), 1)].min()
        assert len(atoms) == len(start) and closest >= 0.9 * ref.bond * 0.95**3  # at most three 5 % steps down
        assert closest > 1.5  # the dimer's distance is not the scale


def test_pushed_pairs_are_placed_by_the_students_data_not_by_the_loops_own_labels(crystal, tmp_path):
    """A labelled pushed pair from an earlier round is closer than any training pair; were the
    next round's pushes placed by it, they would close in round after round."""
    from ase.geometry import get_distances

    from mlffd.active.explore import explore

    train = read_frames(crystal["train"])
    data = reference_from_frames(train)
    labelled = _cu(rattle=0.0)
    labelled.positions[1] = labelled.positions[0] + [0.8 * data.pair_shortest(29, 29), 0.0, 0.0]
    labelled.calc = EMT()
    labelled.get_potential_energy()
    so_far = reference_from_frames([*train, labelled])
    assert so_far.pair_shortest(29, 29) < 0.9 * data.pair_shortest(29, 29)

    config = ActiveConfig.from_dict({**LOOP, "temperatures": [], "relax_random": 0, "relax_phases": 0, "relax_defected": 1,
                                     "defects": ["pushed_pair"], "relax_steps": 2, "sample_every": 1})

    def closest_at_start(**kw) -> float:
        frames, runs = explore(config, crystal["members"][0], _cu(rattle=0.0), so_far, 2, log=lambda s: None, **kw)
        (first,) = [f for f in frames if f.info["active_step"] == 0]
        d = get_distances(first.positions, cell=first.cell, pbc=True)[1]
        return float(d[np.triu_indices(len(first), 1)].min())

    assert closest_at_start(data_reference=data) == pytest.approx(config.push_fraction * data.pair_shortest(29, 29), abs=1e-6)
    assert closest_at_start() == pytest.approx(config.push_fraction * so_far.pair_shortest(29, 29), abs=1e-6)

    # and the loop passes its training data's reference, whatever the labels so far hold
    from mlffd.active.loop import ActiveLoop

    loop = ActiveLoop(config, student_config(crystal, tmp_path / "student"), tmp_path / "loop", crystal["members"][0],
                      teacher=CountingEMT(), log=lambda s: None)
    loop.train_frames = train
    (tmp_path / "loop" / "round-002").mkdir(parents=True)
    frames, _ = loop._explore(2, tmp_path / "loop" / "round-002", [crystal["members"][0]], so_far)
    (first,) = [f for f in frames if f.info["active_step"] == 0]
    d = get_distances(first.positions, cell=first.cell, pbc=True)[1]
    assert d[np.triu_indices(len(first), 1)].min() == pytest.approx(config.push_fraction * data.pair_shortest(29, 29), abs=1e-6)
