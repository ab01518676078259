"""contract.json is the one definition Python, the kernels and the plugin share: every side
reads it and agrees. (The kernels' compiled values: tests/model/test_redteam_kernels.py; the plugin's
metadata checks and sha256 resolution: tests/lammps/test_redteam_lammps.py.)"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from mlffd import artifact, contract, geometry, registry
from mlffd.registry import REGISTRY, sha256_file, shipped_path

RAW = json.loads(resources.files("mlffd").joinpath("contract.json").read_text())


def test_python_reads_contract_json():
    assert contract.as_dict() == RAW
    assert (contract.FORMAT, contract.FORMAT_VERSION, contract.METADATA_FILE) == (
        RAW["artifact"]["format"], RAW["artifact"]["format_version"], RAW["artifact"]["metadata_file"])
    assert list(artifact.REQUIRED_FIELDS) == list(RAW["artifact"]["metadata_fields"])
    assert contract.GEOMETRY.max_edges == RAW["geometry"]["max_edges"]


def test_kernels_built_from_the_same_contract():
    kernels = pytest.importorskip("mlffd_kernels")
    compiled = kernels.contract()
    assert compiled["artifact"] == {k: RAW["artifact"][k] for k in ("format", "format_version", "metadata_file")}
    assert compiled["geometry"] == RAW["geometry"]


def test_shipped_models_match_the_registry_file():
    """Each shipped file has the sha256 registry.json records (the file the plugin reads too)."""
    raw = json.loads(resources.files("mlffd.registry_models").joinpath(contract.REGISTRY_FILE).read_text())
    assert set(raw["models"]) == set(REGISTRY) and registry.DEFAULT_MODEL in REGISTRY
    for name, entry in REGISTRY.items():
        path = shipped_path(entry)
        assert path.name == raw["models"][name]["file"]
        assert sha256_file(path) == raw["models"][name]["sha256"], name


def test_shipped_metadata_has_every_contract_field():
    for name, entry in REGISTRY.items():
        meta = artifact.read_metadata(shipped_path(entry))
        for field in RAW["artifact"]["metadata_fields"]:
            assert field in meta, (name, field)
        assert meta["format"] == contract.FORMAT and meta["dtype"] in contract.DTYPES


def test_calculator_overlap_limit_is_the_contracts():
    """The calculator refuses two atoms just closer than the contract's overlap distance and
    accepts them just farther (the limit the kernels and the plugin compile in)."""
    import numpy as np
    from ase import Atoms

    from mlffd import DistilledCalculator

    calc = DistilledCalculator("ultra-tiny")
    limit = RAW["geometry"]["min_pair_distance_A"]
    for d, refused in ((0.99 * limit, True), (1.01 * limit, False)):
        atoms = Atoms("Si2", positions=[[0, 0, 0], [d, 0, 0]], cell=np.eye(3) * 10, pbc=True)
        atoms.calc = calc
        if refused:
            with pytest.raises(geometry.GeometryError, match="overlapping atoms"):
                atoms.get_potential_energy()
        else:
            assert np.isfinite(atoms.get_potential_energy())
