"""What every property section's ``compute`` shares: the failures a section survives (a
calculator refusing a structure, a fit or a linear solve breaking down), the one line that
reports such a failure, and reading a number back from a cached result.

Part of the code hash of every section's teacher cache (``runner.code_version``): a change here
recomputes the teachers of all sections. Code used only by ``compare`` and ``figures`` (which
run afresh on every report) belongs in :mod:`records` and :mod:`plots` instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the exceptions a section catches and reports as its (or one entry's) ``error``
FAILURES = (ValueError, FloatingPointError, RuntimeError, np.linalg.LinAlgError)


def num(x: Any) -> float:
    """A cached value as a float (JSON null or anything not a number -> NaN)."""
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def error_text(exc: BaseException) -> str:
    """``ExceptionType: first line of its message``."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
