"""What a validation runs on: the student, the teacher and the starting structure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

#: teacher spec prefix for an mlffd artifact used as the reference (``model:PATH`` or ``model:NAME``)
MODEL_PREFIX = "model:"


def default_structure(model: str | Path) -> Atoms:
    """The start a model stands for when none is given: the structure its artifact records (a
    frame of its training data, repeated to >= 64 atoms), else its element's reference crystal
    (:func:`mlffd.representative.default_structure`; for the shipped Si students, 64-atom diamond)."""
    from mlffd.artifact import read_metadata
    from mlffd.registry import resolve
    from mlffd.representative import default_structure as model_default

    return model_default(read_metadata(resolve(model)))


#: compressed files are decompressed into memory first: ASE's extxyz reader seeks frame by
#: frame, which would re-decompress from the start each time
_OPENERS = {".xz": "lzma", ".gz": "gzip", ".bz2": "bz2"}


def split_selection(spec: str | Path) -> tuple[str, str | None]:
    """``FILE@SELECTION`` (ASE's notation, e.g. ``data.xyz@100`` or ``data.xyz@0:10``) ->
    ``(FILE, SELECTION)``; ``(spec, None)`` when ``spec`` is an existing file or has no ``@``."""
    text = str(spec)
    if Path(text).exists() or "@" not in text:
        return text, None
    path, _, selection = text.rpartition("@")
    return path, selection


def _selection(index: str | int, source: str) -> int | slice:
    from ase.io.formats import string2index

    try:
        sel = string2index(index) if isinstance(index, str) else int(index)
    except (ValueError, TypeError):
        sel = None
    if not isinstance(sel, (int, slice)) or isinstance(sel, bool):
        raise ValueError(f"{source}: cannot read frame selection {index!r}; expected e.g. '3', '-1', '0:10' or ':'")
    return sel


def _read(path: Path, index: int | slice) -> list[Atoms]:
    import importlib
    import io

    from ase.io import read

    opener = _OPENERS.get(path.suffix)
    if opener is None:
        frames = read(str(path), index=index)
    else:
        with importlib.import_module(opener).open(path, "rt") as fh:
            frames = read(io.StringIO(fh.read()), index=index, format="extxyz")
    return frames if isinstance(frames, list) else [frames]


def read_any(path: str | Path, index: str | int = ":") -> list[Atoms]:
    """Frames of any ASE-readable file (``.xz``/``.gz``/``.bz2`` extxyz too), selected by an ASE
    selection ``index`` (``"3"``, ``"-1"``, ``"0:10:2"``, ``":"``).

    Every problem is a ValueError that names the file: missing, empty, unreadable (binary,
    truncated, unknown format), holding no frames, an index out of range or a selection of
    nothing, or frames without atoms or with non-finite positions or cell.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such file")
    if not p.is_file():
        raise ValueError(f"{path}: not a file")
    if p.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    sel = _selection(index, str(path))

    def unreadable(exc: BaseException) -> ValueError:
        detail = " ".join(str(exc).split())[:200]
        return ValueError(f"{path}: cannot read frames ({type(exc).__name__}: {detail}); "
                          "expected a complete file that ASE reads (extxyz, traj, ...)")

    def out_of_range(n: int) -> ValueError:
        return ValueError(f"{path}: frame index {sel} is out of range; the file holds {n} frame(s)")

    try:
        # a negative index is resolved here: ASE's readers wrap around silently
        frames = _read(p, slice(None) if isinstance(sel, int) and sel < 0 else sel)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure (format, truncation, encoding) names the file
        if isinstance(sel, int) and isinstance(exc, (IndexError, StopIteration)):
            try:
                n = len(_read(p, slice(None)))
            except Exception as inner:  # noqa: BLE001 - the file itself is broken
                raise unreadable(inner) from inner
            raise out_of_range(n) from exc
        raise unreadable(exc) from exc
    if isinstance(sel, int) and sel < 0:
        if sel < -len(frames):
            raise out_of_range(len(frames))
        frames = [frames[sel]]
    if not frames:
        raise ValueError(f"{path}: selection {index!r} holds no frames")
    for k, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise ValueError(f"{path}: frame {k} of selection {index!r} has no atoms")
        if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.cell.array).all():
            raise ValueError(f"{path}: frame {k} of selection {index!r} has non-finite positions or cell")
    return frames


def load_structure(path: str | Path | None = None, index: int | str = 0, model: str | Path | None = None) -> Atoms:
    """Read frame ``index`` of ``path`` (``model``'s :func:`default_structure` when ``None``);
    ValueError naming the file when it cannot be read or is no usable MD start (no atoms,
    non-finite numbers)."""
    if path is None:
        if model is None:
            raise ValueError("no structure given and no model to take one from")
        return default_structure(model)
    atoms = read_any(path, index=index)[0]
    atoms.calc = None
    return atoms


def load_student(model: str | Path | Calculator, device: str = "cpu", dtype: str | None = None) -> Calculator:
    """A shipped model name or artifact path -> :class:`mlffd.DistilledCalculator` (calculators pass through)."""
    if isinstance(model, Calculator):
        return model
    from mlffd import DistilledCalculator

    return DistilledCalculator(model, device=device, dtype=dtype)


def load_teacher(spec: str | Calculator, device: str = "cpu") -> Calculator:
    """A teacher spec -> ASE calculator.

    ``model:PATH`` (or ``model:NAME``) loads an mlffd artifact as the reference; anything else goes
    to ``mlffd.teachers.load_teacher`` (``emt``, ``sevennet:7net-0``, ``orb:NAME``, ...). A
    calculator object passes through unchanged.
    """
    if isinstance(spec, Calculator):
        return spec
    spec = str(spec).strip()
    if spec.startswith(MODEL_PREFIX):
        return load_student(spec[len(MODEL_PREFIX):], device=device)
    try:
        from mlffd.teachers import load_teacher as _load
    except ImportError:
        _load = None
    if _load is None:
        if spec.lower() == "emt":  # the toy teacher works without the teachers package
            from ase.calculators.emt import EMT

            return EMT()
        raise ValueError(f"teacher {spec!r} needs mlffd.teachers, which is not installed; try 'emt' or 'model:PATH'")
    return _load(spec, device=device)


def structure_hash(atoms: Atoms) -> str:
    """sha256 of numbers, positions, cell and pbc (what defines an MD start)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.ascontiguousarray(atoms.positions, dtype=np.float64), 10).tobytes())
    h.update(np.round(np.ascontiguousarray(atoms.cell.array, dtype=np.float64), 10).tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()


def calculator_id(calc: Calculator, hint: str | None = None) -> str:
    """A stable identity of a calculator for cache keys.

    mlffd artifacts are identified by their file's sha256; other calculators by ``hint`` (the
    teacher spec) or their class and parameters.
    """
    artifact = getattr(calc, "artifact", None)
    path = getattr(artifact, "path", None)
    if path is not None and Path(path).exists():
        from mlffd.registry import sha256_file

        dtype = getattr(calc, "dtype", "")
        return f"mlffd:{sha256_file(path)}:{dtype}"
    if hint:
        return hint
    params: Any
    try:
        params = calc.todict()
    except Exception:  # pragma: no cover - exotic calculators
        params = {}
    return f"{type(calc).__module__}.{type(calc).__name__}:{json.dumps(params, sort_keys=True, default=str)}"


def calculator_label(calc: Calculator, hint: str | None = None) -> str:
    """A short human name for reports (artifact file name, teacher spec or class name)."""
    if hint:
        return str(hint)
    artifact = getattr(calc, "artifact", None)
    if artifact is not None and getattr(artifact, "path", None) is not None:
        return Path(artifact.path).name
    return type(calc).__name__


def model_id(model: str | Path) -> str:
    """Identity of an mlffd model (name or path) for cache keys: the artifact's sha256."""
    from mlffd.registry import resolve, sha256_file

    return f"mlffd:{sha256_file(resolve(model))}"
