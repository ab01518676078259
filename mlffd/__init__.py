"""mlffd: machine-learned force-field distillation.

Small, fast student potentials distilled from atomistic foundation models, usable from ASE
(:class:`DistilledCalculator`) and LAMMPS (``pair_style mlffd``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DistilledCalculator", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from mlffd.calculator import DistilledCalculator


def __getattr__(name: str) -> Any:
    # Lazy: ``import mlffd`` stays cheap and free of side effects.
    if name == "DistilledCalculator":
        from mlffd.calculator import DistilledCalculator

        return DistilledCalculator
    raise AttributeError(f"module 'mlffd' has no attribute {name!r}")
