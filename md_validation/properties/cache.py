"""Teacher results on disk, keyed by the calculator's identity, the section, its settings and
its input structures: a second run of ``mlffd-validate properties`` costs only the student's
time. One JSON file per key; a file that cannot be read is recomputed and rewritten (its path
named in a warning), never trusted."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from md_validation.report import jsonable

#: bump when a section's numbers change meaning, so old cache entries are not reused
SCHEMA = 1


def default_cache_dir() -> Path:
    """``$MLFFD_CACHE/properties``, else ``$XDG_CACHE_HOME/mlffd/properties``, else ``~/.cache/mlffd/properties``."""
    if os.environ.get("MLFFD_CACHE"):
        return Path(os.environ["MLFFD_CACHE"]) / "properties"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlffd" / "properties"


def cache_key(calculator: str, section: str, settings: dict[str, Any], structures: list[str]) -> str:
    """sha256 of everything a section's result depends on."""
    blob = json.dumps({"schema": SCHEMA, "calculator": calculator, "section": section, "settings": jsonable(settings),
                       "structures": structures}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    """Section results (JSON-able dicts) under ``directory``; ``None`` disables caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if self.directory is None:
            self.misses += 1
            return compute()
        path = self.directory / key[:2] / f"{key}.json"
        if path.exists():
            try:
                value = json.loads(path.read_text())
                if isinstance(value, dict):
                    self.hits += 1
                    return value
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                warnings.warn(f"properties cache entry {path} is unreadable ({exc}); recomputing it", stacklevel=2)
        self.misses += 1
        value = jsonable(compute())
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of this writer's own: two runs computing the same entry at once (two
        # students validated side by side) must not move each other's half-written files
        fd, name = tempfile.mkstemp(suffix=".tmp", prefix=path.name + ".", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(value))
        Path(name).replace(path)  # atomic: an interrupted run leaves no half entry
        return value
