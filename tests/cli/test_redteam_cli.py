"""Bad input never crashes, hangs or corrupts (issue 22, CLI and config part).

Every bad value or file gives ONE ``Error: ...`` line naming it, a non-zero exit status and no
traceback (unless ``--debug``); values are refused before any expensive work; a NaN is never
printed as a result. Small systems, the ultra-tiny architecture and EMT keep each test to seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner

from md_validation.cli import cli as validate_cli
from mlffd.cli.main import cli as mlffd_cli
from mlffd.models import export_student
from mlffd.testing import random_artifact, random_student


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("redteam")
    out = {"dir": d}
    out["cu"] = random_artifact(d / "cu.mlffd.pt", "ultra-tiny", dtype=torch.float64, elements=("Cu",))
    out["si"] = random_artifact(d / "si.mlffd.pt", "ultra-tiny", dtype=torch.float64)
    # a model with valid metadata whose every output is NaN
    model, config = random_student("ultra-tiny", dtype=torch.float64, elements=("Cu",))
    with torch.no_grad():
        model.scale.fill_(float("nan"))
    out["nan"] = export_student(model, config, d / "nan.mlffd.pt", teacher="none")
    frames = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.info["trajectory"] = f"t{k % 2}"
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
        frames.append(atoms)
    out["data"] = d / "cu.extxyz"
    write(out["data"], frames)
    text = out["data"].read_text()
    out["truncated"] = d / "truncated.extxyz"
    out["truncated"].write_text(text[: len(text) // 3])
    out["binary"] = d / "binary.extxyz"
    out["binary"].write_bytes(bytes(range(256)) * 8)
    out["empty"] = d / "empty.extxyz"
    out["empty"].write_text("")
    nan_labels = [a.copy() for a in frames]
    for a, f in zip(nan_labels, frames):
        forces = f.get_forces().copy()
        forces[2, 1] = np.nan
        a.calc = SinglePointCalculator(a, energy=f.get_potential_energy(), forces=forces)
    out["nan_labels"] = d / "nan_labels.extxyz"
    write(out["nan_labels"], nan_labels)
    out["si8"] = d / "si8.xyz"
    write(out["si8"], bulk("Si", "diamond", a=5.43, cubic=True))
    out["a_file"] = d / "a_file.txt"
    out["a_file"].write_text("not a directory")
    return out


def run(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *needles: str, code: int | None = None) -> str:
    """Non-zero exit, no exception escaped, exactly one ``Error:`` line on stderr holding every needle."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "nan" not in result.stdout.lower().split(), result.stdout
    return errors[0]


# -- case 7: NaN outputs are never results; non-finite and out-of-range options refused up front


def test_evaluate_nan_model_fails_naming_frames_and_atoms(files):
    result = run(mlffd_cli, "evaluate", files["nan"], files["data"])
    line = assert_one_line_error(result, "nan.mlffd.pt", "non-finite", "frames 0, 1, 2, 3", "atom")
    assert "force RMSE" not in result.stdout and "nan" not in line.split(":")[0]


def test_evaluate_nan_labels_name_file_and_frame(files):
    result = run(mlffd_cli, "evaluate", files["cu"], files["nan_labels"])
    assert_one_line_error(result, "nan_labels.extxyz", "frame 0", "non-finite forces")


def test_validate_forces_nan_model_fails(files, tmp_path):
    result = run(validate_cli, "forces", "--model", files["nan"], "--data", files["data"], "--out", tmp_path / "f", "--quiet")
    assert_one_line_error(result, "nan.mlffd.pt", "non-finite")
    assert not (tmp_path / "f" / "forces.json").exists()


NONFINITE = [
    ("nve", "--temperature", "nan"),
    ("nve", "--temperature", "-5"),
    ("nve", "--time", "1e400ps"),
    ("nve", "--time", "0"),
    ("nve", "--dt", "0fs"),
    ("nve", "--thermalise", "inf"),
    ("nve", "--threshold", "nan"),
    ("nve", "--max-deviation", "nan"),
    ("nve", "--friction", "-0.1"),
    ("nve", "--interval", "0"),
    ("nve", "--seed", "-1"),
    ("compare", "--r-max", "nan"),
    ("compare", "--window", "0"),
    ("compare", "--rdf-threshold", "inf"),
    ("compare", "--angle-cutoff", "-1"),
    ("compare", "--nbins", "0"),
    ("rdf", "--r-max", "inf"),
    ("rdf", "--r-max", "-1"),
    ("rdf", "--stride", "0"),
    ("forces", "--min-force", "nan"),
    ("forces", "--stride", "0"),
]


@pytest.mark.parametrize("command,option,value", NONFINITE)
def test_nonfinite_or_out_of_range_options_refused_before_work(files, tmp_path, command, option, value):
    out = tmp_path / "out"
    base = {"nve": ["nve", "--model", files["si"], "--structure", files["si8"]],
            "compare": ["compare", "--model", files["si"], "--teacher", "emt", "--structure", files["si8"]],
            "rdf": ["rdf", files["data"]],
            "forces": ["forces", "--model", files["cu"], "--data", files["data"]]}[command]
    result = run(validate_cli, *base, option, value, "--out", out, "--quiet")
    assert_one_line_error(result, option, code=2)
    assert value in result.stderr or value.lstrip("-") in result.stderr
    assert not out.exists()  # refused while parsing: nothing was run or written


def test_nve_too_short_for_a_drift_is_refused(files, tmp_path):
    result = run(validate_cli, "nve", "--model", files["si"], "--structure", files["si8"], "--time", "5fs",
                 "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, "--time", "--interval", code=2)


def test_compare_equilibration_longer_than_run_is_refused(files, tmp_path):
    result = run(validate_cli, "compare", "--model", files["si"], "--teacher", "emt", "--structure", files["si8"],
                 "--time", "50fs", "--equilibration", "60fs", "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, "--equilibration", code=2)


def test_library_settings_refuse_nan():
    from md_validation.md import MDPlan
    from md_validation.nve import NVESettings

    for bad in ({"threshold": math.nan}, {"temperature_K": math.nan}, {"dt_fs": math.inf}, {"time_fs": 5.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NVESettings(**bad)
    with pytest.raises(ValueError, match="temperature_K"):
        MDPlan(temperature_K=math.nan)


# -- case 8: messages instead of tracebacks


@pytest.mark.parametrize("which,needle", [("truncated", "cannot read frames"), ("binary", "cannot read frames"),
                                          ("empty", "empty")])
def test_forces_bad_data_file(files, tmp_path, which, needle):
    result = run(validate_cli, "forces", "--model", files["cu"], "--data", files[which], "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, "--data", files[which].name, needle)


@pytest.mark.parametrize("args", [["--data", "{data}@100"], ["--data", "{data}", "--index", "100"],
                                  ["--data", "{data}", "--index", "-9"], ["--data", "{data}@7:"],
                                  ["--data", "{data}", "--index", "x"]])
def test_forces_index_out_of_range(files, tmp_path, args):
    args = [a.format(data=files["data"]) for a in args]
    result = run(validate_cli, "forces", "--model", files["cu"], *args, "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, "--data", "cu.extxyz")
    assert "out of range" in result.stderr or "no frames" in result.stderr or "selection" in result.stderr


def test_forces_frame_selection_with_at(files, tmp_path):
    result = run(validate_cli, "forces", "--model", files["cu"], "--data", f"{files['data']}@1:3", "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "forces.json").read_text())["inputs"]["n_frames"] == 2


def test_unwritable_out_is_noticed_before_anything_runs(files):
    blocked = files["a_file"] / "sub"  # below a regular file: no one can create it, root included
    missing_model = files["dir"] / "no-such.mlffd.pt"  # loading it would fail: the --out check comes first
    cases = [
        (validate_cli, ["nve", "--model", missing_model, "--out", blocked]),
        (validate_cli, ["forces", "--model", missing_model, "--data", files["data"], "--out", blocked]),
        (validate_cli, ["rdf", files["data"], "--out", blocked]),
        (validate_cli, ["compare", "--model", missing_model, "--teacher", "emt", "--out", blocked]),
        (validate_cli, ["nve", "--model", missing_model, "--out", files["a_file"]]),
        (mlffd_cli, ["evaluate", missing_model, files["data"], "--json", blocked / "m.json"]),
        (mlffd_cli, ["card", missing_model, "--data", files["data"], "--out-dir", blocked]),
        (mlffd_cli, ["bench", "--out", blocked, "--quick"]),
        (mlffd_cli, ["average", missing_model, missing_model, "--out", blocked / "avg.mlffd.pt"]),
    ]
    for cli, args in cases:
        result = run(cli, *args, *(["--quiet"] if cli is validate_cli else []))
        assert_one_line_error(result, "a_file.txt", code=2)


def _train_config(d: Path, data: Path, extra: str) -> Path:
    path = d / "train.yaml"
    path.write_text(f"train: [{data}]\noutput: {d / 'run'}\nmodel: ultra-tiny\nmax_steps: 1\n{extra}\n")
    return path


TRAIN_ERRORS = [
    ("lr: fast", "lr"),
    ("batch_size: 2.5", "batch_size"),
    ("elements: [Xx]", "elements"),
    ("device: gpu", "device"),
    ("max_steps: -3", "max_steps"),
    ("max_epochs: -1", "max_epochs"),
    ("lr: 0", "lr"),
    ("lr: -1.0e-3", "lr"),
    ("patience: -2", "patience"),
    ("checkpoint_every: 0", "checkpoint_every"),
    ("val_fraction: 1.5", "val_fraction"),
    ("lr: .nan", "lr"),
    ("train: 5", "train"),
    ("model: huge", "model"),
    ("ema_decay: yes", "ema_decay"),
]


@pytest.mark.parametrize("line,key", TRAIN_ERRORS)
def test_training_config_errors_name_the_key(files, tmp_path, line, key):
    cfg = _train_config(tmp_path, files["data"], line)
    result = run(mlffd_cli, "train", cfg)
    assert_one_line_error(result, str(cfg), f"{key}")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_training_config_cuda_without_cuda(files, tmp_path):
    cfg = _train_config(tmp_path, files["data"], "device: cuda")
    assert_one_line_error(run(mlffd_cli, "train", cfg), str(cfg), "device", "CUDA")


def test_training_config_yaml_number_without_dot_is_a_number(files, tmp_path):
    from mlffd.training.config import load_config

    assert load_config(_train_config(tmp_path, files["data"], "lr: 1e-3")).lr == pytest.approx(1e-3)


def test_sampling_config_type_error_names_task_and_key(tmp_path):
    cfg = tmp_path / "sample.yaml"
    cfg.write_text("teacher: emt\nseeds: [{name: cu, symbol: Cu, crystal: fcc}]\n"
                   "tasks: [{name: hot, seed: cu, timestep_fs: fast}]\n")
    assert_one_line_error(run(mlffd_cli, "sample", cfg, "--dry-run"), "sample.yaml", "task 'hot'", "timestep_fs")
    cfg.write_text("teacher: emt\nseeds: [{name: cu, symbol: Cu, crystal: fcc}]\ntasks: [{name: hot, seed: cu, steps: 2.5}]\n")
    assert_one_line_error(run(mlffd_cli, "sample", cfg, "--dry-run"), "task 'hot'", "steps")


COUNT_AND_DEVICE_OPTIONS = [
    (validate_cli, ["--threads", "0", "nve"], "--threads"),
    (validate_cli, ["forces", "--data", "{data}", "--batch-size", "0"], "--batch-size"),
    (validate_cli, ["nve", "--device", "gpu"], "--device"),
    (validate_cli, ["forces", "--data", "{data}", "--device", "gpu"], "--device"),
    (validate_cli, ["compare", "--teacher", "emt", "--device", "gpu"], "--device"),
    (mlffd_cli, ["evaluate", "{model}", "{data}", "--batch-size", "0"], "--batch-size"),
    (mlffd_cli, ["evaluate", "{model}", "{data}", "--device", "gpu"], "--device"),
    (mlffd_cli, ["sample", "{data}", "--threads", "0"], "--threads"),
    (mlffd_cli, ["sample", "{data}", "--device", "gpu"], "--device"),
    (mlffd_cli, ["sample", "{data}", "--max-trajectories", "0"], "--max-trajectories"),
    (mlffd_cli, ["bench", "--threads", "0"], "--threads"),
    (mlffd_cli, ["bench", "--device", "gpu"], "--device"),
    (mlffd_cli, ["bench", "--repeats", "0"], "--repeats"),
    (mlffd_cli, ["bench", "--min-time", "nan"], "--min-time"),
    (mlffd_cli, ["bench", "--sizes", "64,0"], "--sizes"),
]


@pytest.mark.parametrize("cli,args,option", COUNT_AND_DEVICE_OPTIONS)
def test_threads_batch_size_and_device_options(files, cli, args, option):
    args = [a.format(data=files["data"], model=files["cu"]) for a in args]
    assert_one_line_error(run(cli, *args), option, code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_refused_while_parsing(files):
    result = run(validate_cli, "forces", "--data", files["data"], "--device", "cuda")
    assert_one_line_error(result, "--device", "CUDA", code=2)


def test_truncated_md_cache_sidecar_is_named_and_rebuilt(files, tmp_path, caplog):
    args = ["nve", "--model", files["si"], "--structure", files["si8"], "--temperature", "300", "--time", "20fs",
            "--thermalise", "0fs", "--interval", "5", "--out", tmp_path, "--quiet"]
    first = run(validate_cli, "--threads", "1", *args)
    assert first.exit_code == 0, first.output
    (sidecar,) = (tmp_path / "md").glob("*.json")
    sidecar.write_text(sidecar.read_text()[:25])  # a kill or a full disk mid-write
    caplog.clear()
    again = run(validate_cli, "--threads", "1", *args)  # the warning goes to stderr through logging
    assert again.exit_code == 0, again.output
    assert sidecar.name in caplog.text and "running this stage again" in caplog.text
    json.loads(sidecar.read_text())  # rewritten whole
    caplog.clear()
    third = run(validate_cli, "--threads", "1", *args)
    assert third.exit_code == 0 and sidecar.name not in caplog.text


# -- case 9: bounded memory


def test_rdf_r_max_is_bounded_by_memory(files, tmp_path):
    result = run(validate_cli, "rdf", files["data"], "--r-max", "1000", "--out", tmp_path / "o", "--quiet")
    line = assert_one_line_error(result, "r_max 1000", "cu.extxyz", "GiB", "use r_max <=")
    limit = float(line.rsplit("r_max <=", 1)[1].split()[0])
    assert 3.0 < limit < 1000
    from md_validation.rdf import rdf_memory_bytes, MAX_RDF_MEMORY_BYTES
    from ase.io import read

    frames = read(files["data"], ":")
    assert rdf_memory_bytes(frames[0], limit, len(frames)) <= MAX_RDF_MEMORY_BYTES
    assert not (tmp_path / "o").exists()


def test_compare_r_max_is_checked_before_md(files, tmp_path):
    result = run(validate_cli, "compare", "--model", files["si"], "--teacher", "emt", "--structure", files["si8"],
                 "--r-max", "500", "--time", "50fs", "--equilibration", "10fs", "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, "--r-max", "r_max 500", code=2)
    assert not (tmp_path / "o" / "md").exists()


def test_partial_rdfs_refuses_before_allocating():
    from md_validation.rdf import partial_rdfs

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="too large"):
        partial_rdfs([cu], r_max=1000.0)
    with pytest.raises(ValueError, match="r_max"):
        partial_rdfs([cu], r_max=math.nan)


# -- --debug and the entry points


def _entry(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_debug_shows_the_traceback_and_plain_run_does_not(files):
    plain = subprocess.run([_entry("mlffd"), "evaluate", str(files["nan"]), str(files["data"])],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1 and "non-finite" in plain.stderr
    debug = subprocess.run([_entry("mlffd"), "--debug", "evaluate", str(files["nan"]), str(files["data"])],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "non-finite" in debug.stderr


def test_debug_on_a_click_error_shows_its_cause(files):
    result = run(validate_cli, "--debug", "forces", "--model", files["cu"], "--data", files["empty"], "--quiet")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "Error: Invalid value for --data" in result.stderr
    after = run(validate_cli, "forces", "--model", files["cu"], "--data", files["empty"], "--quiet", "--debug")
    assert after.exit_code == 2 and "Traceback" in after.stderr  # --debug after the command name works too


def test_unexpected_exception_is_one_line_with_its_type(monkeypatch, files):
    import mlffd.training.evaluate  # noqa: F401 - the package re-exports a function of the same name

    ev = sys.modules["mlffd.training.evaluate"]
    def boom(*args, **kwargs):
        raise RuntimeError("something\ninternal")

    monkeypatch.setattr(ev, "evaluate", boom)
    result = run(mlffd_cli, "evaluate", files["cu"], files["data"])
    assert_one_line_error(result, "RuntimeError: something internal", code=1)


def test_training_config_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    """train, val_from, repeat, output and init_from in a config file are read relative to the file,
    not to the directory mlffd runs in."""
    from mlffd.training.config import load_config

    d = tmp_path / "configs" / "ft"
    d.mkdir(parents=True)
    data = tmp_path / "new.extxyz"
    write(data, bulk("Cu", "fcc", a=3.6, cubic=True))
    (tmp_path / "start.mlffd.pt").write_bytes(b"")
    cfg = d / "ft.yaml"
    cfg.write_text("train: [../../new.extxyz]\nval_from: [../../new.extxyz]\nrepeat: {../../new.extxyz: 2}\n"
                   "output: ../../out\ninit_from: ../../start.mlffd.pt\n")
    monkeypatch.chdir(tmp_path / "configs")
    loaded = load_config(cfg)
    assert Path(loaded.train[0]).resolve() == data.resolve()
    assert loaded.val_from == loaded.train
    assert loaded.repeat == {loaded.train[0]: 2}
    assert Path(loaded.output).resolve() == (tmp_path / "out").resolve()
    assert Path(loaded.init_from).resolve() == (tmp_path / "start.mlffd.pt").resolve()
