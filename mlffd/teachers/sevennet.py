"""SevenNet teachers: ``sevennet:7net-0`` (weights ship in the ``sevenn`` wheel) or ``sevennet:NAME@/path.pth``."""

from __future__ import annotations

from typing import Any

from mlffd.teachers._common import TeacherSpec, checkpoint_record, package_versions, require_file

DEFAULT_NAME = "7net-0"


def _import():
    try:
        import sevenn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("teacher 'sevennet:...' needs the 'sevenn' package: pip install sevenn") from exc


def _checkpoint(spec: TeacherSpec) -> str:
    """Local checkpoint path for the spec (never downloads)."""
    if spec.path:
        return str(require_file(spec.path, f"teacher {spec.raw!r}"))
    _import()
    from sevenn.util import pretrained_name_to_path

    name = spec.name or DEFAULT_NAME
    try:
        return pretrained_name_to_path(name)
    except ValueError as exc:
        raise ValueError(f"teacher {spec.raw!r}: {name!r} is not a SevenNet pretrained name ({exc})") from exc


def load(spec: TeacherSpec, device: str = "cpu", modal: str | None = None, **kwargs: Any):
    """SevenNetCalculator for the spec; ``modal`` selects the fidelity of multi-fidelity models."""
    _import()
    from sevenn.calculator import SevenNetCalculator

    model = _checkpoint(spec)
    calc = SevenNetCalculator(model, file_type="checkpoint", device=device, modal=modal, **kwargs)
    calc.mlffd_teacher_info = info(spec)
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    return {
        "spec": spec.raw,
        "versions": package_versions(["sevenn", "torch", "ase"]),
        **checkpoint_record(_checkpoint(spec)),
    }
