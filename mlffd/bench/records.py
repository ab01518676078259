"""Small helpers on measurement records shared by the runner, the analysis and the report."""

from __future__ import annotations

import math
from typing import Any, Iterable



def series_key(m: dict) -> str:
    """Name of the curve a measurement belongs to (method, model, parallelism)."""
    return f"{m['method']}:{m['model']}:{m['parallel']}" + (f":{m['malloc']}" if m.get("section") == "allocator" else "")


def as_number(x: Any) -> float:
    return math.nan if x is None else float(x)


def succeeded(m: dict | None) -> bool:
    return bool(m) and not m.get("error") and m["us_per_atom_step"]["median"] == m["us_per_atom_step"]["median"]


def cost_of(m: dict) -> float:
    return float(m["us_per_atom_step"]["median"])


def index_measurements(measurements: Iterable[dict]) -> dict[tuple, dict]:
    idx = {}
    for m in measurements:
        if succeeded(m):
            idx[(m.get("section", "main"), m["method"], m["model"], m["atoms"], m["parallel"], m.get("malloc"))] = m
    return idx
