"""The figure style the property sections share: one colour per side of the comparison, the
grouped teacher/student bar chart, and the note on an empty plot.

Not part of any teacher cache's code hash: figures are drawn from the cached numbers on every
run, so changing them recomputes nothing.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

#: colour of each side in every figure
COLORS = {"teacher": "#1f5fa8", "student": "#d9641e"}
#: width of one bar of :func:`paired_bars` (four per key)
BAR_WIDTH = 0.2


def paired_bars(ax: Any, keys: Sequence[str], sides: Sequence[tuple[str, Any]], kinds: Sequence[tuple[str, str]],
                value: Callable[[Any, str, str], float], labels: dict[str, str], mark_failed: bool = False) -> np.ndarray:
    """Four bars per key: each side of ``sides`` ((role, result), teacher first) for each of the
    two ``kinds`` ((kind, legend suffix); the first filled, the second faded and hatched), of
    height ``value(result, kind, key)``. A missing (NaN) value is a bar of height 0, labelled
    "failed" if ``mark_failed``. Returns the keys' x positions."""
    x = np.arange(len(keys))
    for n, (role, res) in enumerate(sides):
        for m, (kind, legend) in enumerate(kinds):
            vals = np.array([value(res, kind, k) for k in keys])
            pos = x + (2 * m + n - 1.5) * BAR_WIDTH
            ax.bar(pos, np.nan_to_num(vals, nan=0.0), BAR_WIDTH, color=COLORS[role], alpha=1.0 if m == 0 else 0.45,
                   hatch=None if m == 0 else "//", label=f"{labels.get(role, role)} ({legend})")
            if mark_failed:
                for p, v in zip(pos, vals):
                    if not math.isfinite(v):
                        ax.text(p, 0.0, "failed", rotation=90, ha="center", va="bottom", fontsize=7)
    return x


def no_data(ax: Any, text: str) -> None:
    """``text`` in the middle of an empty ``ax``."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def molecule_parity(teacher: dict[str, Any], student: dict[str, Any], key: str, labels: dict[str, str], quantity: str,
                    unit: str, marker: str = ".", min_points: int = 1, size: tuple[float, float] = (5.0, 5.0)) -> bytes:
    """PNG of each molecule's ``key`` values, student against teacher (matched in order, one
    colour per molecule, those with fewer than ``min_points`` or unequal counts left out)."""
    from matplotlib.figure import Figure

    from md_validation.report import figure_png

    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for name, t in teacher.items():
        vt = np.asarray(t.get(key) or [], float)
        vs = np.asarray((student.get(name) or {}).get(key) or [], float)
        if len(vt) >= min_points and len(vt) == len(vs):
            ax.plot(vt, vs, marker, ms=4, label=name)
            top = max(top, np.nanmax(vt), np.nanmax(vs))
    ax.plot([0, top], [0, top], color="0.5", lw=0.8)
    ax.set_xlabel(f"{quantity}, {labels.get('teacher', 'teacher')} ({unit})")
    ax.set_ylabel(f"{quantity}, {labels.get('student', 'student')} ({unit})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return figure_png(fig)
