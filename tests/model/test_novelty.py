"""Novelty (mlffd/models/novelty.py, mlffd/training/novelty.py): the Mahalanobis distance of an
atom's readout features from its element's training atoms, scaled so that 1 % of the training
structures are above 1; checked against numpy, across evaluation paths, through the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlffd.data import collate, read_frames, to_graphs
from mlffd.models import build, export_like, load_student, load_weights
from mlffd.registry import resolve
from mlffd.training.novelty import fit_novelty, readout_features

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def fitted():
    """The shipped ``tiny`` (float64) with a novelty reference fitted on 120 of its training frames."""
    model, config, meta = load_student(resolve("tiny"))
    model = model.double()
    graphs = to_graphs(read_frames(DATA / "si" / "train.extxyz.xz")[:120], config.elements, config.cutoff)
    record = fit_novelty(model, graphs, config.elements)
    return model, config, meta, graphs, record


def _novelty(model, graph) -> dict:
    return model(*collate([graph], dtype=torch.float64).inputs())


def test_novelty_is_the_mahalanobis_distance_scaled_to_the_training_structures(fitted):
    """Against numpy: each atom's novelty is a fixed multiple of sqrt((h - mu)^T C^-1 (h - mu)) with
    the training atoms' mean and shrunk covariance; 1 % of the training structures are above 1."""
    model, config, _, graphs, record = fitted
    features = torch.cat(readout_features(model, graphs)).numpy()
    novelty = np.concatenate([_novelty(model, g)["atom_novelty"].detach().numpy() for g in graphs])
    mu = features.mean(0)
    cov = np.cov(features.T)
    alpha = record["shrinkage"]["Si"]
    shrunk = (1 - alpha) * cov + alpha * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    centred = features - mu
    mahalanobis = np.sqrt(np.einsum("nf,fg,ng->n", centred, np.linalg.inv(shrunk), centred))
    ratio = novelty / mahalanobis
    assert np.ptp(ratio) < 1e-6 * ratio.mean()
    frame_max = np.array([float(_novelty(model, g)["novelty"]) for g in graphs])
    assert np.mean(frame_max > 1.0) == pytest.approx(0.01, abs=1.0 / len(graphs))
    assert record["training_structures_above_1"] == pytest.approx(np.mean(frame_max > 1.0))
    assert record["atoms"] == {"Si": len(features)} and record["frames"] == len(graphs)


def test_novelty_flags_structures_unlike_the_training_data(fitted, tmp_path):
    """Diamond silicon at 70 % of its volume, and an atom pushed halfway to its neighbour, are far
    outside the reference; the equilibrium crystal is inside; a rotation changes nothing."""
    from mlffd.calculator import DistilledCalculator

    model, config, meta, _, record = fitted
    calc = DistilledCalculator(export_like(model, config, meta, tmp_path / "n.mlffd.pt", novelty=record), uncertainty=True)
    crystal = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    squeezed = crystal.copy()
    squeezed.set_cell(crystal.cell * 0.7 ** (1 / 3), scale_atoms=True)
    pushed = crystal.copy()
    pushed.positions[0] += 0.5 * (pushed.positions[1] - pushed.positions[0])
    rotated = pushed.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    rotated.translate((0.3, -1.1, 2.0))
    n = {name: r["novelty"] for name, r in zip(("crystal", "squeezed", "pushed", "rotated"),
                                                calc.calculate_batch([crystal, squeezed, pushed, rotated]))}
    assert n["crystal"] < 1.0 < 3.0 < min(n["squeezed"], n["pushed"]), n
    assert n["rotated"] == pytest.approx(n["pushed"], rel=1e-9)


def test_novelty_is_the_same_on_every_evaluation_path(fitted):
    """One graph in PyTorch, the fused kernels, and blocks of 5 centres (both) give one novelty
    (to 1e-5 relative: the whitening magnifies rounding)."""
    model, config, _, graphs, _ = fitted
    g = graphs[3]
    results = []
    kernels_built = model.fused
    assert kernels_built, "the fused kernels are part of the install (make setup)"
    try:
        for fused, chunk in ((False, 1 << 30), (True, 1 << 30), (False, 5), (True, 5)):
            model.fused, model.chunk_atoms = fused, chunk
            out = _novelty(model, g)
            results.append((out["atom_novelty"].detach(), out["atom_energies"].detach()))
    finally:
        model.fused, model.chunk_atoms = kernels_built, 1024
    for novelty, energies in results[1:]:
        # the shipped float32 student cast to float64: its PyTorch path keeps the Bessel
        # frequencies rounded to float32 in its buffer, the fused kernel computes them exactly,
        # so atom energies agree to 1e-7 eV (a float64 student's to 1e-14); the whitening
        # magnifies the directions in which the training atoms hardly vary, and that with them
        torch.testing.assert_close(energies, results[0][1], rtol=0, atol=1e-7)
        torch.testing.assert_close(novelty, results[0][0], rtol=1e-5, atol=0)


def test_novelty_travels_in_the_artifact_and_reaches_the_calculator(fitted, tmp_path):
    """Exported: the scripted model gives the eager model's novelty, the metadata declares it, and
    DistilledCalculator(uncertainty=True) returns ``novelty`` and ``novelties``; a reloaded
    student has it on, a student whose state lacks the reference (older artifacts) has it off."""
    from mlffd.calculator import DistilledCalculator

    model, config, meta, graphs, record = fitted
    path = export_like(model, config, meta, tmp_path / "n.mlffd.pt", novelty=record)
    calc = DistilledCalculator(path, uncertainty=True)
    atoms = read_frames(DATA / "si" / "train.extxyz.xz")[5]
    atoms.calc = calc
    atoms.get_potential_energy()
    eager = _novelty(model, graphs[5])
    np.testing.assert_allclose(calc.results["novelties"], eager["atom_novelty"].detach().numpy(), rtol=1e-9, atol=1e-12)
    assert calc.results["novelty"] == pytest.approx(float(eager["novelty"]))
    assert calc.metadata["novelty"]["percentile"] == 99.0
    reloaded, *_ = load_student(path)
    assert reloaded.use_novelty
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("novelty_")}
    old = build(config)  # a student as an artifact without the reference loads: buffers at their defaults
    load_weights(old, state)
    assert not old.use_novelty and "novelty" not in old(*collate([graphs[0]], dtype=torch.float32).inputs())


def test_novelty_fit_refuses_frames_without_every_element():
    """A reference for an element with no atom in the frames cannot be fitted: a ValueError naming it."""
    model, config, _ = load_student(resolve("druglike-tiny"))
    water = read_frames(DATA / "si" / "train.extxyz.xz")[:1]  # silicon: none of H C N O F S Cl
    water[0].set_chemical_symbols(["O"] * len(water[0]))
    with pytest.raises(ValueError, match="no atom of H, C, N, F, S, Cl"):
        fit_novelty(model, to_graphs(water, config.elements, config.cutoff), config.elements)


def test_training_fits_the_novelty_and_ships_without_it_when_an_element_has_no_atom(tmp_path):
    """Every trained student gets a reference at export; one whose elements include one absent
    from its training data is still exported (nothing lost), without a reference, and says why."""
    from cu_frames import SMALL_MODEL, cu_frames, write_frames

    from mlffd.artifact import load
    from mlffd.training import TrainConfig, train

    train_file = write_frames(tmp_path / "train.extxyz", cu_frames(n_traj=2, per_traj=4, seed=0, slab=False))
    for elements, fitted in (((), True), (("Cu", "Au"), False)):
        cfg = TrainConfig.from_dict(dict(
            train=[str(train_file)], output=str(tmp_path / f"out{len(elements)}"), name="cu", teacher="emt",
            model="ultra-tiny", model_overrides=SMALL_MODEL, elements=list(elements), val_fraction=0.25, batch_size=4,
            max_steps=3, eval_every=0, checkpoint_every=1000, threads=1, progress=False))
        result = train(cfg)
        meta = load(result["artifact"]).metadata
        assert ("novelty" in meta) == fitted
        if not fitted:
            assert "no atom of Au" in result["metrics"]["novelty"]


def test_calibrate_novelty_adds_a_reference_and_changes_nothing_else(tmp_path):
    """`mlffd calibrate MODEL --novelty TRAIN --out NEW`: the same weights, heads and calibration,
    plus a reference; asking for nothing, or a refit without a calibration, is a one-line error."""
    from click.testing import CliRunner

    from mlffd.artifact import read_metadata
    from mlffd.calculator import DistilledCalculator
    from mlffd.cli.main import cli

    # the shipped tiny as it was before it had a reference (buffers at their defaults, no record)
    model, config, meta = load_student(resolve("tiny"))
    fresh = build(config)
    for name in ("novelty_mean", "novelty_whiten"):
        getattr(model, name).copy_(getattr(fresh, name))
    model.use_novelty = False
    plain = export_like(model, config, {k: v for k, v in meta.items() if k != "novelty"}, tmp_path / "tiny.mlffd.pt")
    out = tmp_path / "tiny-novelty.mlffd.pt"
    train = str(DATA / "si" / "test.extxyz.xz")
    result = CliRunner().invoke(cli, ["calibrate", str(plain), "--novelty", train, "--out", str(out)])
    assert result.exit_code == 0, result.output
    before, after = read_metadata(plain), read_metadata(out)
    assert "novelty" not in before and after["novelty"]["data"] == [train]
    assert after["uncertainty"] == before["uncertainty"]
    atoms = read_frames(DATA / "si" / "test.extxyz.xz")[0]
    a, b = DistilledCalculator(str(plain), uncertainty=True), DistilledCalculator(str(out), uncertainty=True)
    np.testing.assert_array_equal(b.get_forces(atoms), a.get_forces(atoms))
    np.testing.assert_array_equal(b.results["forces_uncertainty"], a.results["forces_uncertainty"])
    assert "novelty" in b.results and "novelty" not in a.results
    for args, message in ((["--out", str(tmp_path / "x.pt")], "nothing to do"),
                          (["--refit", train, "--out", str(tmp_path / "x.pt")], "need a calibration after the refit")):
        bad = CliRunner().invoke(cli, ["calibrate", "tiny", *args])
        assert bad.exit_code != 0 and message in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
