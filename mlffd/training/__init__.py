"""Training students on teacher-labelled data: config, loss, trainer, evaluation."""

from __future__ import annotations

from mlffd.training.config import TrainConfig, load_config
from mlffd.training.evaluate import evaluate, evaluate_model
from mlffd.training.trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "evaluate", "evaluate_model", "load_config", "train"]
