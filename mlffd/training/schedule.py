"""The learning-rate schedule and the exponential moving average of the weights."""

from __future__ import annotations

import math
from typing import Any

import torch

from mlffd.training.config import TrainConfig


class Schedule:
    """Warm-up then cosine decay to ``min_lr``, ReduceLROnPlateau, or constant; plain state."""

    def __init__(self, config: TrainConfig, total_steps: int) -> None:
        self.c = config
        self.total = max(total_steps, 1)
        self.plateau_lr = config.lr
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def lr(self, step: int) -> float:
        c = self.c
        if c.warmup_steps > 0 and step < c.warmup_steps:
            base = c.lr if c.schedule != "plateau" else self.plateau_lr
            return base * (step + 1) / c.warmup_steps
        if c.schedule == "cosine":
            span = max(self.total - c.warmup_steps, 1)
            t = min(max(step - c.warmup_steps, 0) / span, 1.0)
            return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if c.schedule == "plateau":
            return self.plateau_lr
        return c.lr

    def observe(self, metric: float) -> None:
        """Feed a validation metric (plateau schedule only)."""
        if self.c.schedule != "plateau":
            return
        if metric < self.plateau_best * (1 - 1e-4):
            self.plateau_best = metric
            self.plateau_bad = 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad > self.c.plateau_patience:
                self.plateau_lr = max(self.plateau_lr * self.c.plateau_factor, self.c.min_lr)
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "plateau_lr": self.plateau_lr, "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = int(state["total"])
        self.plateau_lr = float(state["plateau_lr"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Move ``ema``'s weights towards ``model``'s after optimiser step ``step``: by
    ``1 - min(decay, (1 + step) / (10 + step))``, so early steps, when the EMA would lag far
    behind, follow the model closely; ``decay`` <= 0 copies the weights."""
    with torch.no_grad():
        if decay <= 0:
            for e, p in zip(ema.parameters(), model.parameters()):
                e.copy_(p)
            return
        d = min(decay, (1.0 + step) / (10.0 + step))
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - d)
