"""Checkpoints of a training run: written atomically by rank 0, resumed exactly (weights, EMA,
optimiser, schedule, RNG streams, data order and history), refused when the run they would
continue differs (options, data, model)."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlffd.data import dataset_sha256
from mlffd.models import ModelConfig, load_weights
from mlffd.training.config import TrainConfig

if TYPE_CHECKING:
    from mlffd.training.trainer import Trainer

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
#: options that may change between a run and its resumption
RESUMABLE_CHANGES = frozenset({"max_epochs", "max_steps", "patience", "checkpoint_every", "threads", "device", "progress", "output", "test"})


def checkpoint_state(trainer: "Trainer") -> dict[str, Any]:
    """Everything :func:`load_checkpoint` needs to continue ``trainer``'s run exactly."""
    t = trainer
    return {
        "version": CHECKPOINT_VERSION,
        "config": t.config.to_dict(),
        "model_config": t.model_config.to_dict(),
        "model": t.model.state_dict(),
        "ema": t.ema.state_dict(),
        "best_ema": t.best_ema,
        "optimizer": t.optimizer.state_dict(),
        "schedule": t.schedule.state_dict(),
        "rng": rng_state(),
        "step": t.step,
        "epoch": t.epoch,
        "batch_pos": t.batch_pos,
        "order": list(t.order),
        "best_metric": t.best_metric,
        "best_step": t.best_step,
        "bad_evals": t.bad_evals,
        "finished": t.finished,
        "stop_reason": t.stop_reason,
        "history": t.history,
        "running": t.running,
        "split": {"train": t.data.train_index, "val": t.data.val_index},
        "stats": t.data.stats,
        "dataset_sha256": t.data.dataset_sha256,
        "world_size": t.dist.world,
    }


def save_checkpoint(trainer: "Trainer") -> Path | None:
    """Write ``output/checkpoint.pt`` atomically (rank 0 only; None on the others)."""
    if not trainer.dist.is_main:
        return None
    trainer.out.mkdir(parents=True, exist_ok=True)
    path = trainer.out / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint_state(trainer), tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(trainer: "Trainer", path: Path) -> None:
    """Restore ``trainer`` from the checkpoint at ``path``; ValueError when it belongs to another run."""
    t = trainer
    state = torch.load(path, map_location="cpu", weights_only=True)  # load_state_dict copies to the device
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
    changed = changed_options(state["config"], t.config)
    if changed:
        raise ValueError(f"{path}: the run was started with different options {changed}; resume with the same config")
    if state["dataset_sha256"] != t.data.dataset_sha256:
        raise ValueError(f"{path}: the training data changed since the checkpoint (sha256 differs)")
    if model_differs(state["model_config"], t.model_config):
        raise ValueError(f"{path}: model configuration differs from the checkpoint's")
    load_weights(t.model, state["model"])
    load_weights(t.ema, state["ema"])
    # a checkpoint from before the short-range prior: its best weights get this run's prior
    t.best_ema = {**t.ema.state_dict(), **state["best_ema"]}
    t.optimizer.load_state_dict(state["optimizer"])
    t.schedule.load_state_dict(state["schedule"])
    set_rng_state(state["rng"])
    t.step = int(state["step"])
    t.epoch = int(state["epoch"])
    t.batch_pos = int(state["batch_pos"])
    t.order = list(state["order"])
    t.best_metric = float(state["best_metric"])
    t.best_step = int(state["best_step"])
    t.bad_evals = int(state["bad_evals"])
    t.finished = bool(state["finished"])
    t.stop_reason = str(state["stop_reason"])
    t.history = list(state["history"])
    t.running = dict(state["running"])


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def changed_options(old: dict[str, Any], config: TrainConfig) -> list[str]:
    """Options of ``config`` that a checkpoint written with options ``old`` cannot resume with.

    Not conflicts: :data:`RESUMABLE_CHANGES`; ``train`` (the data's identity is its sha256,
    checked separately, so a moved checkout resumes); options added to mlffd after the
    checkpoint was written, when they keep their default.
    """
    defaults = TrainConfig().to_dict()
    new = config.to_dict()
    return sorted(
        k for k in new
        if k not in RESUMABLE_CHANGES and k != "train" and old.get(k, defaults[k]) != new[k]
    )


def model_differs(old: dict[str, Any], config: ModelConfig) -> bool:
    """Whether a checkpoint's model configuration ``old`` describes another model than ``config``
    (evaluation-only ``chunk_atoms`` aside; fields newer than the checkpoint count at their default)."""
    new = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    return any(old.get(k, defaults.get(k)) != v for k, v in new.items() if k != "chunk_atoms")


def checkpoint_conflicts(config: TrainConfig) -> list[str]:
    """Options that differ between ``config`` and its run's existing checkpoint (empty if none/compatible)."""
    path = Path(config.output) / CHECKPOINT
    if not path.exists():
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)
    conflicts = changed_options(state["config"], config)
    if state.get("dataset_sha256") != dataset_sha256(config.train):
        conflicts.append("training data (sha256)")
    return conflicts
