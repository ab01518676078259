"""Artifact export/load and its error messages."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np

import pytest
import torch

from mlffd import DistilledCalculator, artifact
from mlffd.artifact import METADATA_FILE, ArtifactError, read_metadata
from mlffd.models import build, export_student, num_parameters, preset, reexport
from mlffd.testing import random_artifact, silicon, silicon_germanium


def test_roundtrip_metadata(tmp_path):
    cfg = preset("ultra-tiny")
    model = build(cfg)
    path = export_student(model, cfg, tmp_path / "m.mlffd.pt", teacher="emt", metrics={"force_rmse": 0.1})
    art = artifact.load(path)
    meta = art.metadata
    assert meta["format"] == "mlffd-artifact" and meta["format_version"] == 1
    assert meta["elements"] == ["Si"]
    assert meta["cutoff"] == cfg.cutoff
    assert meta["interaction_range"] == pytest.approx(cfg.num_interactions * cfg.cutoff)
    assert meta["num_parameters"] == num_parameters(model)
    assert meta["dtype"] == "float32"
    assert meta["teacher"] == "emt" and meta["metrics"] == {"force_rmse": 0.1}
    assert meta["torch_version"] == torch.__version__
    assert artifact.read_metadata(path) == meta
    assert isinstance(art.module, torch.jit.ScriptModule)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact file"):
        artifact.load(tmp_path / "nope.mlffd.pt")


@pytest.mark.parametrize("content", [b"", b"not a model at all" * 10])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.mlffd.pt"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=r"bad\.mlffd\.pt.*corrupt"):
        artifact.load(path)
    with pytest.raises(ArtifactError, match=r"bad\.mlffd\.pt.*corrupt"):
        artifact.read_metadata(path)


def test_truncated_file(tmp_path):
    cfg = preset("ultra-tiny")
    good = export_student(build(cfg), cfg, tmp_path / "good.mlffd.pt")
    bad = tmp_path / "truncated.mlffd.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"truncated\.mlffd\.pt.*corrupt"):
        artifact.load(bad)


def test_plain_torchscript_is_not_an_artifact(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ArtifactError, match=r"plain\.pt.*without mlffd metadata"):
        artifact.load(path)


def _save_with_meta(tmp_path, meta) -> str:
    path = tmp_path / "edited.mlffd.pt"
    torch.jit.save(torch.jit.script(build(preset("ultra-tiny"))), str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
    return str(path)


def _good_meta(tmp_path):
    cfg = preset("ultra-tiny")
    return artifact.read_metadata(export_student(build(cfg), cfg, tmp_path / "ref.mlffd.pt"))


def test_newer_format_version(tmp_path):
    meta = _good_meta(tmp_path)
    meta["format_version"] = artifact.FORMAT_VERSION + 1
    path = _save_with_meta(tmp_path, meta)
    with pytest.raises(ArtifactError, match=r"edited\.mlffd\.pt: format_version 2 is newer"):
        artifact.load(path)


@pytest.mark.parametrize("field", ["elements", "cutoff", "interaction_range", "dtype"])
def test_missing_field(tmp_path, field):
    meta = _good_meta(tmp_path)
    del meta[field]
    with pytest.raises(ArtifactError, match=rf"edited\.mlffd\.pt: metadata lacks the field '{field}'"):
        artifact.load(_save_with_meta(tmp_path, meta))


def test_wrong_marker_and_types(tmp_path):
    meta = _good_meta(tmp_path)
    meta["format"] = "something-else"
    with pytest.raises(ArtifactError, match="not an mlffd artifact"):
        artifact.load(_save_with_meta(tmp_path, meta))
    meta = _good_meta(tmp_path)
    meta["cutoff"] = "five"
    with pytest.raises(ArtifactError, match="'cutoff' is 'five', expected float"):
        artifact.load(_save_with_meta(tmp_path, meta))
    meta = _good_meta(tmp_path)
    meta["dtype"] = "float16"
    with pytest.raises(ArtifactError, match="'dtype' is 'float16'"):
        artifact.load(_save_with_meta(tmp_path, meta))


def test_invalid_metadata_is_refused_before_writing(tmp_path):
    path = tmp_path / "never.mlffd.pt"
    with pytest.raises(ArtifactError):
        artifact.export(build(preset("ultra-tiny")), path, {"format": "mlffd-artifact", "format_version": 1})
    assert not path.exists()


def test_reexport_keeps_weights_and_metadata(tmp_path, monkeypatch):
    """A student re-compiled from the current code gives the same outputs and keeps its record."""
    monkeypatch.setattr(artifact, "ONE_GRAPH_EDGES", -1)  # the new blocks run on this small cell
    src = random_artifact(tmp_path / "src.mlffd.pt", preset("ultra-tiny", elements=("Si", "Ge")), dtype=torch.float64)
    meta = read_metadata(src)
    meta_src = dict(meta, teacher="emt", metrics={"force_rmse": 0.1})
    module = torch.jit.load(str(src))
    torch.jit.save(module, str(src), _extra_files={"mlffd_metadata.json": json.dumps(meta_src)})
    dst = reexport(src, tmp_path / "dst.mlffd.pt", chunk_atoms=7)
    new = read_metadata(dst)
    assert new["teacher"] == "emt" and new["metrics"] == {"force_rmse": 0.1}
    assert new["model"]["chunk_atoms"] == 7 and new["num_parameters"] == meta["num_parameters"]
    atoms = silicon_germanium(2, rattle=0.1, seed=0)
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = DistilledCalculator(str(src)), DistilledCalculator(str(dst))
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-12)
    assert b.calc.module.chunk_atoms == 7 * torch.get_num_threads()  # < 64 atoms: the blocked path ran
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-10)


def test_with_metadata_changes_only_the_record(tmp_path):
    """A replaced user field is read back, every other field and the numbers stay; generated
    fields and invalid values are refused and nothing is written."""
    from mlffd.artifact import with_metadata
    from mlffd.representative import structure_record

    src = random_artifact(tmp_path / "src.mlffd.pt", "ultra-tiny", dtype=torch.float64)
    record = structure_record(silicon(1))
    dst = with_metadata(src, tmp_path / "dst.mlffd.pt", structure=record)
    old, new = read_metadata(src), read_metadata(dst)
    assert new["structure"] == record and new.get("structure") != old.get("structure")
    assert {k: v for k, v in new.items() if k != "structure"} == {k: v for k, v in old.items() if k != "structure"}
    atoms = silicon(2, rattle=0.1, seed=3)
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = DistilledCalculator(str(src)), DistilledCalculator(str(dst))
    assert b.get_potential_energy() == a.get_potential_energy()
    np.testing.assert_array_equal(b.get_forces(), a.get_forces())
    for bad, match in (({"cutoff": 9.0}, "cutoff: generated by export"), ({"teacher": 3}, "teacher")):
        with pytest.raises(ValueError, match=match):
            with_metadata(src, tmp_path / "bad.mlffd.pt", **bad)
        assert not (tmp_path / "bad.mlffd.pt").exists()


def test_student_from_before_the_short_range_prior_keeps_its_numbers(tmp_path):
    """A shipped student exported before the prior existed (no ``repulsion`` buffers or field)
    rebuilds without a prior and re-exports to the same numbers, even for a pushed-in pair."""
    from mlffd.models import load_student

    # the first shipped ultra-tiny, kept as a fixture: the shipped students now carry the prior
    src = Path(__file__).resolve().parents[1] / "fixtures" / "ultra-tiny-before-prior.mlffd.pt"
    assert "repulsion" not in read_metadata(src)["model"]
    assert not any(k.startswith("repulsion.") for k in torch.jit.load(str(src)).state_dict())
    model, config, _ = load_student(src)
    assert config.repulsion is False and not model.use_repulsion
    dst = reexport(src, tmp_path / "again.mlffd.pt")
    assert read_metadata(dst)["model"]["repulsion"] is False
    atoms = silicon_germanium(2, rattle=0.1, seed=0)
    atoms.set_chemical_symbols(["Si"] * len(atoms))
    atoms.positions[1] = atoms.positions[0] + [1.0, 0.4, 0.2]  # far inside any prior's reach
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = DistilledCalculator(str(src)), DistilledCalculator(str(dst))
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-10)
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
