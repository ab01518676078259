"""Orb teachers through ``orb-models``: ``orb:NAME`` or ``orb:NAME@/path/to.ckpt``.

``NAME`` is a key of orb-models' pretrained registry (``orb-v3-conservative-inf-omat``, ...).
The checkpoint is taken from, in order: the ``@PATH`` of the spec (must exist),
``$MLFFD_ORB_CHECKPOINT_DIR/NAME.ckpt`` (when that file exists), or orb-models' download URL
(needs internet; the file is cached by ``cached_path``).

Works with orb-models 0.5.x (loaders return the model; ``orb_models.forcefield.calculator``)
and 0.6+ (loaders return ``(model, adapter)``; ``orb_models.forcefield.inference.calculator``).
The loader sets torch's process-wide default dtype and float32 matmul precision; both are
restored before returning.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from mlffd.teachers._common import TeacherSpec, checkpoint_record, package_versions, require_file

DEFAULT_NAME = "orb-v3-conservative-inf-omat"
CHECKPOINT_DIR_ENV = "MLFFD_ORB_CHECKPOINT_DIR"


def _import_pretrained():
    try:
        return importlib.import_module("orb_models.forcefield.pretrained")
    except ImportError as exc:
        raise ImportError("teacher 'orb:...' needs the 'orb-models' package: pip install orb-models") from exc


def _registry() -> dict[str, Any]:
    pretrained = _import_pretrained()
    reg = getattr(pretrained, "ORB_PRETRAINED_MODELS", None)
    if not isinstance(reg, dict):  # pragma: no cover - future layouts
        raise ImportError(f"orb-models {package_versions([]).get('orb-models')}: no ORB_PRETRAINED_MODELS registry found")
    return reg


def known_names() -> list[str]:
    """Orb v3 model names of the installed orb-models (the ones this adapter is meant for)."""
    return sorted(n for n in _registry() if n.startswith("orb-v3"))


def _loader(name: str):
    reg = _registry()
    if name not in reg:
        raise ValueError(f"unknown Orb model {name!r}; known Orb v3 names: {', '.join(known_names())}")
    return reg[name]


def _default_url(loader) -> str | None:
    p = inspect.signature(loader).parameters.get("weights_path")
    return p.default if p is not None and isinstance(p.default, str) else None


def _local_checkpoint(spec: TeacherSpec, name: str) -> Path | None:
    """The local checkpoint for the spec, or None when it must be downloaded."""
    if spec.path:
        return require_file(spec.path, f"teacher {spec.raw!r}")
    directory = os.environ.get(CHECKPOINT_DIR_ENV)
    if directory:
        candidate = Path(directory).expanduser() / f"{name}.ckpt"
        if candidate.is_file():
            return candidate
    return None


def _download(url: str, spec: TeacherSpec, name: str) -> Path:
    try:
        from cached_path import cached_path

        return Path(cached_path(url))
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise RuntimeError(
            f"teacher {spec.raw!r}: downloading the Orb checkpoint {url} failed ({type(exc).__name__}: {exc}). "
            "This needs internet access. Without it, download the file elsewhere and pass it as "
            f"'orb:{name}@/path/to/{name}.ckpt', or put it at ${CHECKPOINT_DIR_ENV}/{name}.ckpt"
        ) from exc


def _calculator_class():
    for module in ("orb_models.forcefield.inference.calculator", "orb_models.forcefield.calculator"):
        try:
            return importlib.import_module(module).ORBCalculator
        except (ImportError, AttributeError):
            continue
    raise ImportError("orb-models: ORBCalculator not found in orb_models.forcefield.inference.calculator or orb_models.forcefield.calculator")


def _dtype_scoped(cls, dtype: torch.dtype):
    """Subclass of ORBCalculator that sets torch's default dtype to the model's only while it calculates.

    orb-models featurizes atoms with ``torch.get_default_dtype()``, so a float64 model needs a
    float64 default during the call; outside the call the process default is left alone.
    """

    class OrbTeacherCalculator(cls):  # type: ignore[misc, valid-type]
        model_dtype = dtype

        def calculate(self, *args, **kwargs):
            previous = torch.get_default_dtype()
            torch.set_default_dtype(self.model_dtype)
            try:
                return super().calculate(*args, **kwargs)
            finally:
                torch.set_default_dtype(previous)

    OrbTeacherCalculator.__qualname__ = OrbTeacherCalculator.__name__ = f"OrbTeacher{cls.__name__}"
    return OrbTeacherCalculator


def load(
    spec: TeacherSpec,
    device: str = "cpu",
    precision: str = "float32-high",
    compile: bool = False,
    **calc_kwargs: Any,
):
    """ORBCalculator for the spec. ``precision``: float32-high | float32-highest | float64."""
    name = spec.name or DEFAULT_NAME
    loader = _loader(name)
    ckpt = _local_checkpoint(spec, name)
    if ckpt is None:
        url = _default_url(loader)
        if url is None:
            raise ValueError(f"teacher {spec.raw!r}: no default download URL for {name!r}; pass 'orb:{name}@/path/to.ckpt'")
        ckpt = _download(url, spec, name)

    params = inspect.signature(loader).parameters
    kwargs: dict[str, Any] = {"weights_path": str(ckpt), "device": device, "precision": precision}
    if "compile" in params:
        kwargs["compile"] = compile
    kwargs = {k: v for k, v in kwargs.items() if k in params}

    dtype, matmul = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    try:
        loaded = loader(**kwargs)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_float32_matmul_precision(matmul)

    ORBCalculator = _dtype_scoped(_calculator_class(), torch.float64 if precision == "float64" else torch.float32)
    if isinstance(loaded, tuple):  # orb-models >= 0.6: (model, atoms_adapter)
        model, adapter = loaded
        calc = ORBCalculator(model, adapter, device=device, **calc_kwargs)
    else:
        calc = ORBCalculator(loaded, device=device, **calc_kwargs)
    calc.mlffd_teacher_info = {
        "spec": spec.raw,
        "versions": package_versions(["orb-models", "torch", "ase"]),
        "precision": precision,
        **checkpoint_record(ckpt),
    }
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    """Provenance without loading the model (checkpoint sha256 only when the file is local)."""
    name = spec.name or DEFAULT_NAME
    loader = _loader(name)
    ckpt = _local_checkpoint(spec, name)
    rec = checkpoint_record(ckpt) if ckpt is not None else {"checkpoint": _default_url(loader), "checkpoint_sha256": None}
    return {"spec": spec.raw, "versions": package_versions(["orb-models", "torch", "ase"]), **rec}


def random_checkpoint(path: str | Path, variant: str = "conservative", max_num_neighbors: int = 120, seed: int = 0) -> Path:
    """Save a random-weight Orb v3 checkpoint built by orb-models' own architecture builders.

    Loaded through ``load_teacher("orb:NAME@PATH")`` it exercises the real Orb code path where
    the published weights cannot be downloaded (values are meaningless, shapes and costs real).
    Torch's RNG, default dtype and matmul precision are left as they were.
    """
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig

    builders = {"conservative": pretrained.orb_v3_conservative_architecture, "direct": pretrained.orb_v3_direct_architecture}
    if variant not in builders:
        raise ValueError(f"unknown Orb variant {variant!r}; expected one of {sorted(builders)}")
    path = Path(path)
    dtype, matmul = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = builders[variant](system_config=SystemConfig(radius=6.0, max_num_neighbors=max_num_neighbors), device="cpu")
        torch.save(model.state_dict(), path)
    finally:
        torch.random.set_rng_state(state)
        torch.set_default_dtype(dtype)
        torch.set_float32_matmul_precision(matmul)
    return path
