"""A wider student that computes exactly what a trained one computes: the start of a fine-tune
that gives a student more capacity without losing what it has learned.

The new atom features, moment channels and hidden units are wired so that nothing reads them
yet (function-preserving widening, as in Net2Net's zero-initialised variant): each weight that
reads a new unit is zero, each weight that writes one is small and random. The widened student's
energies, forces and stresses are then the trained student's, and the first optimiser step
already moves the zero weights, because the units they read are not zero.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from mlffd.models.config import ModelConfig
from mlffd.models.potential import StudentPotential

__all__ = ["widen", "widen_artifact"]

#: the update MLP reads five invariants per channel (A0, |A1|^2, |A2|^2, A1.A2.A1, tr(A2^3)), in
#: blocks of ``channels``, then the atom features (:meth:`mlffd.models.layers.Interaction.mix`)
INVARIANTS = 5


def _pad(old: Tensor, shape: tuple[int, ...], fill: Tensor | None = None) -> Tensor:
    """``old`` in the leading corner of a tensor of ``shape``, the rest ``fill`` (zero if None)."""
    new = torch.zeros(shape, dtype=old.dtype) if fill is None else fill.to(old.dtype).clone()
    new[tuple(slice(0, n) for n in old.shape)] = old
    return new


def _update_input(old: Tensor, rows: int, channels: int, new_channels: int, features: int, new_features: int,
                  generator: torch.Generator, scale: float) -> Tensor:
    """The update MLP's first weight ``[hidden, 5 K + F]`` for wider K, F and hidden: old columns
    moved to their block's new place, new columns zero, new rows (hidden units) random
    (``scale`` times the default initialisation)."""
    fan_in = INVARIANTS * new_channels + new_features
    new = (scale * torch.randn(rows, fan_in, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)).to(old.dtype)
    new[: old.shape[0]] = 0.0
    for b in range(INVARIANTS):
        new[: old.shape[0], b * new_channels: b * new_channels + channels] = old[:, b * channels: (b + 1) * channels]
    start = INVARIANTS * new_channels
    new[: old.shape[0], start: start + features] = old[:, INVARIANTS * channels:]
    return new


def _moment_weight(old: Tensor, num_basis: int, dim: int, new_dim: int, fill: Tensor) -> Tensor:
    """A moment weight ``[B * D, K]`` (rows ``b * D + d``: radial function, message feature) for
    wider D and K: the old block moved to its rows, new message features read by zeros in the
    old channels; the rest (new channels) ``fill``."""
    new = fill.to(old.dtype).clone().view(num_basis, new_dim, -1)
    k = old.shape[1]
    new[:, :, :k] = 0.0
    new[:, :dim, :k] = old.view(num_basis, dim, k)
    return new.reshape(num_basis * new_dim, -1)


def widen(model: StudentPotential, config: ModelConfig, features: int, channels: int, hidden: int,
          message_dim: int | None = None, seed: int = 0, scale: float = 0.1) -> tuple[StudentPotential, ModelConfig]:
    """A student of ``config`` widened to ``features``, ``channels``, ``hidden`` and ``message_dim``
    (each at least the old width; ``message_dim`` None keeps it) that computes the same outputs
    as ``model``; ``scale`` sets the size of the random weights that write the new units
    (relative to their default initialisation)."""
    message_dim = config.message_dim if message_dim is None else message_dim
    old = (config.features, config.channels, config.hidden, config.message_dim)
    if features < old[0] or channels < old[1] or hidden < old[2] or message_dim < old[3]:
        raise ValueError(f"widen: the new widths (features, channels, hidden, message_dim) = "
                         f"{(features, channels, hidden, message_dim)} must each be at least the old {old}")
    wide_config = replace(config, features=features, channels=channels, hidden=hidden, message_dim=message_dim)
    source = model.state_dict()
    dtype = source["embedding.weight"].dtype
    wide = StudentPotential(wide_config).to(dtype)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, fan_in: int) -> Tensor:
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)).to(dtype)

    # weights that read new units (and the novelty reference, refitted by calibration): zero-padded
    read_only = ("novelty_mean", "novelty_whiten", "readout.net.0.weight", "update.net.0.bias", "update.net.2.weight",
                 "update.net.2.bias", "project.weight")
    state = {}
    for key, value in wide.state_dict().items():
        src = source[key]
        name = key.split(".")
        later = name[0] == "interactions" and not wide.interactions[int(name[1])].first  # carries message features
        if key == "embedding.weight":  # new features start non-zero, so the weights reading them learn
            state[key] = _pad(src, tuple(value.shape), rand(*value.shape, fan_in=1))
        elif name[-1] == "weight" and name[-2] == "project" and later:  # new message features: random rows
            state[key] = _pad(src, tuple(value.shape), rand(*value.shape, fan_in=value.shape[1]))
            state[key][:, config.features:] = 0.0  # readers of new features: zero
        elif name[-1] in ("w0", "w1", "w2") and later:  # also read new message features (by zero rows)
            state[key] = _moment_weight(src, config.num_basis, config.message_dim, message_dim,
                                        rand(*value.shape, fan_in=value.shape[0]))
        elif name[-1] in ("w0", "w1", "w2"):  # new channels: random, read by zero columns below
            state[key] = _pad(src, tuple(value.shape), rand(*value.shape, fan_in=value.shape[0]))
        elif key.endswith("update.net.0.weight"):
            state[key] = _update_input(src, hidden, config.channels, channels, config.features, features, g, scale)
        elif key.endswith(read_only):  # new hidden units are read by zeros, new features get zero updates
            state[key] = _pad(src, tuple(value.shape))
        else:
            if src.shape != value.shape:
                raise ValueError(f"widen: {key} has shape {tuple(src.shape)}, expected {tuple(value.shape)}")
            state[key] = src.clone()
    wide.load_state_dict(state)
    wide.use_novelty = model.use_novelty
    wide.use_repulsion = model.use_repulsion
    wide.eval()
    return wide, wide_config


def widen_artifact(src, dst, features: int, channels: int, hidden: int, message_dim: int | None = None, seed: int = 0):
    """Write to ``dst`` the student of artifact ``src`` widened by :func:`widen`, its metadata
    (teacher, dataset, metrics: the outputs are the same) kept; returns the path."""
    from mlffd.models import export_like, load_student

    model, config, meta = load_student(src)
    wide, wide_config = widen(model, config, features, channels, hidden, message_dim, seed=seed)
    return export_like(wide, wide_config, meta, dst)
