"""Shallow-ensemble uncertainty (mlffd/models/uncertainty.py, mlffd/training/calibration.py,
DistilledCalculator(uncertainty=...)): against separate one-head students, ASE neighbour lists
and numpy; identical heads give zero; a trained student's uncertainty ranks its true errors."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.neighborlist import neighbor_list
from cu_frames import SMALL_MODEL, cu_frames, write_frames

from mlffd.calculator import DistilledCalculator, UncertaintyError, UncertaintyWarning
from mlffd.models import preset
from mlffd.testing import model_inputs, random_student, silicon

K = 4


def _ensemble(**overrides):
    model, config = random_student(preset("tiny", ensemble=K, **overrides), energy_scale=2.0)
    return model.eval(), config


def _one_head(model, config, k):
    """The single-head student that is head ``k`` of ``model`` (same weights otherwise)."""
    single, _ = random_student(preset("tiny", **{**{f: getattr(config, f) for f in ("chunk_atoms",)}}), energy_scale=2.0)
    state = copy.deepcopy(model.state_dict())
    last = [n for n in state if n.startswith("readout.") and n.endswith(".weight")][-1]
    state[last] = state[last][k : k + 1]
    state[last.replace("weight", "bias")] = state[last.replace("weight", "bias")][k : k + 1]
    single.load_state_dict(state)
    return single.eval()


def _out(model, atoms):
    return {k: v.detach().numpy() for k, v in model(*model_inputs(atoms, torch.float64, 5.0)).items()}


def test_ensemble_equals_its_heads_as_separate_students():
    """Energy and forces are the mean of K one-head students; the energy deviations, per-atom
    spread and force variance follow from those students' per-atom energies and ASE's neighbours."""
    model, config = _ensemble()
    atoms = silicon(2, rattle=0.1, seed=2)
    out = _out(model, atoms)
    heads = [_out(_one_head(model, config, k), atoms) for k in range(K)]
    e_k = np.array([h["energy"] for h in heads])
    np.testing.assert_allclose(out["energy"], e_k.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["forces"], np.mean([h["forces"] for h in heads], axis=0), atol=1e-10)
    np.testing.assert_allclose(out["energy_deviations"], e_k - e_k.mean(), atol=1e-9)
    assert out["energy_uncertainty"] == pytest.approx(np.std(e_k), rel=1e-9) and out["energy_uncertainty"] > 1e-3
    e_ik = np.stack([h["atom_energies"] for h in heads], axis=1)
    np.testing.assert_allclose(out["atom_energy_uncertainty"], e_ik.std(axis=1), atol=1e-10)
    v = e_ik.var(axis=1)
    i, j = neighbor_list("ij", atoms, config.cutoff)
    expected = v.copy()
    np.add.at(expected, j, v[i])
    np.testing.assert_allclose(out["force_variance"], expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(out["force_uncertainty"], np.sqrt(expected), rtol=1e-9, atol=1e-12)


def test_identical_heads_give_zero_uncertainty():
    model, _ = _ensemble()
    last = [m for m in model.readout.net if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight[:1].expand_as(last.weight))
        last.bias.fill_(float(last.bias[0]))
    out = _out(model, silicon(2, rattle=0.1))
    for key in ("energy_uncertainty", "atom_energy_uncertainty", "force_variance", "energy_deviations"):
        assert np.abs(out[key]).max() < 1e-10, key


@pytest.mark.parametrize("path", ["fused", "blocks"])
def test_every_evaluation_path_and_torchscript_give_the_same_uncertainty(path):
    model, config = _ensemble(chunk_atoms=5 if path == "blocks" else 512)
    reference, _ = _ensemble()
    reference.fused = False
    model.fused = path == "fused"
    atoms = silicon(2, rattle=0.1, seed=3)
    want = _out(reference, atoms)
    for candidate in (model, torch.jit.script(model)):
        got = _out(candidate, atoms)
        for key in ("energy", "forces", "atom_energy_uncertainty", "atom_energy_deviations", "force_variance"):
            np.testing.assert_allclose(got[key], want[key], atol=1e-9, err_msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (tools/gpu/run.sh)")
def test_uncertainty_on_cuda_equals_cpu(tmp_path):
    """DistilledCalculator(device="cuda", uncertainty=True) gives the CPU uncertainties (float64)."""
    from mlffd.testing import random_artifact

    path = random_artifact(tmp_path / "ens.mlffd.pt", config=preset("tiny", ensemble=K), dtype=torch.float64)
    atoms = silicon(3, rattle=0.1, seed=5)
    results = {}
    for device in ("cpu", "cuda"):
        a = atoms.copy()
        a.calc = DistilledCalculator(str(path), device=device, uncertainty=True)
        a.get_forces()
        results[device] = a.calc.results
    assert results["cpu"]["forces_uncertainty"].max() > 0
    for key in ("energy_uncertainty", "energies_uncertainty", "forces_uncertainty", "forces"):
        np.testing.assert_allclose(results["cuda"][key], results["cpu"][key], rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-head Cu student trained briefly on EMT frames, calibrated at export."""
    from mlffd.training import TrainConfig, train

    d = tmp_path_factory.mktemp("ensemble")
    cfg = TrainConfig.from_dict(dict(
        train=[str(write_frames(d / "train.extxyz", cu_frames(n_traj=6, per_traj=6, seed=0)))],
        test=[str(write_frames(d / "test.extxyz", cu_frames(n_traj=2, per_traj=3, seed=7, slab=False)))],
        output=str(d / "out"), name="cu", teacher="emt", model="ultra-tiny",
        model_overrides={**SMALL_MODEL, "ensemble": K}, val_fraction=0.3, batch_size=4, max_epochs=30, lr=5e-3,
        warmup_steps=4, eval_every=0, checkpoint_every=1000, threads=1, progress=False))
    return {**train(cfg), "config": cfg}


def _cu(scale: float, rattle: float, seed: int):
    atoms = bulk("Cu", "fcc", a=3.61 * scale, cubic=True) * (2, 2, 1)
    atoms.positions += np.random.default_rng(seed).normal(scale=rattle, size=atoms.positions.shape)
    return atoms


def test_uncertainty_ranks_the_true_errors_in_and_out_of_domain(trained):
    """On held-out frames mixing the training conditions with compressed, expanded and very
    hot Cu (never seen), the per-structure force uncertainty ranks the true force error
    (Spearman >= 0.6, the issue's target) and is far larger out of domain."""
    from scipy.stats import spearmanr

    from mlffd.artifact import read_metadata

    record = read_metadata(trained["artifact"])["uncertainty"]
    assert record["heads"] == K and record["frames"] > 0 and record["force_scale"] > 0
    calc = DistilledCalculator(trained["artifact"], uncertainty=True)
    frames = [_cu(1.0, 0.08, s) for s in range(6)] + [_cu(0.85, 0.05, s) for s in range(3)] + \
             [_cu(1.15, 0.05, s) for s in range(3)] + [_cu(1.0, 0.35, s) for s in range(3)]
    predicted, true = [], []
    for atoms in frames:
        res = calc.calculate_batch([atoms])[0]
        reference = atoms.copy()
        reference.calc = EMT()
        true.append(np.sqrt(np.mean((res["forces"] - reference.get_forces()) ** 2)))
        predicted.append(np.sqrt(np.mean(res["forces_uncertainty"] ** 2)))
    rho = spearmanr(predicted, true).statistic
    assert rho >= 0.6, (rho, predicted, true)
    assert np.mean(predicted[6:9]) > 5 * np.mean(predicted[:6])  # compressed: far outside the data


def test_calibration_matches_the_validation_errors(trained):
    """By construction the calibrated uncertainty's RMS equals the RMS error on the validation
    frames it was fitted on (force components and structure energies)."""
    from mlffd.models import load_student
    from mlffd.training.calibration import uncertainty_and_errors
    from mlffd.training.trainer import prepare

    model, config, meta = load_student(trained["artifact"])
    assert config.ensemble == K and meta["uncertainty"]["heads"] == K
    raw = uncertainty_and_errors(model, prepare(trained["config"]).val)
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    assert rms(raw["atom_force_uncertainty"]) == pytest.approx(rms(raw["atom_force_error"]), rel=1e-4)
    assert rms(raw["energy_uncertainty"]) == pytest.approx(rms(raw["energy_error"]), rel=1e-4)
    assert meta["uncertainty"]["force_rmse"] == pytest.approx(rms(raw["atom_force_error"]), rel=1e-4)
    # the export kept the best of its refit draws by the per-atom ranking on these same frames
    draws = meta["uncertainty"]["refit"]["draws"]
    assert len(draws) == 3 and meta["uncertainty"]["refit"]["seed"] in (0, 1, 2)
    kept = draws[meta["uncertainty"]["refit"]["seed"]]["spearman_atom_force"]
    assert kept == max(d["spearman_atom_force"] for d in draws)
    assert meta["uncertainty"]["spearman_atom_force"] == pytest.approx(kept, abs=1e-9)


def test_thresholds_warn_or_raise_and_lose_nothing(trained):
    atoms = _cu(0.85, 0.05, 0)
    warn = DistilledCalculator(trained["artifact"], uncertainty_threshold=0.3)
    atoms.calc = warn
    with pytest.warns(UncertaintyWarning, match=r"force uncertainty above 0.3 eV/Å on \d+ of 16 atoms"):
        forces = atoms.get_forces()
    assert np.isfinite(forces).all() and "forces_uncertainty" in warn.results
    strict = DistilledCalculator(trained["artifact"], uncertainty_threshold=0.3, action="raise")
    atoms.calc = strict
    with pytest.raises(UncertaintyError, match="outside what cu.mlffd.pt was trained on"):
        atoms.get_forces()
    assert strict.results == {}  # nothing half-computed is kept
    quiet = _cu(1.0, 0.05, 1)
    quiet.calc = DistilledCalculator(trained["artifact"], uncertainty_threshold=50.0, action="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.get_forces()
    batch = DistilledCalculator(trained["artifact"], uncertainty=True).calculate_batch([quiet, _cu(0.85, 0.05, 0)])
    single = DistilledCalculator(trained["artifact"], uncertainty=True).calculate_batch([_cu(0.85, 0.05, 0)])[0]
    assert batch[1]["energy_uncertainty"] == pytest.approx(single["energy_uncertainty"], rel=1e-9)
    np.testing.assert_allclose(batch[1]["forces_uncertainty"], single["forces_uncertainty"], rtol=1e-9)


def test_bad_uncertainty_settings_are_refused(trained, tmp_path):
    from mlffd.testing import random_artifact

    with pytest.raises(ValueError, match="carries no calibrated uncertainty"):
        DistilledCalculator(random_artifact(tmp_path / "headless.mlffd.pt", "ultra-tiny"), uncertainty=True)
    with pytest.raises(ValueError, match="action must be 'warn' or 'raise'"):
        DistilledCalculator(trained["artifact"], uncertainty=True, action="stop")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="uncertainty_threshold must be a positive number"):
            DistilledCalculator(trained["artifact"], uncertainty_threshold=bad)
    with pytest.raises(ValueError, match="ensemble must be 0"):
        preset("tiny", ensemble=1)


def test_validate_forces_reports_uncertainty_against_the_true_error(trained, tmp_path):
    """`mlffd-validate forces` on an ensemble student: Spearman per structure and per atom,
    computed independently here with scipy from the same predictions, and a reliability table
    whose bins hold every atom; a model without heads has no such section."""
    from scipy.stats import spearmanr

    from md_validation.forces import forces_report

    frames = []
    for k, (scale, rattle) in enumerate([(1.0, 0.08)] * 4 + [(0.88, 0.05), (1.12, 0.05), (1.0, 0.3)]):
        atoms = _cu(scale, rattle, k)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    calc = DistilledCalculator(trained["artifact"])
    metrics, files = forces_report(calc, frames, None, tmp_path)
    u = metrics["uncertainty"]
    assert sum(row["atoms"] for row in u["reliability"]) == 16 * len(frames)
    mine = DistilledCalculator(trained["artifact"], uncertainty=True)
    unc = [mine.calculate_batch([a])[0] for a in frames]
    err = [np.sqrt(np.mean((r["forces"] - a.get_forces()) ** 2)) for r, a in zip(unc, frames)]
    pred = [np.sqrt(np.mean(r["forces_uncertainty"] ** 2)) for r in unc]
    assert u["spearman_structure"] == pytest.approx(spearmanr(pred, err).statistic, abs=1e-9)
    assert u["spearman_structure"] >= 0.6
    assert "Uncertainty against the true error" in files["html"].read_text()
    # the novelty (fitted at export on the training crystals): its rank correlation with each
    # frame's energy error per atom, recomputed here; the squeezed, stretched and hot frames are
    # the novel ones
    novelty = np.array([r["novelty"] for r in unc])
    e_err = [abs(r["energy"] - a.get_potential_energy()) / len(a) * 1000 for r, a in zip(unc, frames)]
    assert u["novelty"]["spearman_energy_error"] == pytest.approx(spearmanr(novelty, e_err).statistic, abs=1e-9)
    assert u["novelty"]["fraction_above_1"] == pytest.approx(np.mean(novelty > 1.0))
    assert novelty[4:].min() > novelty[:4].max(), novelty
    from mlffd.testing import random_artifact

    headless = random_artifact(tmp_path / "headless.mlffd.pt", "ultra-tiny")  # no ensemble heads
    plain, _ = forces_report(DistilledCalculator(headless), [bulk("Si", "diamond", a=5.43, cubic=True)],
                             DistilledCalculator("tiny"), tmp_path / "plain")
    assert "uncertainty" not in plain


def test_model_card_shows_the_calibration(trained, tmp_path):
    from mlffd.modelcard import write_card

    data = tmp_path / "test.extxyz"
    write(data, [_labelled(_cu(1.0, 0.05, k)) for k in range(3)])
    card = write_card(trained["artifact"], data, teacher="emt", out_dir=tmp_path, name="cu", speed=False).read_text()
    assert "## Uncertainty" in card and "4 ensemble heads, their deviations refitted" in card and "Spearman" in card
    assert "(the best of 3 random draws by the ranking below)" in card
    meta = DistilledCalculator(trained["artifact"]).metadata["novelty"]
    assert f"## Novelty\n\nA novelty reference fitted on {meta['frames']} training frames (atoms: Cu " in card


def test_model_card_shows_the_uncertainty_against_the_true_error(trained, tmp_path):
    """`mlffd card --forces`: the Spearman numbers and reliability rows of a forces.json, as measured."""
    import json

    from md_validation.forces import forces_report
    from mlffd.modelcard import write_card

    frames = [_labelled(_cu(s, r, k)) for k, (s, r) in enumerate([(1.0, 0.05)] * 3 + [(0.88, 0.05), (1.0, 0.3)])]
    data = tmp_path / "mixed.extxyz"
    write(data, frames)
    _, files = forces_report(DistilledCalculator(trained["artifact"]), frames, None, tmp_path / "forces")
    report = json.loads(files["json"].read_text())
    card = write_card(trained["artifact"], data, out_dir=tmp_path, name="cu", speed=False, forces=files["json"]).read_text()
    u = report["uncertainty"]
    assert f"Spearman ρ = {u['spearman_structure']:.2f} per structure and {u['spearman_atom']:.2f} per atom" in card
    row = u["reliability"][0]
    assert f"| {row['atoms']} | {row['predicted_rms']:.3f} | {row['observed_rms']:.3f} |" in card
    with pytest.raises(ValueError, match="forces.json of mlffd-validate forces"):
        write_card(trained["artifact"], data, out_dir=tmp_path, name="cu", speed=False, forces=data)


def _labelled(atoms):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = EMT()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    atoms.info["teacher"] = "emt"
    return atoms
