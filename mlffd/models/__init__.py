"""Student potentials: architecture and size presets."""

from __future__ import annotations

from mlffd.models.config import PRESETS, ModelConfig, preset
from mlffd.models.potential import StudentPotential

__all__ = ["ModelConfig", "PRESETS", "StudentPotential", "build", "export_student", "num_parameters", "preset"]


def num_parameters(model) -> int:
    """Number of parameters the model uses (frozen copies such as EMA weights count too)."""
    unused = set(model.unused_parameters()) if hasattr(model, "unused_parameters") else set()
    return sum(p.numel() for name, p in model.named_parameters() if name not in unused)


def build(config: ModelConfig, dtype=None) -> StudentPotential:
    """A freshly initialised student for ``config`` (parameters in ``dtype``, default float32)."""
    import torch

    model = StudentPotential(config)
    return model.to(dtype or torch.float32)


def export_student(model: StudentPotential, config: ModelConfig, path, **metadata):
    """Export a student to an artifact at ``path`` with complete metadata; returns the path.

    ``metadata`` may set ``teacher``, ``dataset_sha256``, ``metrics`` and extra fields.
    """
    import copy

    from mlffd.artifact import build_metadata, export

    model = copy.deepcopy(model).eval()
    dtype = next(model.parameters()).dtype
    meta = build_metadata(
        elements=list(config.elements),
        cutoff=config.cutoff,
        num_interactions=config.num_interactions,
        dtype=dtype,
        num_parameters=num_parameters(model),
        model={"architecture": "mlffd-moment-mp", **config.to_dict()},
        **metadata,
    )
    return export(model, path, meta)
