"""The training loop: one optimiser step after another over seeded epoch orders, EMA weights
validated at intervals, early stopping, checkpoints on the way; data parallel under ``torchrun``.

The concerns around the loop live beside it: the data and its statistics in
:mod:`mlffd.training.prepare`, the learning-rate schedule and the EMA in
:mod:`mlffd.training.schedule`, DDP in :mod:`mlffd.training.distributed`, checkpoints and
exact resumption in :mod:`mlffd.training.checkpoint`, the final metrics and the artifact in
:mod:`mlffd.training.export`. Their public names are re-exported here, so
``from mlffd.training.trainer import X`` keeps working.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mlffd.data import collate
from mlffd.models import StudentPotential, build, load_weights
from mlffd.models.repulsion import switch_distances
from mlffd.training.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_VERSION,
    RESUMABLE_CHANGES,
    checkpoint_conflicts,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from mlffd.training.config import TrainConfig
from mlffd.training.distributed import DistInfo, init_distributed, leave_process_group, share_gradients
from mlffd.training.export import UNDER_TRAINED, export_run, under_trained
from mlffd.training.loss import LossWeights, combine, counts, loss_sums, predict
from mlffd.training.prepare import Prepared, counts_of, labelling_teacher, pair_matrix, prepare, same_teacher
from mlffd.training.schedule import Schedule, update_ema

#: the former private name, kept for callers that imported it from here
_same_teacher = same_teacher


# -- the trainer -----------------------------------------------------------------------------


class Trainer:
    """One training run (see the module docstring); :meth:`run` trains, :meth:`finish` exports."""

    def __init__(self, config: TrainConfig, resume: bool = False, prepared: Prepared | None = None) -> None:
        self.config = c = config
        if not resume and (Path(c.output) / CHECKPOINT).exists():
            raise FileExistsError(f"{Path(c.output) / CHECKPOINT} exists: pass --resume (resume=True) to continue it, or choose another output")
        self.dist = init_distributed(c.device)
        if c.device.startswith("cuda") and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        else:
            self.device = torch.device(c.device)
        self._threads_before = torch.get_num_threads()
        if c.threads > 0:
            torch.set_num_threads(c.threads)  # restored by close()
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[c.dtype]
        self.out = Path(c.output)
        self.weights = LossWeights(c.energy_weight, c.forces_weight, c.stress_weight, c.loss, c.huber_delta)
        self.data = prepared or prepare(c)
        self.model_config = self.data.model_config
        source = self._initial_student(Path(c.init_from)) if c.init_from else None

        random.seed(c.seed)
        np.random.seed(c.seed % 2**32)
        torch.manual_seed(c.seed)
        self.model: StudentPotential = build(self.model_config, self.dtype).to(self.device)
        self._init_buffers()
        if source is not None:
            state = source.to(self.device, self.dtype).state_dict()
            load_weights(self.model, state)
            if not self._has_prior(state):
                self._init_repulsion()
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.forward_model: torch.nn.Module = self.model
        if self.dist.active and c.ddp == "wrapper":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids)
        opt_cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=c.lr, weight_decay=c.weight_decay)

        self.steps_per_epoch = math.ceil(len(self.data.train) / c.batch_size)
        self.total_steps = c.max_steps if c.max_steps > 0 else c.max_epochs * self.steps_per_epoch
        self.schedule = Schedule(c, self.total_steps)
        self.step = 0
        self.epoch = 0
        self.batch_pos = 0
        self.order: list[int] = []
        self.best_metric = math.inf
        self.best_step = -1
        self.best_ema: dict[str, torch.Tensor] = copy.deepcopy(self.ema.state_dict())
        self.bad_evals = 0
        self.finished = False
        self.stop_reason = ""
        self.history: list[dict[str, Any]] = []
        self.last_val: dict[str, float] = {}
        self.running = self._zero_running()
        if resume and (self.out / CHECKPOINT).exists():
            self.load_checkpoint(self.out / CHECKPOINT)
        # a resumed run may have a different length: the schedule follows the new total, and a
        # run that had reached its old max_steps continues to the new one
        self.schedule.total = max(self.total_steps, 1)
        if self.finished and self.stop_reason == "reached max steps" and self.step < self.total_steps:
            self.finished = False
            self.stop_reason = ""

    # -- initialisation

    def _initial_student(self, path: Path) -> StudentPotential | None:
        """Fine-tuning: the student of artifact ``path``, checked against this run's architecture.

        The run then uses the source's data-derived normalisation (``avg_num_neighbors``), which
        its weights were trained with.
        """
        from mlffd.models import load_student

        if not path.is_file():
            raise FileNotFoundError(f"init_from: {path} does not exist (expected an mlffd artifact, *.mlffd.pt)")
        source, source_config, _ = load_student(path)
        # a source without the prior (off, or exported before it existed) gets the prior of this run's data
        free = {"chunk_atoms", "avg_num_neighbors", "repulsion"}
        mine, theirs = self.model_config.to_dict(), source_config.to_dict()
        diff = sorted(k for k in set(mine) | set(theirs) if k not in free and mine.get(k) != theirs.get(k))
        if diff:
            raise ValueError(f"init_from: {path} has a different model configuration (fields {diff}) than this run's")
        self.model_config = type(self.model_config).from_dict({**mine, "avg_num_neighbors": theirs["avg_num_neighbors"]})
        return source

    def _init_buffers(self) -> None:
        s = self.data.stats
        ref = torch.tensor([s["reference_energies"][e] for e in self.model_config.elements], dtype=self.dtype)
        with torch.no_grad():
            self.model.reference_energies.copy_(ref)
            self.model.scale.fill_(max(s["force_rms"], 1e-3))
            self.model.shift.fill_(0.0)
        self._init_repulsion()

    def _has_prior(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether a fine-tune's source ``state`` brings switch distances of its own, which the run
        then keeps: the source's network was trained with them, and moving the switch in to a
        closer contact of the new data would take the prior away exactly at that contact."""
        outer = state.get("repulsion.r_outer")
        return bool(self.model_config.repulsion and outer is not None and outer.shape == self.model.repulsion.r_outer.shape
                    and torch.isfinite(outer).all() and (outer > 0).all())

    def _init_repulsion(self) -> None:
        """The short-range prior's switch distances from this run's data (zero on all of it)."""
        shortest = pair_matrix(self.data.stats["shortest_pair_distance_A"], self.model_config.elements, self.dtype)
        inner, outer = switch_distances(shortest)
        with torch.no_grad():
            self.model.repulsion.r_inner.copy_(inner)
            self.model.repulsion.r_outer.copy_(outer)

    # -- data order

    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train), generator=g).tolist()

    def global_batch(self) -> list[int]:
        b = self.config.batch_size
        return self.order[self.batch_pos * b : (self.batch_pos + 1) * b]

    # -- one step

    @staticmethod
    def _zero_running() -> dict[str, float]:
        return {"loss": 0.0, "energy_abs": 0.0, "forces_sq": 0.0, "structures": 0, "components": 0, "steps": 0}

    def train_step(self, indices: list[int]) -> float:
        """One optimiser step on the global batch ``indices`` (this rank takes its shard)."""
        c = self.config
        graphs = [self.data.train[k] for k in indices]
        n = counts_of(graphs)
        shard = graphs[self.dist.rank :: self.dist.world]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        wrapper = self.forward_model is not self.model
        factor = 1.0 if shard else 0.0
        batch = collate(shard or graphs[:1], self.dtype, self.device)
        if shard or wrapper:
            sums = loss_sums(predict(self.forward_model, batch), batch, self.weights)
            loss = combine(sums, n, self.weights) * factor
            (loss * self.dist.world if wrapper else loss).backward()
            monitor = torch.stack([loss.detach(), sums["energy_abs"] * factor, sums["forces_sq"] * factor]).to(self.dtype)
        else:
            monitor = torch.zeros(3, dtype=self.dtype, device=self.device)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        monitor = share_gradients(self.params, grads, monitor, self.dist, wrapper)
        # checked after the reduction, so every rank stops at the same step, and before the
        # optimiser, so the weights (and the last checkpoint) keep their last finite values
        if not bool(torch.isfinite(monitor).all()):
            raise FloatingPointError(
                f"training loss became non-finite at step {self.step + 1} (loss {float(monitor[0]):g}); nothing is "
                f"exported and the last checkpoint in {c.output} is kept: lower lr or check the training data")
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, c.ema_decay, self.step)
        self.step += 1
        m = monitor.tolist()
        r = self.running
        r["loss"] += m[0]
        r["energy_abs"] += m[1]
        r["forces_sq"] += m[2]
        r["structures"] += n["structures"]
        r["components"] += n["components"]
        r["steps"] += 1
        return m[0]

    # -- validation

    def validate(self) -> dict[str, float]:
        """Loss and errors of the EMA weights on the validation set (sharded over ranks)."""
        graphs = self.data.val[self.dist.rank :: self.dist.world]
        totals = torch.zeros(4, dtype=torch.float64)
        self.ema.eval()
        with torch.enable_grad():
            for start in range(0, len(graphs), 2 * self.config.batch_size):
                batch = collate(graphs[start : start + 2 * self.config.batch_size], self.dtype, self.device)
                sums = loss_sums(predict(self.ema, batch), batch, self.weights)
                parts = torch.stack([sums["energy"], sums["forces"], sums["stress"], sums["energy_abs"]]).detach()
                totals += parts.to("cpu", torch.float64)
        if self.dist.active:
            import torch.distributed as dist

            t = totals.to(self.device)
            dist.all_reduce(t)
            totals = t.cpu()
        n = counts_of(self.data.val)
        e, f, s, eabs = totals.tolist()
        loss = self.weights.energy * e / n["structures"] + self.weights.forces * f / max(n["components"], 1)
        if n["stress_components"]:
            loss += self.weights.stress * s / n["stress_components"]
        result = {"val_loss": loss, "val_energy_mae_mev": 1000 * eabs / n["structures"]}
        if self.weights.kind == "mse":
            result["val_force_rmse"] = math.sqrt(f / max(n["components"], 1))
        return result

    # -- checkpoints (mlffd.training.checkpoint)

    def checkpoint_state(self) -> dict[str, Any]:
        return checkpoint_state(self)

    def save_checkpoint(self) -> Path | None:
        """Write ``output/checkpoint.pt`` atomically (rank 0 only)."""
        return save_checkpoint(self)

    def load_checkpoint(self, path: Path) -> None:
        load_checkpoint(self, path)

    # -- the loop

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _evaluate_and_track(self) -> bool:
        """Validate, update best/early stopping/plateau; True when training should stop."""
        val = self.validate()
        r = self.running
        train = {
            "train_loss": r["loss"] / max(r["steps"], 1),
            "train_energy_mae_mev": 1000 * r["energy_abs"] / max(r["structures"], 1),
            "train_force_rmse": math.sqrt(r["forces_sq"] / max(r["components"], 1)),
        }
        self.running = self._zero_running()
        metric = val["val_loss"]
        improved = metric < self.best_metric
        if improved:
            self.best_metric = metric
            self.best_step = self.step
            self.best_ema = copy.deepcopy(self.ema.state_dict())
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        self.schedule.observe(metric)
        record = {"step": self.step, "epoch": self.epoch, "lr": self.schedule.lr(max(self.step - 1, 0)), **train, **val, "best": improved, "time": time.time()}
        self.history.append({k: v for k, v in record.items() if k != "time"})
        self.last_val = {**train, **val}
        self._log(record)
        if self.config.patience > 0 and self.bad_evals >= self.config.patience:
            self.stop_reason = f"early stopping: no improvement in {self.bad_evals} evaluations"
            return True
        return False

    def run(self, callback: Callable[["Trainer"], bool] | None = None) -> "Trainer":
        """Train until ``max_steps``/``max_epochs`` or early stopping; checkpoint on the way.

        ``callback(trainer)`` runs after every step; returning True stops at once without a
        final checkpoint (what a killed process looks like; used by tests).
        """
        c = self.config
        if self.finished:
            return self
        bar = None
        if c.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc=c.name, unit="step", dynamic_ncols=True)
        try:
            stop = False
            while self.step < self.total_steps and not stop:
                if self.batch_pos == 0 or not self.order:
                    self.order = self.epoch_order(self.epoch)
                while self.batch_pos < self.steps_per_epoch:
                    indices = self.global_batch()
                    self.batch_pos += 1
                    self.train_step(indices)
                    end_of_epoch = self.batch_pos >= self.steps_per_epoch
                    if end_of_epoch:
                        self.epoch += 1
                        self.batch_pos = 0
                    due = (self.step % c.eval_every == 0) if c.eval_every > 0 else end_of_epoch
                    if due or self.step >= self.total_steps:
                        stop = self._evaluate_and_track()
                    if self.step >= self.total_steps:
                        stop = True
                        self.stop_reason = self.stop_reason or "reached max steps"
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(self._postfix(), refresh=False)
                    if stop:
                        break
                    if self.step % c.checkpoint_every == 0:
                        self.save_checkpoint()
                    if callback is not None and callback(self):
                        return self
                    if end_of_epoch:
                        break
            self.finished = True
            self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return self

    def _postfix(self) -> dict[str, str]:
        r = self.running
        out = {}
        if r["steps"]:
            out["E"] = f"{1000 * r['energy_abs'] / max(r['structures'], 1):.1f}meV/at"
            out["F"] = f"{math.sqrt(r['forces_sq'] / max(r['components'], 1)):.3f}"
        elif self.last_val:
            out["E"] = f"{self.last_val['train_energy_mae_mev']:.1f}meV/at"
            out["F"] = f"{self.last_val['train_force_rmse']:.3f}"
        if self.last_val:
            out["vE"] = f"{self.last_val['val_energy_mae_mev']:.1f}"
            if "val_force_rmse" in self.last_val:
                out["vF"] = f"{self.last_val['val_force_rmse']:.3f}"
        out["lr"] = f"{self.schedule.lr(max(self.step - 1, 0)):.1e}"
        return out

    # -- export

    def best_model(self) -> StudentPotential:
        """A copy of the model with the best-validation EMA weights."""
        model = copy.deepcopy(self.ema)
        model.load_state_dict(self.best_ema)
        return model.eval()

    def finish(self) -> dict[str, Any]:
        """Test metrics of the best EMA weights; export the artifact (rank 0). Returns the summary
        (empty on the other ranks; :func:`mlffd.training.export.export_run`)."""
        summary: dict[str, Any] = export_run(self) if self.dist.is_main else {}
        if self.dist.active:
            import torch.distributed as dist

            dist.barrier()
        return summary

    def close(self) -> None:
        """Restore torch's thread count and leave the process group (when this trainer joined it)."""
        torch.set_num_threads(self._threads_before)
        leave_process_group(self.dist)


def train(config: TrainConfig, resume: bool = False, callback: Callable[[Trainer], bool] | None = None) -> dict[str, Any]:
    """Train a student for ``config`` (resuming its checkpoint if asked), export it, return the summary."""
    trainer = Trainer(config, resume=resume)
    try:
        trainer.run(callback=callback)
        if callback is not None and not trainer.finished:
            return {}
        return trainer.finish()
    finally:
        trainer.close()


__all__ = [
    "CHECKPOINT", "CHECKPOINT_VERSION", "RESUMABLE_CHANGES", "UNDER_TRAINED", "DistInfo", "Prepared", "Schedule", "Trainer",
    "checkpoint_conflicts", "counts", "counts_of", "init_distributed", "labelling_teacher", "prepare", "train", "under_trained",
]
