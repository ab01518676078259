"""Weight averaging of fine-tunes of one student (mlffd.training.average, ``mlffd average``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner

from mlffd.artifact import read_metadata
from mlffd.calculator import DistilledCalculator
from mlffd.cli.main import cli
from mlffd.models import export_like, load_student, preset
from mlffd.registry import sha256_file
from mlffd.testing import random_artifact, silicon
from mlffd.training.average import average_students
from mlffd.training.evaluate import evaluate

CONFIG = preset("ultra-tiny", ensemble=2)


def _fine_tune_pair(tmp_path):
    """A student and a copy with every parameter moved a little: two 'fine-tunes' of one start."""
    a = random_artifact(tmp_path / "a.mlffd.pt", CONFIG, seed=0)
    model, config, meta = load_student(a)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    b = export_like(model, config, meta, tmp_path / "b.mlffd.pt")
    return a, b


def _params(path):
    model, _, _ = load_student(path)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _energy_forces(path, atoms):
    calc = DistilledCalculator(str(path))
    return calc.get_potential_energy(atoms), calc.get_forces(atoms)


def test_the_average_is_the_weighted_mean_of_the_parameters_and_drops_the_calibration(tmp_path):
    a, b = _fine_tune_pair(tmp_path)
    out = tmp_path / "avg.mlffd.pt"
    record = average_students([a, b], [1.0, 3.0], out)
    pa, pb, pm = _params(a), _params(b), _params(out)
    assert set(pm) == set(pa)
    moved = 0
    for name, p in pm.items():
        torch.testing.assert_close(p, 0.25 * pa[name] + 0.75 * pb[name], rtol=0, atol=1e-12)
        moved += int(not torch.equal(pa[name], pb[name]))
    assert moved > 0
    meta = read_metadata(out)
    assert "uncertainty" in read_metadata(a) and "uncertainty" not in meta and meta["metrics"] == {}
    assert [r["weight"] for r in meta["averaged_from"]] == [0.25, 0.75] == [r["weight"] for r in record["averaged_from"]]
    assert [r["sha256"] for r in meta["averaged_from"]] == [sha256_file(a), sha256_file(b)]
    model, _, _ = load_student(out)
    assert torch.equal(model.uncertainty_scale, torch.ones_like(model.uncertainty_scale))
    assert not model.use_novelty
    with pytest.raises(ValueError, match="no calibrated uncertainty"):
        DistilledCalculator(str(out), uncertainty=True)


def test_an_end_weight_or_a_student_with_itself_gives_that_student(tmp_path):
    a, b = _fine_tune_pair(tmp_path)
    atoms = silicon(2, rattle=0.1, seed=3)
    e_a, f_a = _energy_forces(a, atoms)
    e_b, _ = _energy_forces(b, atoms)
    assert abs(e_a - e_b) > 1e-6  # the pair differs, so the checks below could fail
    for sources, weights in (([a, b], [1.0, 0.0]), ([a, a], [0.3, 0.7])):
        out = tmp_path / "end.mlffd.pt"
        average_students(sources, weights, out)
        e, f = _energy_forces(out, atoms)
        assert e == pytest.approx(e_a, abs=1e-9)
        np.testing.assert_allclose(f, f_a, atol=1e-9)


def test_what_cannot_be_averaged_is_refused_before_anything_is_written(tmp_path):
    a, b = _fine_tune_pair(tmp_path)
    other = random_artifact(tmp_path / "other.mlffd.pt", preset("ultra-tiny", ensemble=2, features=24), seed=0)
    model, config, meta = load_student(b)
    with torch.no_grad():
        model.shift.add_(1.0)
    shifted = export_like(model, config, meta, tmp_path / "shifted.mlffd.pt")
    single = random_artifact(tmp_path / "single.mlffd.pt", CONFIG, dtype=torch.float32, seed=0)
    out = tmp_path / "never.mlffd.pt"
    cases = [([a, other], [1, 1], "another architecture .*features"),
             ([a, single], [1, 1], "different dtypes \\(float64, float32\\)"),
             ([a, shifted], [1, 1], "fixed tensor 'shift'"),
             ([a], [1], "at least two"),
             ([a, b], [1], "one weight per student"),
             ([a, b], [1, -1], "finite and >= 0"),
             ([a, b], [1, float("nan")], "finite and >= 0"),
             ([a, b], [0, 0], "at least one must be positive")]
    for sources, weights, message in cases:
        with pytest.raises(ValueError, match=message):
            average_students(sources, weights, out)
        assert not out.exists()
    before = a.read_bytes()
    with pytest.raises(ValueError, match="is one of the students averaged"):
        average_students([a, b], [1, 1], a)
    assert a.read_bytes() == before
    water = tmp_path / "water.extxyz"
    h2o = molecule("H2O")
    h2o.calc = SinglePointCalculator(h2o, energy=-1.0, forces=np.zeros((3, 3)))
    write(water, h2o)
    with pytest.raises(ValueError, match="water.extxyz"):
        average_students([a, b], [1, 1], out, test_data=[water])
    assert not out.exists()


def test_huge_weights_and_evaluation_settings_do_not_change_the_average(tmp_path):
    """Weights are normalised without overflow (1e308 twice is an equal mean, not zeros), and a
    student saved with another evaluation setting (chunk_atoms) is still the same student."""
    a, b = _fine_tune_pair(tmp_path)
    model, config, meta = load_student(b, chunk_atoms=64)
    chunked = export_like(model, config, meta, tmp_path / "chunked.mlffd.pt")
    equal, huge, mixed = (tmp_path / f"{n}.mlffd.pt" for n in ("equal", "huge", "mixed"))
    average_students([a, b], [1, 1], equal)
    average_students([a, b], [1e308, 1e308], huge)
    average_students([a, chunked], [1, 1], mixed)
    assert [r["weight"] for r in read_metadata(huge)["averaged_from"]] == [0.5, 0.5]
    pe, ph, pm = _params(equal), _params(huge), _params(mixed)
    assert any(p.abs().sum() > 0 for p in ph.values())
    for name in pe:
        assert torch.equal(pe[name], ph[name]) and torch.equal(pe[name], pm[name])


def test_average_command(tmp_path):
    """`mlffd average`: weights in order, metrics on --test equal to `mlffd evaluate`'s; bad
    weights are a one-line error that writes nothing."""
    a, b = _fine_tune_pair(tmp_path)
    frames = []
    for seed in range(3):
        atoms = silicon(2, rattle=0.1, seed=seed)
        rng = np.random.default_rng(seed)
        atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * len(atoms) + rng.normal(), forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    write(tmp_path / "test.extxyz", frames)
    out = tmp_path / "avg.mlffd.pt"
    ok = CliRunner().invoke(cli, ["average", str(a), str(b), "--weight", "1", "--weight", "3",
                                  "--test", str(tmp_path / "test.extxyz"), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    meta = read_metadata(out)
    assert [r["weight"] for r in meta["averaged_from"]] == [0.25, 0.75]
    direct = evaluate(out, tmp_path / "test.extxyz")
    assert meta["metrics"]["num_frames"] == 3 and meta["metrics"]["split"] == "test"
    for key in ("force_rmse", "energy_mae_mev_per_atom"):
        assert meta["metrics"][key] == pytest.approx(direct[key], rel=1e-9)
    equal = tmp_path / "equal.mlffd.pt"
    assert CliRunner().invoke(cli, ["average", str(a), str(b), "--out", str(equal)]).exit_code == 0
    assert [r["weight"] for r in read_metadata(equal)["averaged_from"]] == [0.5, 0.5]
    for args in (["--weight", "-1", "--weight", "1"], ["--weight", "1"]):
        bad = CliRunner().invoke(cli, ["average", str(a), str(b), *args, "--out", str(tmp_path / "bad.mlffd.pt")])
        assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1, bad.output
        assert not (tmp_path / "bad.mlffd.pt").exists()
