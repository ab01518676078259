"""Shipped models: name resolution with sha256 checks, size, and accuracy on held-out frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlffd import DistilledCalculator
from mlffd.artifact import read_metadata
from mlffd.registry import REGISTRY, DEFAULT_MODEL, ModelNotFoundError, NamedModel, resolve, sha256_file, shipped_path

DATA = Path(__file__).resolve().parents[2] / "data" / "si"


def test_default_model_is_shipped():
    assert DEFAULT_MODEL in REGISTRY
    calc = DistilledCalculator()
    assert calc.artifact.path == shipped_path(REGISTRY[DEFAULT_MODEL])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_files(name):
    entry = REGISTRY[name]
    path = resolve(name)
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size < 2 * 1024 * 1024, "each shipped artifact must stay under 2 MB"
    meta = read_metadata(path)
    assert meta["elements"] == ["Si"]
    assert meta["teacher"] == "sevennet:7net-0"
    assert meta["dataset_sha256"] and meta["metrics"]["force_r2"] > 0.9


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    entry = REGISTRY[DEFAULT_MODEL]
    fake = NamedModel(entry.name, entry.filename, "0" * 64)
    with pytest.raises(ModelNotFoundError, match=r"has sha256 .* expected 0{64}"):
        resolve(DEFAULT_MODEL, registry={DEFAULT_MODEL: fake})
    # a path still works and is not checked against the registry
    copy = tmp_path / "copy.mlffd.pt"
    shutil.copy(resolve(DEFAULT_MODEL), copy)
    assert resolve(copy) == copy


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_model_reproduces_teacher_on_held_out_frames(name):
    """An independent check of the card's headline number: force R² on teacher test frames."""
    import numpy as np

    from md_validation.forces import read_frames

    frames = read_frames(str(DATA / "test.extxyz.xz"))[::4]
    calc = DistilledCalculator(name)
    results = calc.calculate_batch(frames)
    pred = np.concatenate([r["forces"] for r in results])
    ref = np.concatenate([f.get_forces() for f in frames])
    r2 = 1.0 - np.sum((pred - ref) ** 2) / np.sum((ref - ref.mean()) ** 2)
    assert r2 > 0.98, f"{name}: force R² {r2:.4f} on held-out teacher frames"
    de = [(r["energy"] - f.get_potential_energy()) / len(f) for r, f in zip(results, frames)]
    assert np.mean(np.abs(de)) < 0.008, f"{name}: energy MAE {np.mean(np.abs(de)) * 1000:.1f} meV/atom"
