"""Named models: a name maps to a shipped artifact file with its sha256 (like orb-models' registry).

The shipped artifacts live in :mod:`mlffd.registry_models` (package data). ``resolve`` turns a
name or a path into a verified path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class NamedModel:
    """A shipped model: its file name inside the package and the file's sha256."""

    name: str
    filename: str
    sha256: str
    description: str = ""


def _entries(*models: NamedModel) -> dict[str, NamedModel]:
    return {m.name: m for m in models}


#: The shipped students (docs/models/); sha256 of each file as shipped.
REGISTRY: dict[str, NamedModel] = _entries(
    NamedModel(
        "original",
        "original.mlffd.pt",
        "0859eb258a214f428854e73ef56b71565ab84c9b6d723b62c4a58a2e4a74576d",
        "Si, ≈437K parameters, distilled from SevenNet 7net-0 (largest)",
    ),
    NamedModel(
        "tiny",
        "tiny.mlffd.pt",
        "e1311eb1cd31b733e214960aadcecfbf6038726d6c8853e96c59bc8bb5a1b1a0",
        "Si, ≈78K parameters, distilled from SevenNet 7net-0 (default)",
    ),
    NamedModel(
        "ultra-tiny",
        "ultra-tiny.mlffd.pt",
        "d0289f01fb65a5dfe993f5d21ac5d5c53f8d404130519ea59a7d1fa633cf78dc",
        "Si, ≈21K parameters, distilled from SevenNet 7net-0 (fastest)",
    ),
)

DEFAULT_MODEL = "tiny"


class ModelNotFoundError(ValueError):
    """Neither a shipped name nor an existing file."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def shipped_path(entry: NamedModel) -> Path:
    """Path of a shipped model file inside the installed package."""
    return Path(str(resources.files("mlffd.registry_models").joinpath(entry.filename)))


def available_models() -> list[str]:
    """Names of the shipped models."""
    return sorted(REGISTRY)


def resolve(model: str | Path, registry: dict[str, NamedModel] | None = None) -> Path:
    """A shipped model name or a path -> the artifact's path (shipped files are sha256-checked)."""
    registry = REGISTRY if registry is None else registry
    key = str(model)
    if key in registry:
        entry = registry[key]
        path = shipped_path(entry)
        if not path.exists():
            raise ModelNotFoundError(f"shipped model {key!r}: file {path} is missing from the installation")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ModelNotFoundError(
                f"shipped model {key!r}: {path} has sha256 {digest}, expected {entry.sha256} (file damaged or replaced)"
            )
        return path
    path = Path(key).expanduser()
    if path.exists():
        return path
    names = ", ".join(sorted(registry)) or "none shipped yet"
    raise ModelNotFoundError(f"model {key!r} is neither a shipped model name ({names}) nor an existing file")
