"""Students with random weights, for timings and tests: a student's cost does not depend on its
weights, so ``mlffd bench`` measures the size presets with these where no trained artifact ships."""

from __future__ import annotations

from typing import Sequence

import torch

from mlffd.models import ModelConfig, build, preset

__all__ = ["random_student"]


def random_student(
    config: ModelConfig | str = "tiny",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    energy_scale: float = 20.0,
    elements: Sequence[str] | None = None,
    repulsion_outer: float = 0.0,
):
    """A randomly initialised student whose forces are O(0.1-1) eV/Å (not vanishing).

    ``repulsion_outer`` > 0 switches the short-range prior on below that distance (Å) for every
    pair, as if it were the shortest distance in training data (:func:`switch_distances`)."""
    from mlffd.models.repulsion import switch_distances

    if isinstance(config, str):
        config = preset(config, **({"elements": tuple(elements)} if elements else {}))
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build(config, dtype)
        with torch.no_grad():
            model.scale.fill_(energy_scale)
            model.reference_energies.copy_(-torch.arange(1, len(config.elements) + 1, dtype=dtype))
            if repulsion_outer > 0:
                n = len(config.elements)
                inner, outer = switch_distances(torch.full((n, n), repulsion_outer, dtype=dtype))
                model.repulsion.r_inner.copy_(inner)
                model.repulsion.r_outer.copy_(outer)
    finally:
        torch.random.set_rng_state(gen_state)
    return model, config
