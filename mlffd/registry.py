"""Named models: a name maps to a shipped artifact file with its sha256 (like orb-models' registry).

The shipped artifacts live in :mod:`mlffd.registry_models` (package data). ``resolve`` turns a
name or a path into a verified path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlffd.contract import REGISTRY_FILE


@dataclass(frozen=True)
class NamedModel:
    """A shipped model: its file name inside the package and the file's sha256."""

    name: str
    filename: str
    sha256: str
    description: str = ""


def _shipped() -> dict[str, NamedModel]:
    """The shipped models from ``registry_models/registry.json`` (the file the LAMMPS plugin reads too)."""
    raw = json.loads(resources.files("mlffd.registry_models").joinpath(REGISTRY_FILE).read_text())
    return {
        name: NamedModel(name, entry["file"], entry["sha256"], entry.get("description", ""))
        for name, entry in raw["models"].items()
    }


#: The shipped students (docs/models/); sha256 of each file as shipped.
REGISTRY: dict[str, NamedModel] = _shipped()

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
