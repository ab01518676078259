"""Training: loss goes down, exact resume, export equals the trained model, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cu_frames import SMALL_MODEL, cu_frames, write_frames

from mlffd.artifact import read_metadata
from mlffd.training import TrainConfig, Trainer, load_config, train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cu")
    return {
        "train": str(write_frames(d / "train.extxyz", cu_frames(n_traj=4, per_traj=5, seed=0))),
        "test": str(write_frames(d / "test.extxyz", cu_frames(n_traj=2, per_traj=2, seed=7, slab=False))),
    }


@pytest.fixture(autouse=True)
def _restore_threads():
    """Trainers used directly (without close()) set torch's thread count: restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def small_config(dataset, output, **changes) -> TrainConfig:
    base = dict(
        train=[dataset["train"]],
        test=[dataset["test"]],
        output=str(output),
        name="cu",
        teacher="emt",
        model="ultra-tiny",
        model_overrides=SMALL_MODEL,
        val_fraction=0.2,
        batch_size=4,
        max_epochs=8,
        lr=5e-3,
        warmup_steps=4,
        eval_every=3,
        checkpoint_every=5,
        threads=1,
        progress=False,
    )
    base.update(changes)
    return TrainConfig.from_dict(base)


def test_config_yaml_toml_roundtrip(tmp_path, dataset):
    cfg = small_config(dataset, tmp_path / "out")
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(y) == cfg
    t = tmp_path / "c.toml"
    t.write_text('train = ["data.extxyz"]\nmodel = "tiny"\nlr = 1e-3\noutput = "runs/x"\n[model_overrides]\nfeatures = 16\n')
    c = load_config(t)
    assert c.train == (str(tmp_path / "data.extxyz"),) and c.model_overrides == {"features": 16} and c.lr == 1e-3
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_loss_decreases_and_export(tmp_path, dataset):
    cfg = small_config(dataset, tmp_path / "out", max_epochs=20, eval_every=0)
    trainer = Trainer(cfg)
    assert trainer.model_config.avg_num_neighbors == pytest.approx(trainer.data.stats["avg_num_neighbors"])
    trainer.run()
    summary = trainer.finish()
    hist = trainer.history
    assert hist[-1]["val_loss"] < 0.3 * hist[0]["val_loss"]
    assert hist[-1]["train_loss"] < 0.3 * hist[0]["train_loss"]
    # no trajectory is on both sides of the split
    from mlffd.data import frame_group, read_frames

    frames = read_frames(dataset["train"])
    assert not {frame_group(frames[k]) for k in trainer.data.train_index} & {frame_group(frames[k]) for k in trainer.data.val_index}

    # the artifact (from the best EMA weights) predicts what the trained model predicts
    from ase.io import read

    from mlffd.artifact import read_metadata
    from mlffd.calculator import DistilledCalculator
    from mlffd.data import collate, to_graphs
    from mlffd.training.loss import predict

    path = Path(summary["artifact"])
    meta = read_metadata(path)
    assert meta["teacher"] == "emt" and len(meta["dataset_sha256"]) == 64
    assert meta["metrics"]["force_r2"] == pytest.approx(summary["metrics"]["force_r2"])
    assert meta["model"]["avg_num_neighbors"] == trainer.model_config.avg_num_neighbors
    calc = DistilledCalculator(path)
    atoms = read(dataset["test"], 0)
    model = trainer.best_model()
    ref = predict(model, collate(to_graphs([atoms], ["Cu"], SMALL_MODEL["cutoff"]), torch.float32))
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"].item(), abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), ref["stress"][0].detach().numpy(), atol=1e-6)

    # mlffd evaluate on the test file reproduces the exported metrics
    from mlffd.training.evaluate import evaluate

    again = evaluate(path, dataset["test"])
    assert again["force_rmse"] == pytest.approx(summary["metrics"]["force_rmse"], rel=1e-4)
    assert again["energy_mae_mev_per_atom"] == pytest.approx(summary["metrics"]["energy_mae_mev_per_atom"], rel=1e-3, abs=1e-3)


def test_fine_tune_starts_from_artifact_weights(tmp_path, dataset):
    first = Trainer(small_config(dataset, tmp_path / "a", max_epochs=6, eval_every=0))
    first.run()
    artifact = Path(first.finish()["artifact"])

    from mlffd.models import load_student

    source = load_student(artifact)[0].state_dict()
    tuned = Trainer(small_config(dataset, tmp_path / "b", init_from=str(artifact), lr=1e-3))
    for model in (tuned.model, tuned.ema):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, source[key], msg=key)
    # same split: the fine-tune starts at the first run's best validation loss, below a fresh start
    assert tuned.validate()["val_loss"] == pytest.approx(first.best_metric, rel=1e-4)
    assert first.best_metric < Trainer(small_config(dataset, tmp_path / "c")).validate()["val_loss"]

    with pytest.raises(ValueError, match="different model configuration"):
        Trainer(small_config(dataset, tmp_path / "d", init_from=str(artifact), model_overrides={**SMALL_MODEL, "features": 12}))
    with pytest.raises(FileNotFoundError, match="nothing.mlffd.pt"):
        Trainer(small_config(dataset, tmp_path / "e", init_from=str(tmp_path / "nothing.mlffd.pt")))


def _state(trainer: Trainer) -> dict[str, np.ndarray]:
    return {
        **{f"model.{k}": v.detach().clone().numpy() for k, v in trainer.model.state_dict().items()},
        **{f"ema.{k}": v.detach().clone().numpy() for k, v in trainer.ema.state_dict().items()},
    }


def test_resume_equals_uninterrupted(tmp_path, dataset):
    k = 16  # steps; a checkpoint every 5 steps, validation every 3
    straight = Trainer(small_config(dataset, tmp_path / "a", max_steps=k)).run()
    # a run "killed" at step 12 (last checkpoint: step 10), then resumed to the end
    cfg = small_config(dataset, tmp_path / "b", max_steps=k)
    killed = Trainer(cfg).run(callback=lambda t: t.step >= 12)
    assert killed.step == 12 and not killed.finished
    with pytest.raises(FileExistsError):
        Trainer(cfg)
    resumed = Trainer(cfg, resume=True)
    assert resumed.step == 10
    resumed.run()
    assert resumed.step == straight.step == k
    a, b = _state(straight), _state(resumed)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
    assert resumed.best_metric == pytest.approx(straight.best_metric, rel=1e-6)
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in straight.history], rel=1e-6)
    # a finished run resumes to no further steps
    again = Trainer(cfg, resume=True)
    assert again.finished and again.run().step == k


@pytest.mark.parametrize("ddp", ["wrapper", pytest.param("allreduce", marks=pytest.mark.slow)])
def test_ddp_two_processes_match_one(tmp_path, dataset, ddp):
    """torchrun with 2 gloo processes takes the same steps as 1 process with the whole batch.

    batch_size 5 with 16 training frames: the last batch of an epoch holds one structure, so
    one rank's shard is empty.
    """
    common = dict(max_steps=8, dtype="float64", eval_every=3, checkpoint_every=100, batch_size=5)
    one = Trainer(small_config(dataset, tmp_path / "one", **common)).run()
    assert len(one.data.train) == 16
    cfg = small_config(dataset, tmp_path / "two", ddp=ddp, **common)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, "-m", "mlffd.training", str(path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 8 and state["world_size"] == 2
    for name, value in one.model.state_dict().items():
        np.testing.assert_allclose(state["model"][name].numpy(), value.numpy(), rtol=0, atol=1e-9, err_msg=name)
    summary = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert Path(summary["artifact"]).exists()


def test_cli_train_resume_evaluate(tmp_path, dataset):
    from click.testing import CliRunner

    from mlffd.cli.main import cli

    cfg = small_config(dataset, "out", max_steps=4).to_dict()
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "force R²" in result.output
    artifact = tmp_path / "out" / "cu.mlffd.pt"
    assert artifact.exists()
    again = runner.invoke(cli, ["train", str(path)])
    assert again.exit_code != 0 and "--resume" in again.stderr and "Traceback" not in again.output  # one-line error
    assert runner.invoke(cli, ["train", str(path), "--resume"]).exit_code == 0
    out = tmp_path / "m.json"
    result = runner.invoke(cli, ["evaluate", str(artifact), dataset["test"], "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert {"energy_mae_mev_per_atom", "force_rmse", "force_mae", "force_r2", "force_angle_mean_deg",
            "force_error_p95", "force_error_max", "stress_mae"} <= set(metrics)


def test_resume_tolerates_moved_data_and_newer_options(tmp_path, dataset):
    """A checkpoint resumes when its data moved (same sha256) or was written before an option
    existed (the option at its default); a real change still conflicts."""
    from mlffd.training.trainer import CHECKPOINT, checkpoint_conflicts

    cfg = small_config(dataset, tmp_path / "out", max_epochs=1)
    Trainer(cfg).run()
    path = tmp_path / "out" / CHECKPOINT
    state = torch.load(path, map_location="cpu", weights_only=True)
    del state["config"]["init_from"]  # as written by an mlffd without fine-tuning
    del state["model_config"]["chunk_atoms"]  # ... and before blocked evaluation
    state["config"]["train"] = ["/elsewhere/train.extxyz"]
    torch.save(state, path)
    moved = tmp_path / "moved.extxyz"
    shutil.copyfile(dataset["train"], moved)
    again = cfg.replace(train=[str(moved)], max_epochs=2)
    assert checkpoint_conflicts(again) == []
    assert Trainer(again, resume=True).step > 0
    assert checkpoint_conflicts(again.replace(init_from="x.mlffd.pt")) == ["init_from"]
    assert checkpoint_conflicts(again.replace(lr=1e-4)) == ["lr"]


def test_val_from_holds_out_only_those_files(tmp_path, dataset):
    """val_from: validation trajectories come only from the named training files (fine-tuning
    on old + new data must not hold out frames the initial model was trained on)."""
    from mlffd.data import frame_group, read_frames
    from mlffd.training.trainer import prepare

    extra = str(write_frames(tmp_path / "extra.extxyz", cu_frames(n_traj=3, per_traj=4, seed=21)))
    both = small_config(dataset, tmp_path / "out", train=[dataset["train"], extra], val_from=[extra], val_fraction=0.3)
    data = prepare(both)
    old, new = read_frames(dataset["train"]), read_frames(extra)
    assert data.val_index and min(data.val_index) >= len(old)  # only frames of the extra file
    new_groups = {frame_group(a) for a in new}
    held = {frame_group((old + new)[k]) for k in data.val_index}
    assert held < new_groups  # whole trajectories, not all of them
    assert len(data.train_index) + len(data.val_index) == len(old) + len(new)
    # without val_from the split is the one of all files, as before
    plain = prepare(small_config(dataset, tmp_path / "o2", train=[dataset["train"], extra], val_fraction=0.3))
    assert any(k < len(old) for k in plain.val_index)
    with pytest.raises(ValueError, match="val_from"):
        small_config(dataset, tmp_path / "o3", val_from=["other.extxyz"])


def test_repeat_oversamples_a_files_training_frames_only(tmp_path, dataset):
    """repeat: a file's training frames appear that many times per epoch; its validation
    frames once; other files once; bad keys and counts are refused with the key's name."""
    from mlffd.data import read_frames
    from mlffd.training.trainer import prepare

    extra = str(write_frames(tmp_path / "extra.extxyz", cu_frames(n_traj=3, per_traj=4, seed=21)))
    base = prepare(small_config(dataset, tmp_path / "o1", train=[dataset["train"], extra], val_fraction=0.3))
    data = prepare(small_config(dataset, tmp_path / "o2", train=[dataset["train"], extra], val_fraction=0.3,
                                repeat={extra: 3}))
    n_old = len(read_frames(dataset["train"]))
    assert data.val_index == base.val_index and len(set(data.val_index) & set(data.train_index)) == 0
    for k in set(base.train_index):
        assert data.train_index.count(k) == (3 if k >= n_old else 1)
    assert len(data.train) == len(data.train_index) == data.stats["num_train_frames"]
    # the export describes each training frame once (novelty reference), not the oversampled stream
    summary = train(small_config(dataset, tmp_path / "o5", train=[dataset["train"], extra], val_fraction=0.3,
                                 repeat={extra: 3}, max_steps=2, eval_every=0))
    meta = read_metadata(summary["artifact"])
    assert meta["novelty"]["frames"] == len(set(data.train_index)) < len(data.train_index)
    with pytest.raises(ValueError, match="repeat: .*not among the training files"):
        small_config(dataset, tmp_path / "o3", repeat={"other.extxyz": 2})
    with pytest.raises(ValueError, match="repeat: times must be whole numbers >= 1"):
        small_config(dataset, tmp_path / "o4", train=[dataset["train"]], repeat={dataset["train"]: 0})


def test_non_finite_loss_stops_with_an_error_and_exports_nothing(tmp_path, dataset):
    """A loss that becomes NaN stops the run at that step, weights untouched, no artifact written."""
    trainer = Trainer(small_config(dataset, tmp_path / "nan", max_steps=6, eval_every=0))
    trainer.run(callback=lambda t: t.step >= 2)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        next(trainer.model.readout.parameters()).view(-1)[0] = float("nan")
    poisoned = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite at step 3"):
        trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k].nan_to_num(), poisoned[k].nan_to_num()) for k in after)  # no optimiser step taken
    assert any(not torch.equal(before[k].nan_to_num(), poisoned[k].nan_to_num()) for k in before)
    assert not list((tmp_path / "nan").glob("*.mlffd.pt"))


def test_short_range_prior_starts_where_the_data_end(tmp_path, dataset):
    """Training puts the prior's outer switch distance at the shortest distance in its data
    (found here independently with ASE), so the prior adds nothing to any training frame; below
    the switch the trained student repels a Cu dimer monotonically."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    from mlffd.data import read_frames
    from mlffd.models.repulsion import INNER_FRACTION

    trainer = Trainer(small_config(dataset, tmp_path / "out", max_epochs=2, eval_every=0))
    frames = read_frames(dataset["train"])
    shortest = min(float(neighbor_list("d", f, SMALL_MODEL["cutoff"]).min()) for f in frames)
    prior = trainer.model.repulsion
    assert float(prior.r_outer[0, 0]) == pytest.approx(shortest, rel=1e-6)
    assert float(prior.r_inner[0, 0]) == pytest.approx(INNER_FRACTION * shortest, rel=1e-6)
    assert trainer.data.stats["shortest_pair_distance_A"] == {"Cu-Cu": pytest.approx(shortest, rel=1e-6)}

    trainer.run()
    model = trainer.best_model().double().eval()
    from mlffd.testing import model_inputs

    for frame in frames[:: max(1, len(frames) // 6)]:
        inputs = model_inputs(frame, torch.float64, SMALL_MODEL["cutoff"])
        vectors = inputs[0][inputs[2][1]] - inputs[0][inputs[2][0]] + inputs[3]
        e, close, _ = prior.double()(vectors, inputs[1], inputs[2], inputs[4])
        assert float(e.abs().sum()) == 0.0 and close.numel() == 0

    energies = []
    for r in np.linspace(0.5, INNER_FRACTION * shortest, 25):
        dimer = Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]], cell=[30, 30, 30], pbc=False)
        energies.append(float(model(*model_inputs(dimer, torch.float64, SMALL_MODEL["cutoff"]))["energy"].detach()))
    assert np.all(np.diff(energies) < 0.0), energies


def test_fine_tune_keeps_its_sources_prior_when_the_new_data_come_closer(tmp_path, dataset):
    """A fine-tune keeps the switch distances its source was trained with even when a new frame
    has a closer contact (which a fresh run would move the switch in to): moving it would take
    the prior away at that very contact. The new frame: two Cu atoms of a crystal pushed to 0.8
    of the data's shortest distance, labelled by EMT."""
    from ase.neighborlist import neighbor_list

    from ase.build import bulk
    from cu_frames import _label
    from mlffd.data import read_frames
    from mlffd.models import load_student

    first = Trainer(small_config(dataset, tmp_path / "a", max_epochs=2, eval_every=0))
    first.run()
    artifact = Path(first.finish()["artifact"])
    source_outer = load_student(artifact)[0].state_dict()["repulsion.r_outer"].clone()
    shortest = min(float(neighbor_list("d", f, SMALL_MODEL["cutoff"]).min()) for f in read_frames(dataset["train"]))
    assert float(source_outer[0, 0]) == pytest.approx(shortest, rel=1e-6)

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    bond = crystal.positions[1] - crystal.positions[0]
    crystal.positions[1] = crystal.positions[0] + bond * 0.8 * shortest / np.linalg.norm(bond)
    closer = {**dataset, "train": str(write_frames(tmp_path / "closer.extxyz", read_frames(dataset["train"]) + [_label(crystal, "push-0", "pushed")]))}
    fresh = Trainer(small_config(closer, tmp_path / "b", max_epochs=1))
    assert float(fresh.model.repulsion.r_outer[0, 0]) == pytest.approx(0.8 * shortest, rel=1e-6)
    tuned = Trainer(small_config(closer, tmp_path / "c", init_from=str(artifact), max_epochs=1))
    assert tuned.data.stats["shortest_pair_distance_A"]["Cu-Cu"] == pytest.approx(0.8 * shortest, rel=1e-6)
    torch.testing.assert_close(tuned.model.repulsion.r_outer, source_outer.to(tuned.model.repulsion.r_outer.dtype))
    torch.testing.assert_close(tuned.ema.repulsion.r_outer, source_outer.to(tuned.model.repulsion.r_outer.dtype))


def test_artifact_names_the_teacher_that_labelled_the_data(tmp_path, dataset):
    """The artifact records the teacher written in the frames by the sampler; a config naming
    another teacher, or data from two teachers, is an error naming them, before any training."""
    from mlffd.data import read_frames
    from mlffd.training.trainer import labelling_teacher, prepare

    assert prepare(small_config(dataset, tmp_path / "a", teacher="unknown")).stats["teacher"] == "emt"
    with pytest.raises(ValueError, match="config says 'sevennet:7net-0' but the data were labelled by 'emt'"):
        prepare(small_config(dataset, tmp_path / "b", teacher="sevennet:7net-0"))
    frames = read_frames(dataset["train"])
    other = [a.copy() for a in frames[:2]]
    for a in other:
        a.info["teacher"] = "orb:orb-v3"
    with pytest.raises(ValueError, match=r"several teachers \['emt', 'orb:orb-v3'\]"):
        labelling_teacher("emt", {"train": frames, "test": other})
    untagged = [a.copy() for a in frames[:2]]
    for a in untagged:
        a.info.pop("teacher")
    assert labelling_teacher("my-dft", {"train": untagged}) == "my-dft"  # untagged data: the config's word


def test_artifact_records_a_structure_of_its_data_and_validation_starts_from_it(tmp_path, dataset):
    """Training stores one of its periodic training frames in the artifact (which one:
    test_representative_is_the_bulk_not_the_largest_defect_cell); `mlffd-validate` starts from it (grown to >= 64 atoms) when no
    --structure is given, not from silicon."""
    from mlffd.artifact import read_metadata
    from mlffd.data import read_frames
    from mlffd.representative import default_structure
    from md_validation.inputs import load_structure

    summary = train(small_config(dataset, tmp_path / "out", max_epochs=1, eval_every=0))
    record = read_metadata(summary["artifact"])["structure"]
    periodic = [a for a in read_frames(dataset["train"]) if a.pbc.all()]  # the slab is never the pick
    (frame,) = [a for a in periodic if len(a) == len(record["numbers"]) and np.allclose(a.positions, record["positions"], atol=1e-6)]
    assert set(record["numbers"]) == {29}
    start = load_structure(None, model=summary["artifact"])
    assert len(start) >= 64 and set(start.get_chemical_symbols()) == {"Cu"} and start.pbc.all()
    assert len(start) % len(frame) == 0
    # a student without the record: its element's reference crystal (diamond Si, 64)
    from mlffd.testing import random_artifact

    si = load_structure(None, model=random_artifact(tmp_path / "bare.mlffd.pt", "ultra-tiny"))
    assert len(si) == 64 and abs(si.cell.lengths()[0] - 2 * 5.43) < 1e-9
    shipped = load_structure(None, model="tiny")  # the shipped default records a frame of its data
    assert len(shipped) >= 64 and set(shipped.get_chemical_symbols()) == {"Si"}
    with pytest.raises(ValueError, match="records no structure and has no reference crystal"):
        default_structure({"elements": ["H", "O"]})


def test_representative_is_the_bulk_not_the_largest_defect_cell():
    """Diamond cells at three temperatures, one larger interstitial cell and a slab: the pick is
    the coolest diamond cell, whatever the order; without energies the first of the common kind;
    molecules alone: the most common molecule."""
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlffd.representative import pick_structure

    def labelled(atoms, e_per_atom, shift=0.0):
        atoms.positions[0] += shift
        atoms.calc = SinglePointCalculator(atoms, energy=e_per_atom * len(atoms))
        return atoms

    # the coolest one told apart by its positions
    diamond = [labelled(bulk("Si", "diamond", a=5.43, cubic=True), e, s) for e, s in ((-5.30, 0.0), (-5.42, 0.01), (-5.35, 0.02))]
    big = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    big += Atoms("Si", positions=[[1.36, 1.36, 1.36]])
    slab = bulk("Si", "diamond", a=5.43, cubic=True)
    slab.pbc = (True, True, False)
    frames = [labelled(big, -5.50), labelled(slab, -6.0), *diamond]
    for order in (frames, frames[::-1]):
        got = pick_structure(order)
        assert len(got) == 8 and got.pbc.all() and np.allclose(got.positions, diamond[1].positions)
    bare = [a.copy() for a in frames]  # copies carry no calculator
    assert np.allclose(pick_structure(bare).positions, diamond[0].positions)
    water = molecule("H2O")
    assert pick_structure([molecule("CH4"), water, water.copy()]).get_chemical_formula() == "H2O"
    with pytest.raises(ValueError, match="no frames"):
        pick_structure([])


def test_teacher_specs_compare_by_meaning():
    """The sampler writes a teacher's canonical spec; a config may spell it otherwise."""
    from mlffd.training.trainer import _same_teacher

    assert _same_teacher("xtb", "xtb:GFN2-xTB") and _same_teacher("xtb:gfn2-xtb", "xtb:GFN2-xTB")
    assert _same_teacher("ase:ase.calculators.lj:LennardJones?sigma=2.1&rc=6",
                         "ase:ase.calculators.lj:LennardJones?rc=6.0&sigma=2.1")
    assert not _same_teacher("xtb", "xtb:GFN1-xTB") and not _same_teacher("emt", "sevennet:7net-0")
    assert _same_teacher("my-dft-run", "my-dft-run") and not _same_teacher("my-dft-run", "other")


def test_a_run_still_improving_at_its_end_is_flagged_under_trained(tmp_path, dataset):
    """The summary says when the best validation came at the last evaluation (more steps would
    help), and not when the loss had levelled off before the end."""
    from mlffd.training.trainer import under_trained

    trainer = Trainer(small_config(dataset, tmp_path / "short", max_epochs=6, eval_every=3, lr=1e-3))
    trainer.run()
    summary = trainer.finish()
    assert summary["metrics"]["under_trained"] == under_trained(trainer.history)
    assert summary["metrics"]["under_trained"]  # a low learning rate for a few epochs: still falling at the end
    history = [{"step": s, "val_loss": v, "best": b} for s, v, b in ((3, 1.0, True), (6, 0.5, True), (9, 0.4, True))]
    assert under_trained(history)
    assert not under_trained(history[:2])  # too few evaluations to say
    history.append({"step": 12, "val_loss": 0.41, "best": False})
    assert not under_trained(history)
