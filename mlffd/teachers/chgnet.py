"""CHGNet teacher (optional package): ``chgnet`` or ``chgnet:VERSION`` or ``chgnet:@/path``."""

from __future__ import annotations

from typing import Any

from mlffd.teachers._common import TeacherSpec, checkpoint_record, package_versions, require_file


def _import():
    try:
        import chgnet  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "teacher 'chgnet' needs the optional 'chgnet' package, which is not installed: pip install chgnet"
        ) from exc


def load(spec: TeacherSpec, device: str = "cpu", **kwargs: Any):
    """CHGNetCalculator (pretrained version ``spec.name`` or a local checkpoint)."""
    _import()
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    if spec.path:
        model = CHGNet.from_file(str(require_file(spec.path, f"teacher {spec.raw!r}")))
    else:
        model = CHGNet.load(model_name=spec.name or "0.3.0", use_device=device, verbose=False)
    calc = CHGNetCalculator(model=model, use_device=device, **kwargs)
    calc.mlffd_teacher_info = info(spec)
    return calc


def info(spec: TeacherSpec) -> dict[str, Any]:
    rec = checkpoint_record(spec.path) if spec.path else {"checkpoint": f"chgnet pretrained {spec.name or '0.3.0'}", "checkpoint_sha256": None}
    return {"spec": spec.raw, "versions": package_versions(["chgnet", "torch", "ase"]), **rec}
