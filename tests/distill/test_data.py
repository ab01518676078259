"""Datasets: reading, graphs, batches, trajectory splits and the statistics that set up a student."""

from __future__ import annotations

import hashlib
import lzma

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list
from cu_frames import cu_frames, write_frames

from mlffd.data import (
    average_num_neighbors,
    collate,
    dataset_sha256,
    fit_reference_energies,
    force_rms,
    frame_group,
    read_frames,
    split_by_group,
    to_graphs,
)
from mlffd.models import build, preset


@pytest.fixture(scope="module")
def frames():
    return cu_frames(n_traj=4, per_traj=3)


def test_read_compressed_and_sha(tmp_path, frames):
    plain = write_frames(tmp_path / "d.extxyz", frames)
    xz = tmp_path / "d.extxyz.xz"
    xz.write_bytes(lzma.compress(plain.read_bytes()))
    a, b = read_frames(plain), read_frames(xz)
    assert len(a) == len(b) == len(frames)
    np.testing.assert_allclose(b[3].get_forces(), frames[3].get_forces(), atol=1e-7)
    assert b[0].info["trajectory"] == "md-0"
    assert dataset_sha256(xz) == hashlib.sha256(xz.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "missing.extxyz")


def test_graphs_and_statistics(frames):
    graphs = to_graphs(frames, ["Cu"], cutoff=4.0)
    slab = graphs[-1]
    assert slab.stress is None and graphs[0].stress is not None  # slab frames carry no stress label
    n_edges = sum(len(ase_neighbor_list("i", a, 4.0)) for a in frames)
    n_atoms = sum(len(a) for a in frames)
    assert average_num_neighbors(graphs) == pytest.approx(n_edges / n_atoms)
    f = np.concatenate([a.get_forces() for a in frames])
    assert force_rms(graphs) == pytest.approx(np.sqrt(np.mean(f**2)))
    with pytest.raises(ValueError, match="Au"):
        to_graphs([bulk("Au", "fcc", a=4.08)], ["Cu"], 4.0)


def test_reference_energies_least_squares():
    rng = np.random.default_rng(0)
    truth = {"Cu": -3.7, "Au": -1.2}
    frames = []
    for k in range(12):
        atoms = bulk("Cu", "fcc", a=3.8, cubic=True) * (2, 1, 1)
        swap = rng.choice(len(atoms), size=rng.integers(0, len(atoms)), replace=False)
        atoms.numbers[swap] = 79
        e = sum(truth[s] for s in atoms.get_chemical_symbols()) + rng.normal(scale=1e-3)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    graphs = to_graphs(frames, ["Cu", "Au", "Ag"], 4.0)
    ref = fit_reference_energies(graphs, 3)
    np.testing.assert_allclose(ref[:2], [truth["Cu"], truth["Au"]], atol=2e-3)
    assert ref[2] == 0.0  # absent element


def test_split_by_trajectory(frames):
    groups = [frame_group(a) for a in frames]
    train, val = split_by_group(groups, val_fraction=0.25, seed=1)
    assert sorted(train + val) == list(range(len(frames)))
    assert val and train
    assert not {groups[k] for k in train} & {groups[k] for k in val}  # whole trajectories only
    assert split_by_group(groups, 0.25, seed=1) == (train, val)  # deterministic
    # without trajectory ids the split falls back to config_type
    frames = [a.copy() for a in frames]
    for a in frames:
        del a.info["trajectory"]
    groups = [frame_group(a) for a in frames]
    assert set(groups) == {"config_type:bulk", "config_type:bulk-hot", "config_type:surface"}
    with pytest.raises(ValueError, match="one trajectory"):
        split_by_group(["default"] * 5, 0.2)


def test_collate_matches_single_structures(frames):
    config = preset("ultra-tiny", cutoff=4.0, num_interactions=1, elements=("Cu",))
    torch.manual_seed(0)
    model = build(config, torch.float64).eval()
    graphs = to_graphs(frames[:3] + frames[-1:], config.elements, config.cutoff)
    batch = collate(graphs, dtype=torch.float64)
    assert batch.num_atoms.tolist() == [g.num_atoms for g in graphs]
    assert batch.batch.tolist() == sum(([k] * g.num_atoms for k, g in enumerate(graphs)), [])
    assert batch.stress_mask.tolist() == [True, True, True, False]
    from mlffd.training.loss import predict

    out = predict(model, batch)
    start = 0
    for k, g in enumerate(graphs):
        single = predict(model, collate([g], dtype=torch.float64))
        assert out["energy"][k].item() == pytest.approx(single["energy"][0].item(), abs=1e-9)
        np.testing.assert_allclose(out["forces"][start : start + g.num_atoms].detach(), single["forces"].detach(), atol=1e-10)
        np.testing.assert_allclose(out["stress"][k].detach(), single["stress"][0].detach(), atol=1e-10)
        start += g.num_atoms
