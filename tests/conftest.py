"""Shared fixtures: random-weight student artifacts (physics tests need no training)."""

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
