"""Fused CPU kernels of mlffd students: the PyTorch operator library ``libmlffd_kernels.so``.

It registers ``torch.ops.mlffd_kernels.moment_density`` (the per-edge part of an interaction
layer, with its analytic backward) and the other ``mlffd_kernels::`` operators. mlffd loads it with
:func:`load`; the LAMMPS plugin links it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["contract", "library_path", "load", "VERSION"]

#: operator-set version; artifacts record the one they were exported with
VERSION = 4

_HERE = Path(__file__).resolve().parent


def library_path() -> Path:
    """Path of the compiled ``libmlffd_kernels.so``."""
    return _HERE / "libmlffd_kernels.so"


def load() -> Path:
    """Load the operator library into this process (idempotent); returns its path."""
    import torch

    path = library_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --no-build-isolation ./kernels`")
    torch.ops.load_library(str(path))
    return path


def contract() -> dict:
    """The values of mlffd's ``contract.json`` this library was built with (``mlffd_kernels::contract``,
    operator set 4): ``{"artifact": {format, format_version, metadata_file}, "geometry": {...}}``."""
    import json

    import torch

    load()
    return json.loads(torch.ops.mlffd_kernels.contract())
