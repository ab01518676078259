"""Memory-allocator settings that keep large per-call tensors cheap (applied by the product itself).

With glibc's default ``malloc``, every allocation above the (dynamic) mmap threshold is served by
a fresh ``mmap`` and handed back with ``munmap`` when freed, and free memory at the top of the
heap is trimmed back to the kernel. A force call on tens of thousands of atoms allocates and
frees the same few hundred MB of tensors every MD step, so each step page-faults all of it
again: the per-atom cost then grows with the system. :func:`configure_allocator` asks
glibc, through ``mallopt``, to keep that memory instead, the equivalent of

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456

- ``M_MMAP_MAX = 0``: never serve allocations with ``mmap`` (they come from the heap and are
  reused on the next call);
- ``M_TRIM_THRESHOLD = -1``: never give free heap memory back to the kernel (mallopt(3):
  "-1 disables trimming completely"; glibc stores the value as an unsigned size);
- ``M_TOP_PAD = 256 MiB``: grow the heap in large steps (fewer ``brk`` calls; the padding is
  virtual until touched).

The trade-off: the process keeps its peak heap for its lifetime (what an MD run wants). Set the
environment variable ``MLFFD_MALLOC=default`` to leave glibc's defaults alone. Nothing happens on
a non-glibc C library, when ``GLIBC_TUNABLES`` already sets ``glibc.malloc.*`` tunables (the
user's choice wins), or when ``LD_PRELOAD`` names another allocator (jemalloc, tcmalloc,
mimalloc). The settings are process-wide and applied at most once (idempotent).

C/C++ hosts (the LAMMPS plugin) get the same effect with ``mallopt`` from ``<malloc.h>``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

ENV_VAR = "MLFFD_MALLOC"

# <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

#: parameter name -> (mallopt number, value)
SETTINGS: dict[str, tuple[int, int]] = {
    "M_MMAP_MAX": (M_MMAP_MAX, 0),
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1),
    "M_TOP_PAD": (M_TOP_PAD, 256 * 1024 * 1024),
}

#: the environment-variable form of the same settings (for processes mlffd does not control)
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456"

_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class AllocatorStatus:
    """What :func:`configure_allocator` did: ``applied`` and, if not, why (``reason``)."""

    applied: bool
    reason: str
    settings: dict[str, int] = field(default_factory=dict)
    glibc_version: str | None = None

    def to_dict(self) -> dict:
        return {"applied": self.applied, "reason": self.reason, "settings": dict(self.settings), "glibc_version": self.glibc_version}


_lock = threading.Lock()
_status: AllocatorStatus | None = None  # set once the settings were applied


def _libc() -> ctypes.CDLL | None:
    """glibc (with ``mallopt`` and ``gnu_get_libc_version``), or None for another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
        libc.mallopt  # noqa: B018 - AttributeError if absent
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def _glibc_version(libc: ctypes.CDLL) -> str:
    return libc.gnu_get_libc_version().decode()


def _skip_reason(env: dict[str, str]) -> str | None:
    if env.get(ENV_VAR, "").strip().lower() == "default":
        return f"{ENV_VAR}=default"
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES already sets glibc.malloc tunables"
    preload = env.get("LD_PRELOAD", "")
    for name in _OTHER_ALLOCATORS:
        if name in preload:
            return f"LD_PRELOAD uses {name}"
    return None


def configure_allocator(
    env: dict[str, str] | None = None,
    _mallopt: Callable[[int, int], int] | None = None,
) -> AllocatorStatus:
    """Apply mlffd's glibc ``malloc`` settings once per process; returns what was done.

    Skipped (``applied=False`` with the reason) when ``MLFFD_MALLOC=default``, on a non-glibc C
    library, when ``GLIBC_TUNABLES`` sets malloc tunables or ``LD_PRELOAD`` names another
    allocator. Calling it again returns the first successful status without touching glibc.
    ``env`` defaults to ``os.environ``; ``_mallopt`` replaces glibc's (for tests).
    """
    global _status
    with _lock:
        if _status is not None:
            return _status
        env = dict(os.environ if env is None else env)
        reason = _skip_reason(env)
        if reason is not None:
            return AllocatorStatus(False, reason)
        version = None
        if _mallopt is None:
            libc = _libc()
            if libc is None:
                return AllocatorStatus(False, "not glibc (no mallopt / gnu_get_libc_version)")
            version = _glibc_version(libc)
            _mallopt = libc.mallopt
        failed = [name for name, (param, value) in SETTINGS.items() if _mallopt(param, value) != 1]
        if failed:  # mallopt returns 1 on success; keep trying on a later call
            return AllocatorStatus(False, f"mallopt refused {', '.join(failed)}", glibc_version=version)
        _status = AllocatorStatus(True, "applied", {name: value for name, (_, value) in SETTINGS.items()}, version)
        return _status


def allocator_status() -> AllocatorStatus | None:
    """The status of the settings applied in this process, or None if none were applied."""
    return _status


def _reset_for_tests() -> None:
    """Forget that the settings were applied (glibc keeps them); for tests only."""
    global _status
    with _lock:
        _status = None
