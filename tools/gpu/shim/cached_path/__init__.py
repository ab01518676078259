"""Offline stand-in for ``cached_path`` on the GPU check machine (no network, and the real package
imports cloud SDKs that are not installed there). orb-models calls ``cached_path(p)``; for a
local file the real function returns the path unchanged, which is all the benchmark needs (Orb
runs from a random-weight checkpoint written locally). Never installed with mlffd."""

from pathlib import Path


def cached_path(url_or_filename, *args, **kwargs):
    path = Path(url_or_filename)
    if not path.exists():
        raise FileNotFoundError(f"{url_or_filename}: offline shim of cached_path only resolves local files")
    return path
