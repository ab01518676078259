"""``mlffd distill``: the whole pipeline on an EMT Cu toy, and skipping of finished stages."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from cu_frames import SMALL_MODEL

from mlffd.cli.main import cli
from mlffd.distill import load_distill_config, run_distill


def _config(tmp_path) -> dict:
    return {
        "workdir": "run",
        "teacher": "emt",
        "sample": {
            "teacher": "emt",
            "random_seed": 3,
            "coverage": False,  # a toy run: the coverage recipe would multiply its cost
            "seeds": [{"name": "cu", "symbol": "Cu", "crystal": "fcc", "a": 3.61, "cubic": True, "supercell": [2, 1, 1]}],
            "tasks": [
                {"name": "hot", "seed": "cu", "temperatures": [300, 900], "repeats": 2, "test_repeats": 1,
                 "equilibrate": 2, "steps": 12, "sample_every": 3, "timestep_fs": 2.0, "rattle": 0.05},
            ],
        },
        "data": {"train": "data/train.extxyz.xz", "test": "data/test.extxyz.gz"},
        "train": {"model_overrides": SMALL_MODEL, "batch_size": 4, "max_epochs": 4, "val_fraction": 0.25,
                  "threads": 1, "progress": False, "warmup_steps": 2},
        "students": {"small": {"model": "ultra-tiny"}},
    }


def test_distill_pipeline_and_skips(tmp_path):
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    lines: list[str] = []
    results = run_distill(load_distill_config(path), log=lines.append)
    assert (tmp_path / "data" / "train.extxyz.xz").exists() and (tmp_path / "data" / "test.extxyz.gz").exists()
    assert (tmp_path / "run" / "models" / "small.mlffd.pt").exists()
    metrics = json.loads((tmp_path / "run" / "models" / "small.metrics.json").read_text())
    assert metrics["num_frames"] > 0 and results["small"]["force_rmse"] == metrics["force_rmse"]
    assert not any("skipped" in line for line in lines)

    # a second run finds every stage finished
    result = CliRunner().invoke(cli, ["distill", str(path)])
    assert result.exit_code == 0, result.output
    assert "[label] done, skipped" in result.output
    for stage in ("train:small", "export:small", "evaluate:small"):
        assert f"[{stage}] done, skipped" in result.output

    # more epochs: the finished run resumes and continues; other changes start a fresh run
    cfg = _config(tmp_path)
    cfg["students"]["small"]["max_epochs"] = 5
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_distill(load_distill_config(path), stages=("label", "train"), log=lines.append)
    assert any(line.startswith("[train:small] training") for line in lines)
    assert not any("moved the old run" in line for line in lines)
    cfg["students"]["small"]["lr"] = 1e-3
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_distill(load_distill_config(path), stages=("label", "train"), log=lines.append)
    assert any("moved the old run" in line for line in lines)


def test_distill_fine_tune_student_with_extra_data(tmp_path):
    from cu_frames import cu_frames, write_frames

    write_frames(tmp_path / "extra.extxyz", cu_frames(n_traj=2, per_traj=3, seed=11))
    cfg = _config(tmp_path)
    cfg["students"]["tuned"] = {"model": "ultra-tiny", "init_from": "run/models/small.mlffd.pt",
                                "extra_train": ["extra.extxyz"], "lr": 1e-3, "max_epochs": 2}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_distill_config(path)
    tuned = config.student_config("tuned")
    assert tuned.train == (config.train_data, str(tmp_path / "extra.extxyz"))
    assert tuned.init_from == str(tmp_path / "run" / "models" / "small.mlffd.pt")

    lines: list[str] = []
    results = run_distill(config, log=lines.append)  # 'small' first, then 'tuned' starts from its export
    assert set(results) == {"small", "tuned"}
    assert (tmp_path / "run" / "models" / "tuned.mlffd.pt").exists()
    assert results["tuned"]["num_frames"] == results["small"]["num_frames"] > 0  # same held-out set

    # the base student changed: once it is exported, the fine-tune's input changed and it trains again
    cfg["students"]["small"]["max_epochs"] = 5
    path.write_text(yaml.safe_dump(cfg))
    lines = []
    run_distill(load_distill_config(path), log=lines.append)
    assert any(line.startswith("[train:tuned] training") for line in lines)
