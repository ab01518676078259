"""Student potentials: architecture and size presets."""

from __future__ import annotations

from mlffd.models.config import PRESETS, ModelConfig, preset
from mlffd.models.potential import StudentPotential

__all__ = ["ModelConfig", "PRESETS", "StudentPotential", "build", "export_like", "export_student", "load_weights", "num_parameters",
           "preset"]


def num_parameters(model) -> int:
    """Number of parameters the model uses (frozen copies such as EMA weights count too)."""
    unused = set(model.unused_parameters()) if hasattr(model, "unused_parameters") else set()
    return sum(p.numel() for name, p in model.named_parameters() if name not in unused)


def build(config: ModelConfig, dtype=None) -> StudentPotential:
    """A freshly initialised student for ``config`` (parameters in ``dtype``, default float32)."""
    import torch

    model = StudentPotential(config)
    return model.to(dtype or torch.float32)


#: buffers set by calibration (``mlffd calibrate``), not by training; older artifacts lack them
CALIBRATION_BUFFERS = ("uncertainty_scale", "novelty_mean", "novelty_whiten")


def load_weights(model: StudentPotential, state) -> None:
    """Load ``state`` (a state dict) into ``model``; a state saved before the short-range prior,
    the uncertainty calibration or the novelty reference existed lacks only their buffers
    (``repulsion.*``, ``uncertainty_scale``, ``novelty_*``), which then keep the model's values.
    The novelty is on when the loaded reference is fitted (non-zero)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not (k.startswith("repulsion.") or k in CALIBRATION_BUFFERS) for k in missing):
        model.load_state_dict(state)  # raises, naming every mismatched key
    model.use_novelty = bool(model.novelty_whiten.abs().sum() > 0)


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
    # an artifact evaluates: parameters that require grad make every force call's backward also
    # work towards weight gradients nobody reads
    for p in model.parameters():
        p.requires_grad_(False)
    if model.fused:  # the scripted code calls the fused CPU kernels: loaders must have them
        from mlffd import kernels

        meta["kernels"] = kernels.STUDENT_OPERATOR_SET
    return export(model, path, meta)


def load_student(path, **overrides):
    """Rebuild the eager :class:`StudentPotential` (and its config and metadata) from an artifact
    (a path, or an :class:`mlffd.artifact.Artifact` already loaded).

    The weights come from the artifact's TorchScript module, the hyper-parameters from its
    metadata (``overrides`` replace evaluation settings such as ``chunk_atoms``), so the student
    runs with the current code (used by :func:`reexport`).
    """
    from mlffd.artifact import Artifact, load

    artifact = path if isinstance(path, Artifact) else load(path)
    meta = dict(artifact.metadata)
    hyper = {k: v for k, v in meta["model"].items() if k != "architecture"}
    # an artifact from before the short-range prior ran without one, and keeps running so
    hyper.setdefault("repulsion", False)
    config = ModelConfig.from_dict({**hyper, **overrides})
    model = build(config, artifact.dtype)
    load_weights(model, artifact.module.state_dict())
    return model.eval(), config, meta


def reexport(src, dst, **overrides):
    """Write ``src``'s student to ``dst`` compiled from the current code, metadata kept.

    ``overrides`` replace evaluation settings of the model config (e.g. ``chunk_atoms``);
    the weights, teacher, dataset hash and test metrics are carried over unchanged.
    """
    model, config, meta = load_student(src, **overrides)
    return export_like(model, config, meta, dst)


def export_like(model: StudentPotential, config: ModelConfig, metadata, dst, **changes):
    """Export ``model`` to ``dst`` with the user metadata of the artifact it was loaded from
    (``metadata``, as :func:`load_student` returns it; the fields export generates are made
    anew), ``changes`` replacing fields; returns the path."""
    from mlffd.artifact import GENERATED_METADATA

    keep = {k: v for k, v in metadata.items() if k not in GENERATED_METADATA}
    return export_student(model, config, dst, **{**keep, **changes})
