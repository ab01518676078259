"""Shared fixtures of every test folder (tests/<package>/ mirrors the package it tests):
random-weight student artifacts (physics tests need no training), the Stillinger-Weber
reference calculator and the LAMMPS plugin's presence. Helpers imported by several test files
live beside this file (``cu_frames.py``, ``property_refs.py``, ``issue_targets.py``, ``lammps_module.py``)."""

from __future__ import annotations

import pytest
import torch

from mlffd.testing import random_artifact


@pytest.fixture(scope="session")
def artifact64(tmp_path_factory) -> str:
    """A random ``tiny`` Si student in float64."""
    return str(random_artifact(tmp_path_factory.mktemp("models") / "tiny64.mlffd.pt", "tiny", dtype=torch.float64))


@pytest.fixture(scope="session")
def artifact32(tmp_path_factory) -> str:
    """The same random ``tiny`` Si student in float32."""
    return str(random_artifact(tmp_path_factory.mktemp("models") / "tiny32.mlffd.pt", "tiny", dtype=torch.float32))


@pytest.fixture(scope="session")
def artifact_sige(tmp_path_factory) -> str:
    """A random two-element (Si, Ge) ``ultra-tiny`` student in float64."""
    return str(
        random_artifact(
            tmp_path_factory.mktemp("models") / "sige.mlffd.pt", "ultra-tiny", dtype=torch.float64, elements=("Si", "Ge")
        )
    )


@pytest.fixture(scope="session")
def artifact_blocked(tmp_path_factory) -> str:
    """The random ``tiny`` float64 student evaluating every system in blocks of 5 centre atoms."""
    from mlffd.models import preset

    config = preset("tiny", chunk_atoms=5)
    return str(random_artifact(tmp_path_factory.mktemp("models") / "blocked.mlffd.pt", config, dtype=torch.float64))


@pytest.fixture(scope="module")
def sw_calc(tmp_path_factory):
    """Stillinger-Weber silicon as an mlffd artifact through ``DistilledCalculator`` (property tests' reference)."""
    from property_refs import sw_artifact_calc

    return sw_artifact_calc(tmp_path_factory.mktemp("sw"))


@pytest.fixture(scope="module")
def plugin_installed():
    """The ``lammps.plugins`` entry point of mlffd-lammps; fails (not skips) when it is missing."""
    from importlib import metadata

    eps = [ep for ep in metadata.entry_points(group="lammps.plugins") if ep.name == "mlffd"]
    if not eps:
        pytest.fail("mlffd-lammps is not installed (no 'lammps.plugins' entry point 'mlffd'); run `make setup`")
    return eps[0]


def _torch_threads(n: int):
    """torch on ``n`` threads for the test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after (timings and reductions stay comparable)."""
    yield from _torch_threads(1)


@pytest.fixture
def two_torch_threads():
    """Two torch threads for the test (the kernels run in parallel over centres), restored after."""
    yield from _torch_threads(2)
