"""Helpers shared by the teacher adapters: spec parsing, versions, checkpoint hashes."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

from mlffd.registry import sha256_file


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed spec ``PREFIX[:NAME][@PATH]``."""

    raw: str
    prefix: str
    name: str | None = None
    path: str | None = None


def parse_spec(spec: str) -> TeacherSpec:
    """Split ``"orb:NAME@/path.ckpt"`` into prefix, name and local path."""
    raw = spec.strip()
    if not raw:
        raise ValueError("empty teacher spec; expected e.g. 'sevennet:7net-0', 'orb:orb-v3-conservative-inf-omat' or 'emt'")
    prefix, _, rest = raw.partition(":")
    name, _, path = rest.partition("@")
    return TeacherSpec(raw=raw, prefix=prefix.strip().lower(), name=name.strip() or None, path=path.strip() or None)


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None when not installed), plus mlffd itself."""
    out: dict[str, str | None] = {}
    for pkg in ["mlffd", *packages]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def checkpoint_record(path: str | Path | None) -> dict[str, str | None]:
    """``{"checkpoint": path, "checkpoint_sha256": hex}`` for an existing file, Nones otherwise."""
    if path is None or not Path(path).is_file():
        return {"checkpoint": None if path is None else str(path), "checkpoint_sha256": None}
    return {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": sha256_file(path)}


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path; FileNotFoundError naming ``what`` when it does not exist."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: checkpoint file {str(p)!r} does not exist")
    return p
