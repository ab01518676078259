"""Plain JSON from results that hold numpy numbers, arrays and paths: one definition for every
record mlffd and mlffd-validate write (training summaries, active-learning rounds, reports)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, Paths and non-finite floats -> plain JSON (NaN/inf become null,
    because a record never carries a non-finite number as if it were a result)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
