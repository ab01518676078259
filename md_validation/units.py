"""Time strings and unit conversions used across md_validation."""

from __future__ import annotations

import re

#: femtoseconds per unit
_TIME_UNITS = {"fs": 1.0, "ps": 1000.0, "ns": 1.0e6, "as": 1.0e-3}
_TIME_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")

#: 1 eV/Å^3 in GPa
EV_PER_A3_TO_GPA = 160.21766208
#: 1 Å^2/ps in cm^2/s
A2_PER_PS_TO_CM2_PER_S = 1.0e-4


def parse_time(text: str | float | int, default_unit: str = "fs") -> float:
    """``"50ps"`` / ``"500 fs"`` / ``"1e3fs"`` / ``2.5`` -> femtoseconds (a bare number uses ``default_unit``)."""
    if isinstance(text, (int, float)):
        value, unit = float(text), default_unit
    else:
        match = _TIME_RE.match(str(text))
        if not match:
            raise ValueError(f"cannot read time {text!r}; write e.g. '50ps', '500fs' or '1fs'")
        value, unit = float(match.group(1)), (match.group(2).lower() or default_unit)
    if unit not in _TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r} in {text!r}; use one of {', '.join(_TIME_UNITS)}")
    fs = value * _TIME_UNITS[unit]
    if fs < 0:
        raise ValueError(f"time must not be negative, got {text!r}")
    return fs


def format_time(fs: float) -> str:
    """Femtoseconds -> a short human string (``"2.5 ps"``, ``"500 fs"``)."""
    if fs >= 1000.0:
        return f"{fs / 1000.0:g} ps"
    return f"{fs:g} fs"


def steps_for(time_fs: float, dt_fs: float) -> int:
    """Number of MD steps covering ``time_fs`` at timestep ``dt_fs`` (rounded)."""
    if dt_fs <= 0:
        raise ValueError(f"timestep must be positive, got {dt_fs} fs")
    return int(round(time_fs / dt_fs))
