"""Refit of ensemble heads (mlffd/training/head_refit.py, `mlffd calibrate`): predictions stay
the same, and a planted error pattern whose spread is known analytically is recovered."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.stats import spearmanr

from mlffd.data import to_graphs
from mlffd.models import preset
from mlffd.testing import model_inputs, random_student, silicon
from mlffd.training.head_refit import refit_heads

K = 4


def _student(seed: int = 0):
    torch.manual_seed(seed)
    model, config = random_student(preset("ultra-tiny", ensemble=K), energy_scale=2.0)
    return model.eval(), config


def _last(model):
    return model.readout.net[-1]


def _out(model, atoms):
    return {k: v.detach().numpy() for k, v in model(*model_inputs(atoms, torch.float64, 5.0)).items()}


def _environment(s: int):
    """Diamond silicon from compressed to expanded, from cold to strongly rattled."""
    return silicon(2, rattle=0.03 + 0.2 * (s % 3) / 2, seed=s, a=5.43 * (0.92 + 0.04 * (s % 5)))


def _truth(model):
    """``model`` with other head deviations about the same mean: the same predictions, and a
    spread that varies strongly between environments (each head deviates along the features'
    own variation, without a constant offset)."""
    rows = []
    hook = _last(model).register_forward_pre_hook(lambda _m, args: rows.append(args[0].detach()))
    for s in range(10):
        _out(model, _environment(s))
    hook.remove()
    z_mean = torch.cat(rows).mean(0)
    truth = copy.deepcopy(model)
    with torch.no_grad():
        w, b = _last(truth).weight, _last(truth).bias
        dev = torch.randn(w.shape, dtype=w.dtype, generator=torch.Generator().manual_seed(3)) * w.std() * 3
        dev -= dev.mean(0)
        w.copy_(w.mean(0) + dev)
        b.copy_(b.mean() - dev @ z_mean)
    return truth


def _planted_frames(model, truth, n_frames=24):
    """Frames labelled with ``model``'s own predictions plus Gaussian noise whose per-atom force
    variance and energy variance are ``truth``'s (an ensemble with other head deviations)."""
    rng = np.random.default_rng(1)
    frames, sigma = [], []
    for s in range(n_frames):
        atoms = _environment(s)
        mine, true = _out(model, atoms), _out(truth, atoms)
        sd_f = np.sqrt(true["force_variance"])
        forces = mine["forces"] + rng.normal(size=mine["forces"].shape) * sd_f[:, None]
        energy = float(mine["energy"]) + rng.normal() * float(true["energy_uncertainty"])
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
        sigma.append(sd_f)
    return frames, np.concatenate(sigma)


def test_refit_keeps_the_predictions_and_recovers_a_planted_error_pattern():
    model, config = _student()
    truth = _truth(model)
    frames, sigma = _planted_frames(model, truth)
    probe = silicon(2, rattle=0.2, seed=99)
    before = _out(model, probe)
    rho_before = spearmanr(np.concatenate([np.sqrt(_out(model, a)["force_variance"]) for a in frames]), sigma).statistic

    record = refit_heads(model, to_graphs(frames, config.elements, config.cutoff))
    after = _out(model, probe)
    assert record["method"] == "nll" and record["nll_after"] < record["nll_before"]
    np.testing.assert_allclose(after["energy"], before["energy"], rtol=1e-12)
    np.testing.assert_allclose(after["forces"], before["forces"], atol=1e-10)
    rho_after = spearmanr(np.concatenate([np.sqrt(_out(model, a)["force_variance"]) for a in frames]), sigma).statistic
    assert rho_after > 0.9 and rho_after > rho_before + 0.2, (rho_before, rho_after)


def test_identical_heads_are_left_alone_and_headless_models_refused():
    model, config = _student()
    with torch.no_grad():
        _last(model).weight.copy_(_last(model).weight[:1].expand_as(_last(model).weight))
        _last(model).bias.fill_(float(_last(model).bias[0]))
    frames, _ = _planted_frames(model, model, n_frames=2)
    graphs = to_graphs(frames, config.elements, config.cutoff)
    assert refit_heads(model, graphs)["method"].startswith("none")
    headless, _ = random_student(preset("ultra-tiny"), energy_scale=2.0)
    with pytest.raises(ValueError, match="no ensemble heads"):
        refit_heads(headless, graphs)
    with pytest.raises(ValueError, match="no frames"):
        refit_heads(model, [])


def test_refit_best_of_keeps_the_draw_that_ranks_held_out_errors_best():
    """Each draw of refit frames is refitted from the same trained heads; the kept one is the draw
    whose per-atom Spearman ρ on the judging frames is highest, and the model left behind is
    exactly that draw's (its ρ recomputed, and a lone refit with that seed gives the same heads)."""
    from scipy.stats import spearmanr

    from mlffd.training.calibration import refit_best_of, uncertainty_and_errors

    model, config = _student()
    truth = _truth(model)
    frames, _ = _planted_frames(model, truth, n_frames=16)
    graphs = to_graphs(frames, config.elements, config.cutoff)
    train, judge = graphs[:12], graphs[12:]
    lone = {seed: copy.deepcopy(model) for seed in range(3)}
    record = refit_best_of(model, train, judge, draws=3, max_frames=4)
    assert [d["seed"] for d in record["draws"]] == [0, 1, 2] and record["method"] == "nll"
    rhos = [d["spearman_atom_force"] for d in record["draws"]]
    assert len(set(rhos)) > 1  # the draws differ, so the choice means something
    assert rhos[record["seed"]] == max(rhos)
    raw = uncertainty_and_errors(model, judge)
    assert spearmanr(raw["atom_force_uncertainty"], raw["atom_force_error"]).statistic == pytest.approx(max(rhos))
    for seed, m in lone.items():
        refit_heads(m, train, max_frames=4, seed=seed)
    kept = _last(lone[record["seed"]])
    torch.testing.assert_close(_last(model).weight, kept.weight)
    other = _last(lone[(record["seed"] + 1) % 3])
    assert not torch.allclose(_last(model).weight, other.weight)
    with pytest.raises(ValueError, match="draws"):
        refit_best_of(model, train, judge, draws=0)
    with pytest.raises(ValueError, match="held-out"):
        refit_best_of(model, train, [], draws=2)


def test_calibrate_command_writes_a_recalibrated_artifact(tmp_path):
    """`mlffd calibrate`: same energies and forces, the new record in the metadata; a model
    without heads is a one-line error."""
    from ase.io import write
    from click.testing import CliRunner

    from mlffd.artifact import read_metadata
    from mlffd.calculator import DistilledCalculator
    from mlffd.cli.main import cli
    from mlffd.models import export_student
    from mlffd.testing import random_artifact

    model, config = _student()
    truth = _truth(model)
    src = export_student(copy.deepcopy(model).float(), config, tmp_path / "m.mlffd.pt", teacher="test")
    frames, _ = _planted_frames(model, truth, n_frames=8)
    write(tmp_path / "fit.extxyz", frames[:6])
    write(tmp_path / "val.extxyz", frames[6:])
    out = tmp_path / "cal.mlffd.pt"
    result = CliRunner().invoke(cli, ["calibrate", str(src), "--refit", str(tmp_path / "fit.extxyz"),
                                      "--data", str(tmp_path / "val.extxyz"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out)["uncertainty"]
    assert record["refit"]["method"] == "nll" and record["frames"] == 2 and record["force_scale"] > 0
    atoms = silicon(2, rattle=0.1, seed=5)
    a, b = DistilledCalculator(str(src)), DistilledCalculator(str(out), uncertainty=True)
    np.testing.assert_allclose(b.get_forces(atoms), a.get_forces(atoms), atol=1e-5)
    assert np.isfinite(b.results["forces_uncertainty"]).all()
    # --draws: refits on that many draws of --max-refit-frames frames, keeps the best ranking on
    # --data, reproducibly, and records every draw; energies and forces stay those of the source
    records, uncertainty = {}, {}
    for draws, name in ((1, "d1"), (3, "d3"), (3, "d3-again")):
        path = tmp_path / f"{name}.mlffd.pt"
        result = CliRunner().invoke(cli, ["calibrate", str(src), "--refit", str(tmp_path / "fit.extxyz"), "--max-refit-frames", "3",
                                          "--draws", str(draws), "--data", str(tmp_path / "val.extxyz"), "--out", str(path)])
        assert result.exit_code == 0, result.output
        records[name] = read_metadata(path)["uncertainty"]["refit"]
        calc = DistilledCalculator(str(path), uncertainty=True)
        np.testing.assert_allclose(calc.get_forces(atoms), a.get_forces(atoms), atol=1e-5)
        uncertainty[name] = calc.results["forces_uncertainty"].copy()
    assert [d["seed"] for d in records["d3"]["draws"]] == [0, 1, 2] and len(records["d1"]["draws"]) == 1
    rhos = [d["spearman_atom_force"] for d in records["d3"]["draws"]]
    assert records["d3"]["draws"][records["d3"]["seed"]]["spearman_atom_force"] == max(rhos)
    np.testing.assert_array_equal(uncertainty["d3"], uncertainty["d3-again"])
    headless = random_artifact(tmp_path / "headless.mlffd.pt", "ultra-tiny")
    bad = CliRunner().invoke(cli, ["calibrate", str(headless), "--data", str(tmp_path / "val.extxyz"), "--out", str(tmp_path / "x.pt")])
    assert bad.exit_code != 0 and "no ensemble heads" in bad.output and len(bad.output.strip().splitlines()) == 1
