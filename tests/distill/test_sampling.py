"""Sampling with the EMT teacher on Cu: outputs, schema, config types, resume, frame selection."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter

import numpy as np
import pytest
from ase.io import read

from mlffd.sampling import (
    SampleConfig,
    descriptor,
    load_config,
    plan,
    run_sampling,
    select_frames,
)


def _config(out, **over) -> SampleConfig:
    base = dict(
        teacher="emt",
        output_dir=str(out),
        random_seed=7,
        coverage=False,  # these tests are about the sampler's own kinds; tests/distill/test_sampling_coverage.py covers the recipe
        seeds=[dict(name="cu", symbol="Cu", crystal="fcc", a=3.61, cubic=True, supercell=[2, 2, 2]),
               dict(name="cu1", symbol="Cu", crystal="fcc", a=3.61, cubic=True)],
        tasks=[
            dict(name="nvt", seed="cu", temperatures=[300, 800], steps=10, equilibrate=2, sample_every=5,
                 repeats=1, test_repeats=1, copies=1, copy_strain=0.03, copy_rattle=0.02),
            dict(name="npt", seed="cu", ensemble="npt", temperatures=[600], steps=10, equilibrate=2, taup_fs=100.0),
            dict(name="mq", seed="cu", kind="melt_quench", temperatures=[2000], melt_temperature=3000, melt_steps=4,
                 equilibrate=2, steps=10, quench_steps=10, anneal_steps=5, timestep_fs=1.0, rattle=0.2),
            dict(name="vac", seed="cu", vacancies=1, steps=5, equilibrate=1),
            dict(name="int", seed="cu", interstitials=1, steps=5, equilibrate=1),
            dict(name="s100", seed="cu1", surface=[1, 0, 0], surface_layers=3, surface_repeat=[2, 2], steps=5, equilibrate=1),
            dict(name="s111", seed="cu1", surface=[1, 1, 1], surface_layers=2, steps=5, equilibrate=1),
            dict(name="strain", seed="cu", kind="single", steps=3, copy_strain=0.03, copy_rattle=0.01),
        ],
    )
    base.update(over)
    return SampleConfig.from_dict(base)


EXPECTED_TYPES = {"crystal", "strained", "liquid", "amorphous", "vacancy", "interstitial", "surface100", "surface111"}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("cu")
    cfg = _config(out)
    result = run_sampling(cfg, progress=False)
    return cfg, out, result


def test_outputs_and_schema(sampled):
    cfg, out, result = sampled
    assert result.complete and result.trajectories_done == len(plan(cfg))
    train = read(out / "train.extxyz", ":")
    test = read(out / "test.extxyz", ":")
    assert len(train) == result.frames["train"] and len(test) == result.frames["test"] > 0
    for frame in train + test:
        n = len(frame)
        assert frame.get_forces().shape == (n, 3)
        assert frame.get_stress(voigt=True).shape == (6,)
        assert np.isfinite(frame.get_potential_energy())
        assert frame.info["teacher"] == "emt"
        assert {"config_type", "trajectory", "temperature", "step"} <= set(frame.info)
    assert set(Counter(f.info["config_type"] for f in train)) == EXPECTED_TYPES
    # frames carry the teacher's labels: re-evaluate a few with EMT
    from ase.calculators.emt import EMT

    for frame in train + test:
        ref = frame.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(frame.get_potential_energy(), ref.get_potential_energy(), atol=1e-6)
        np.testing.assert_allclose(frame.get_forces(), ref.get_forces(), atol=1e-6)  # extxyz keeps 8 decimals
        np.testing.assert_allclose(frame.get_stress(), ref.get_stress(), atol=1e-8)


def test_test_split_has_its_own_trajectories(sampled):
    _, out, _ = sampled
    train_ids = {f.info["trajectory"] for f in read(out / "train.extxyz", ":")}
    test_ids = {f.info["trajectory"] for f in read(out / "test.extxyz", ":")}
    assert test_ids and not train_ids & test_ids


def test_provenance(sampled):
    cfg, out, result = sampled
    prov = json.loads((out / "train.extxyz.provenance.json").read_text())
    assert prov["teacher"]["spec"] == "emt" and prov["teacher"]["versions"]["ase"]
    assert prov["frames"] == result.frames["train"]
    assert prov["config_types"] == result.config_types["train"]
    assert prov["config"]["teacher"] == "emt"
    assert (out / "test.extxyz.provenance.json").exists()


def test_resume_after_interruption(sampled, tmp_path):
    cfg, ref_out, ref = sampled
    n_total = len(plan(cfg))
    first = run_sampling(cfg, output_dir=tmp_path, max_trajectories=3, progress=False)
    assert first.trajectories_done == 3 and not first.complete
    # simulate a kill in the middle of writing the next batch: a torn, unrecorded tail
    with open(tmp_path / "train.extxyz", "a") as fh:
        fh.write("64\nLattice=\"garbage")
    second = run_sampling(cfg, output_dir=tmp_path, max_trajectories=2, progress=False)
    assert second.trajectories_run_now == 2 and second.trajectories_done == 5
    third = run_sampling(cfg, output_dir=tmp_path, progress=False)
    assert third.complete and third.trajectories_run_now == n_total - 5
    # same frames as the uninterrupted run (deterministic per trajectory)
    for name in ("train.extxyz", "test.extxyz"):
        a, b = read(ref_out / name, ":"), read(tmp_path / name, ":")
        assert [f.info["trajectory"] for f in a] == [f.info["trajectory"] for f in b]
        np.testing.assert_allclose(np.concatenate([f.positions for f in a]), np.concatenate([f.positions for f in b]))
    # nothing left to do
    assert run_sampling(cfg, output_dir=tmp_path, progress=False).trajectories_run_now == 0


def test_resume_refuses_other_config(sampled, tmp_path):
    cfg, _, _ = sampled
    run_sampling(cfg, output_dir=tmp_path, max_trajectories=1, progress=False)
    other = dataclasses.replace(cfg, random_seed=8)
    with pytest.raises(ValueError, match="different sampling config"):
        run_sampling(other, output_dir=tmp_path, progress=False)


def test_select_frames_drops_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 4)) * 10
    x = np.concatenate([base, base + 1e-6, base[:2]])  # exact and near duplicates
    chosen = select_frames(x, min_distance=1e-3)
    assert len(chosen) == 5 and len({tuple(np.round(x[i], 3)) for i in chosen}) == 5
    assert select_frames(x, n=3)[:1] == [0] and len(select_frames(x, n=3)) == 3
    assert select_frames(np.zeros((0, 3))) == []


def test_descriptor_and_selection_in_run(tmp_path):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    a = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    a.calc = EMT()
    a.get_potential_energy()
    d1 = descriptor(a)
    b = a.copy()
    b.rattle(0.1, seed=0)
    b.calc = EMT()
    b.get_potential_energy()
    assert d1.shape == descriptor(b).shape and np.linalg.norm(d1 - descriptor(b)) > 0.1
    cfg = _config(tmp_path, tasks=[dict(name="nvt", seed="cu", temperatures=[500], steps=40, equilibrate=0,
                                        sample_every=2, max_frames=5, copies=0)])
    res = run_sampling(cfg, progress=False)
    assert res.frames["train"] == 5


def test_config_files(tmp_path):
    import yaml

    cfg = _config(tmp_path)
    data = cfg.to_dict()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert load_config(tmp_path / "c.yaml") == cfg
    toml = 'teacher = "emt"\n[[seeds]]\nname = "cu"\nsymbol = "Cu"\ncrystal = "fcc"\n[[tasks]]\nname = "t"\nseed = "cu"\n'
    (tmp_path / "c.toml").write_text(toml)
    assert load_config(tmp_path / "c.toml").tasks[0].seed == "cu"
    with pytest.raises(ValueError, match="unknown key"):
        SampleConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="unknown seed"):
        SampleConfig.from_dict({**data, "tasks": [{"name": "x", "seed": "nope"}]})


def test_si_example_config_parses():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "si" / "sample.yaml"
    cfg = load_config(path)
    trajs = plan(cfg)
    assert cfg.teacher == "sevennet:7net-0"
    assert {t.split for t in trajs} == {"train", "test"}
    assert len({t.id for t in trajs}) == len(trajs)
    assert 3000 <= sum(t.evaluations for t in trajs) <= 6000


def test_cli(tmp_path):
    from click.testing import CliRunner

    import yaml

    from mlffd.cli.main import cli

    cfg = _config(tmp_path / "out", tasks=[dict(name="nvt", seed="cu", temperatures=[300], steps=5, equilibrate=1)])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    runner = CliRunner()
    r = runner.invoke(cli, ["sample", str(tmp_path / "c.yaml"), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "train: 1 trajectories" in r.output
    r = runner.invoke(cli, ["sample", str(tmp_path / "c.yaml"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "1/1 trajectories done, complete" in r.output
    assert len(read(tmp_path / "out" / "train.extxyz", ":")) == 1


def test_snapshot_of_finished_part(sampled, tmp_path):
    from mlffd.sampling import snapshot

    cfg, out, result = sampled
    run_sampling(cfg, output_dir=tmp_path, max_trajectories=4, progress=False)
    with open(tmp_path / "train.extxyz", "a") as fh:  # a batch being written right now
        fh.write("12\nLattice=\"1 0 0")
    files = snapshot(tmp_path, cfg, dest_dir=tmp_path / "snap")
    frames = read(files["train"], ":")
    assert files["train"].name == "train.extxyz.xz" and len(frames) > 0
    assert all(f.get_forces().shape == (len(f), 3) for f in frames)
    assert (tmp_path / "snap" / "train.extxyz.provenance.json").exists()


def test_unstable_teacher_md_is_stopped_and_keeps_earlier_frames(tmp_path):
    """A teacher whose MD blows up (forces beyond max_force) stops that trajectory with a warning
    naming it; the frames sampled before stay, the run goes on."""
    from ase.calculators.emt import EMT

    class Exploding(EMT):
        """EMT until the 12th evaluation, then forces of 1e4 eV/Å."""

        calls = 0

        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            Exploding.calls += 1
            if Exploding.calls > 12:
                self.results["forces"] = self.results["forces"] * 0 + 1e4

    cfg = _config(tmp_path / "run", tasks=[dict(name="nvt", seed="cu", temperatures=[300], steps=30, equilibrate=0,
                                                sample_every=2, repeats=1, test_repeats=0)])
    with pytest.warns(RuntimeWarning, match=r"nvt/train0/T300: teacher MD became unstable after \d+ steps"):
        result = run_sampling(cfg, teacher=Exploding(), progress=False)
    assert result.complete
    frames = read(tmp_path / "run" / "train.extxyz", ":")
    assert 1 <= len(frames) <= 6  # only the frames from before the blow-up
    assert max(np.abs(f.get_forces()).max() for f in frames) < 50


def test_a_teacher_failure_stops_only_its_trajectory(tmp_path):
    """A teacher that raises CalculationFailed (an SCF that does not converge) in the middle of one
    trajectory's MD or on a perturbed copy loses only that trajectory's later frames or that copy:
    the run goes on to the next trajectory and completes, with a warning naming what was lost."""
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.emt import EMT

    class Failing(EMT):
        """EMT, except that the evaluations numbered in ``fail`` raise."""

        def __init__(self, fail):
            super().__init__()
            self.fail, self.calls = fail, 0

        def calculate(self, *args, **kwargs):
            self.calls += 1
            if self.calls in self.fail:
                raise CalculationFailed("SCF not converged in 250 cycles")
            super().calculate(*args, **kwargs)

    cfg = _config(tmp_path / "run", tasks=[dict(name="nvt", seed="cu", temperatures=[300, 600], steps=30, equilibrate=0,
                                                sample_every=2, repeats=1, test_repeats=0, copies=1)])
    teacher = Failing(fail=(13, 15, 40))  # MD at 300 K, a copy of its frames, MD at 600 K
    with pytest.warns(RuntimeWarning) as record:
        result = run_sampling(cfg, teacher=teacher, progress=False)
    messages = [str(w.message) for w in record]
    assert any(re.match(r"nvt/train0/T300: the teacher failed after \d+ MD steps \(SCF not converged", m) for m in messages)
    assert any(m.startswith("the teacher failed on a perturbed copy") for m in messages)
    assert result.complete and teacher.calls > 40
    frames = read(tmp_path / "run" / "train.extxyz", ":")
    temps = [f.info["temperature"] for f in frames]
    assert 300 in temps and 600 in temps  # the failing trajectory kept its earlier frames, the next one ran
    assert all(np.isfinite(f.get_forces()).all() for f in frames)

    # single points: the one that fails is dropped, the others are kept
    cfg = _config(tmp_path / "points", tasks=[dict(name="pts", kind="single", seed="cu", steps=6, rattle=0.05,
                                                   repeats=1, test_repeats=0, copies=0)])
    teacher = Failing(fail=(3,))
    with pytest.warns(RuntimeWarning, match=r"the teacher failed on pts/train0/\w+: point \d \(SCF not converged"):
        assert run_sampling(cfg, teacher=teacher, progress=False).complete
    assert teacher.calls == 6 and len(read(tmp_path / "points" / "train.extxyz", ":")) == 5


def test_a_teacher_that_cannot_be_set_up_stops_sampling_but_a_non_finite_result_drops_one_point(tmp_path):
    """The one definition of a teacher failure (mlffd.sampling.frames.TEACHER_FAILURES): a
    FloatingPointError on one structure drops that structure like an SCF failure; ASE's
    CalculatorSetupError (e.g. an unknown method) is not a failure on one structure and stops
    the run with that error instead of dropping every frame."""
    from ase.calculators.calculator import CalculatorSetupError
    from ase.calculators.emt import EMT

    class Raising(EMT):
        def __init__(self, exc, on_call):
            super().__init__()
            self.exc, self.on_call, self.calls = exc, on_call, 0

        def calculate(self, *args, **kwargs):
            self.calls += 1
            if self.calls == self.on_call:
                raise self.exc
            super().calculate(*args, **kwargs)

    def points(out):
        return _config(out, tasks=[dict(name="pts", kind="single", seed="cu", steps=4, rattle=0.05, repeats=1, test_repeats=0,
                                         copies=0)])

    teacher = Raising(FloatingPointError("non-finite energy"), on_call=2)
    with pytest.warns(RuntimeWarning, match=r"the teacher failed on pts/train0/\w+: point \d \(non-finite energy"):
        assert run_sampling(points(tmp_path / "nan"), teacher=teacher, progress=False).complete
    assert teacher.calls == 4 and len(read(tmp_path / "nan" / "train.extxyz", ":")) == 3

    teacher = Raising(CalculatorSetupError("unknown method 'GFN7'"), on_call=1)
    with pytest.raises(CalculatorSetupError, match="GFN7"):
        run_sampling(points(tmp_path / "setup"), teacher=teacher, progress=False)
    assert teacher.calls == 1


def test_frames_without_atoms_or_with_non_finite_numbers_are_never_written():
    """The last gate before a dataset: atoms, finite positions, cell and labels."""
    from ase import Atoms
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlffd.sampling.run import writable

    def labelled(atoms, energy=-1.0, forces=None):
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)) if forces is None else forces)
        return atoms

    good = labelled(bulk("Cu", "fcc", a=3.6))
    assert writable(good)
    nan_pos = bulk("Cu", "fcc", a=3.6)
    nan_pos.positions[0, 0] = np.nan
    assert not writable(labelled(nan_pos))
    assert not writable(labelled(Atoms()))
    assert not writable(labelled(bulk("Cu", "fcc", a=3.6), energy=np.inf))
    assert not writable(labelled(bulk("Cu", "fcc", a=3.6), forces=np.full((1, 3), np.nan)))
    unlabelled = bulk("Cu", "fcc", a=3.6)
    assert not writable(unlabelled)


def test_seed_files_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    """Like every other path of a config, a relative seed file is relative to the config file,
    whatever the current directory; the folder is not part of the config hash."""
    from ase.build import bulk
    from ase.io import write

    from mlffd.sampling import build_seed, config_hash, load_config

    folder = tmp_path / "configs"
    folder.mkdir()
    write(folder / "seed.xyz", bulk("Cu", "fcc", a=3.6, cubic=True), format="extxyz")
    text = "teacher: emt\ncoverage: false\nseeds: [{name: s, file: seed.xyz}]\ntasks: [{name: t, seed: s, kind: single, steps: 1}]\n"
    (folder / "sample.yaml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(folder / "sample.yaml")
    assert len(build_seed(cfg.seeds[0], base_dir=cfg.base_dir)) == 4
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "sample.yaml").write_text(text)
    assert config_hash(load_config(moved / "sample.yaml")) == config_hash(cfg)
