"""Small helpers on measurement records shared by the runner, the analysis and the report."""

from __future__ import annotations

import math
from typing import Any, Iterable



def _series_key(m: dict) -> str:
    """Name of the curve a measurement belongs to (method, model, parallelism)."""
    return f"{m['method']}:{m['model']}:{m['parallel']}" + (f":{m['malloc']}" if m.get("section") == "allocator" else "")


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _ok(m: dict | None) -> bool:
    return bool(m) and not m.get("error") and m["us_per_atom_step"]["median"] == m["us_per_atom_step"]["median"]


def _cost(m: dict) -> float:
    return float(m["us_per_atom_step"]["median"])


def _index(measurements: Iterable[dict]) -> dict[tuple, dict]:
    idx = {}
    for m in measurements:
        if _ok(m):
            idx[(m.get("section", "main"), m["method"], m["model"], m["atoms"], m["parallel"], m.get("malloc"))] = m
    return idx
