"""The training loop: EMA, LR schedule, early stopping, atomic checkpoints, exact resume, DDP.

Data parallelism: when launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the process group
is initialised (gloo on CPU, nccl on CUDA). Every rank draws the same global batch (a seeded
permutation per epoch) and takes its shard ``batch[rank::world]``; each rank's loss is
normalised by the counts of the *global* batch, so the summed gradients are those of one process
with the whole batch. The model is wrapped in ``DistributedDataParallel`` (``ddp: wrapper``; it
averages, so the loss is multiplied by the world size). The force loss differentiates through
``autograd.grad(create_graph=True)`` inside the forward; DDP's reducer handles that double
backward correctly (the tests compare 2 processes with 1). ``ddp: allreduce`` instead sums the
gradients with one flat ``all_reduce`` per step. A rank whose shard is empty runs a zero-weighted
copy of the batch's first structure so that every rank takes part in the collective calls.
Only rank 0 writes checkpoints, logs, progress and the artifact.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mlffd.data import (
    Graph,
    average_num_neighbors,
    collate,
    dataset_sha256,
    fit_reference_energies,
    force_rms,
    read_frames,
    shortest_pair_distances,
    split_by_group,
    to_graphs,
)
from mlffd.models import ModelConfig, StudentPotential, build, export_student, load_weights, num_parameters, preset
from mlffd.models.repulsion import switch_distances
from mlffd.jsonable import jsonable
from mlffd.representative import pick_structure, structure_record
from mlffd.training.config import TrainConfig
from mlffd.training.evaluate import evaluate_model
from mlffd.training.loss import LossWeights, combine, counts, loss_sums, predict

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
#: options that may change between a run and its resumption
RESUMABLE_CHANGES = frozenset({"max_epochs", "max_steps", "patience", "checkpoint_every", "threads", "device", "progress", "output", "test"})


# -- distributed helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        here = True
    return DistInfo(rank=rank, world=world, local_rank=local_rank, initialised_here=here)


# -- learning-rate schedule ------------------------------------------------------------------


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


# -- setup -----------------------------------------------------------------------------------


def _elements_of(frames) -> tuple[str, ...]:
    from ase.data import atomic_numbers

    symbols = {s for atoms in frames for s in atoms.get_chemical_symbols()}
    return tuple(sorted(symbols, key=lambda s: atomic_numbers[s]))


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


@dataclass
class Prepared:
    """Data and statistics of a run, identical on every rank."""

    model_config: ModelConfig
    train: list[Graph]
    val: list[Graph]
    test: list[Graph]
    train_index: list[int]
    val_index: list[int]
    stats: dict[str, Any]
    dataset_sha256: str


def labelling_teacher(configured: str, frames: dict[str, list]) -> str:
    """The teacher that labelled ``frames`` (their ``info['teacher']``, as the sampler writes it),
    checked against the ``configured`` one (``"unknown"``: take the data's).

    ValueError when the data name several teachers (a student learns one potential energy
    surface) or another teacher than the config: an artifact must say who labelled its data."""
    named = {str(a.info["teacher"]) for part in frames.values() for a in part if "teacher" in a.info}
    if len(named) > 1:
        where = {split: sorted({str(a.info["teacher"]) for a in part if "teacher" in a.info}) for split, part in frames.items()}
        raise ValueError(f"the data were labelled by several teachers {sorted(named)} ({where}); train on one teacher's labels")
    if not named:
        return configured
    data_teacher = named.pop()
    if configured != "unknown" and not _same_teacher(configured, data_teacher):
        raise ValueError(f"teacher: the config says {configured!r} but the data were labelled by {data_teacher!r} "
                         "(the frames' info['teacher']); set teacher to the data's")
    return data_teacher


def _same_teacher(a: str, b: str) -> bool:
    """Whether two teacher specs name the same teacher (specs mlffd cannot read compare as text)."""
    from mlffd.teachers import canonical_spec

    try:
        return canonical_spec(a) == canonical_spec(b)
    except ValueError:
        return a.strip() == b.strip()


def prepare(config: TrainConfig) -> Prepared:
    """Read the data, split it by trajectory, build graphs and compute the model's statistics."""
    if not config.train:
        raise ValueError("no training data: set 'train' to one or more labelled extxyz files")
    per_file = [read_frames([f]) for f in config.train]
    frames = [a for part in per_file for a in part]
    test_frames = read_frames(config.test) if config.test else []
    teacher = labelling_teacher(config.teacher, {"train": frames, "test": test_frames})
    elements = config.elements or _elements_of(frames)
    overrides = dict(config.model_overrides)
    overrides.setdefault("elements", tuple(elements))
    mc = preset(config.model, **overrides)
    if config.val:
        train_index, val_index = list(range(len(frames))), []
        val_frames = read_frames(config.val)
    else:
        from mlffd.data import frame_group

        starts = np.cumsum([0] + [len(part) for part in per_file])
        # only the val_from files' trajectories may be held out (a fine-tune's new data: the
        # initial model was trained on the others, so holding them out would leak)
        index = [k for f, a, b in zip(config.train, starts[:-1], starts[1:]) if not config.val_from or f in config.val_from
                 for k in range(int(a), int(b))]
        sub_train, sub_val = split_by_group([frame_group(frames[k]) for k in index], config.val_fraction, config.seed)
        val_index = sorted(index[k] for k in sub_val)
        held = set(val_index)
        train_index = [k for k in range(len(frames)) if k not in held]
        val_frames = [frames[k] for k in val_index]
    train_frames = [frames[k] for k in train_index]
    train = to_graphs(train_frames, mc.elements, mc.cutoff)
    val = to_graphs(val_frames, mc.elements, mc.cutoff)
    test = to_graphs(test_frames, mc.elements, mc.cutoff)
    if not val:
        raise ValueError("the validation set is empty")
    if "avg_num_neighbors" not in config.model_overrides:
        mc = dataclasses.replace(mc, avg_num_neighbors=round(average_num_neighbors(train), 4))
    ref = fit_reference_energies(train, len(mc.elements))
    species_of = [np.bincount(g.species, minlength=len(mc.elements)) @ ref for g in train]
    residual = np.array([(g.energy - s) / g.num_atoms for g, s in zip(train, species_of)])
    stats = {
        "teacher": teacher,
        "reference_energies": {e: float(v) for e, v in zip(mc.elements, ref)},
        "avg_num_neighbors": mc.avg_num_neighbors,
        "force_rms": force_rms(train),
        "residual_energy_rms_per_atom": float(np.sqrt(np.mean(residual**2))),
        "num_train_frames": len(train),
        "num_val_frames": len(val),
        "num_test_frames": len(test),
        "num_train_atoms": int(sum(g.num_atoms for g in train)),
        # where the short-range prior must vanish: the closest approach of each pair in the data
        # what tools run for this model when the user names no structure (mlffd/representative.py)
        "structure": structure_record(pick_structure(train_frames)),
        "shortest_pair_distance_A": _pair_table(shortest_pair_distances(train + val, len(mc.elements)), mc.elements),
    }
    return Prepared(mc, train, val, test, train_index, val_index, stats, dataset_sha256(config.train))


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


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
        self.dtype = _dtype(c.dtype)
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
            load_weights(self.model, source.to(self.device, self.dtype).state_dict())
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
        self._running = self._zero_running()
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
        # the prior has no weights: a student fine-tuned on new data gets the prior of that data
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

    def _init_repulsion(self) -> None:
        """The short-range prior's switch distances from this run's data (zero on all of it)."""
        shortest = _pair_matrix(self.data.stats["shortest_pair_distance_A"], self.model_config.elements, self.dtype)
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
        if wrapper:
            import torch.distributed as dist

            dist.all_reduce(monitor)
            for p, g in zip(self.params, grads):
                p.grad = g
        elif self.dist.active:
            import torch.distributed as dist

            flat = torch.cat([g.reshape(-1) for g in grads] + [monitor])
            dist.all_reduce(flat)
            offset = 0
            for p, g in zip(self.params, grads):
                p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
                offset += g.numel()
            monitor = flat[offset:]
        else:
            for p, g in zip(self.params, grads):
                p.grad = g
        # checked after the reduction, so every rank stops at the same step, and before the
        # optimiser, so the weights (and the last checkpoint) keep their last finite values
        if not bool(torch.isfinite(monitor).all()):
            raise FloatingPointError(
                f"training loss became non-finite at step {self.step + 1} (loss {float(monitor[0]):g}); nothing is "
                f"exported and the last checkpoint in {c.output} is kept: lower lr or check the training data")
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        m = monitor.tolist()
        r = self._running
        r["loss"] += m[0]
        r["energy_abs"] += m[1]
        r["forces_sq"] += m[2]
        r["structures"] += n["structures"]
        r["components"] += n["components"]
        r["steps"] += 1
        return m[0]

    def _update_ema(self) -> None:
        decay = self.config.ema_decay
        with torch.no_grad():
            if decay <= 0:
                for e, p in zip(self.ema.parameters(), self.model.parameters()):
                    e.copy_(p)
                return
            d = min(decay, (1.0 + self.step) / (10.0 + self.step))
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 1.0 - d)

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

    # -- checkpoints

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "best_ema": self.best_ema,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": _rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_pos": self.batch_pos,
            "order": list(self.order),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "history": self.history,
            "running": self._running,
            "split": {"train": self.data.train_index, "val": self.data.val_index},
            "stats": self.data.stats,
            "dataset_sha256": self.data.dataset_sha256,
            "world_size": self.dist.world,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``output/checkpoint.pt`` atomically (rank 0 only)."""
        if not self.dist.is_main:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CHECKPOINT
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.checkpoint_state(), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # load_state_dict copies to the device
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        changed = _changed_options(state["config"], self.config)
        if changed:
            raise ValueError(f"{path}: the run was started with different options {changed}; resume with the same config")
        if state["dataset_sha256"] != self.data.dataset_sha256:
            raise ValueError(f"{path}: the training data changed since the checkpoint (sha256 differs)")
        if _model_differs(state["model_config"], self.model_config):
            raise ValueError(f"{path}: model configuration differs from the checkpoint's")
        load_weights(self.model, state["model"])
        load_weights(self.ema, state["ema"])
        # a checkpoint from before the short-range prior: its best weights get this run's prior
        self.best_ema = {**self.ema.state_dict(), **state["best_ema"]}
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_pos = int(state["batch_pos"])
        self.order = list(state["order"])
        self.best_metric = float(state["best_metric"])
        self.best_step = int(state["best_step"])
        self.bad_evals = int(state["bad_evals"])
        self.finished = bool(state["finished"])
        self.stop_reason = str(state["stop_reason"])
        self.history = list(state["history"])
        self._running = dict(state["running"])

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
        r = self._running
        train = {
            "train_loss": r["loss"] / max(r["steps"], 1),
            "train_energy_mae_mev": 1000 * r["energy_abs"] / max(r["structures"], 1),
            "train_force_rmse": math.sqrt(r["forces_sq"] / max(r["components"], 1)),
        }
        self._running = self._zero_running()
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
        r = self._running
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
        """Test metrics of the best EMA weights; export the artifact (rank 0). Returns the summary."""
        summary: dict[str, Any] = {}
        if self.dist.is_main:
            model = self.best_model()
            graphs = self.data.test or self.data.val
            metrics = evaluate_model(model, graphs, batch_size=2 * self.config.batch_size, device=self.device, elements=self.model_config.elements)
            metrics["split"] = "test" if self.data.test else "val"
            metrics["best_step"] = self.best_step
            metrics["steps"] = self.step
            metrics["under_trained"] = under_trained(self.history)
            extra: dict[str, Any] = {}
            if self.model_config.ensemble > 1:  # the heads' spread in eV and eV/Å, from held-out frames
                from mlffd.training.calibration import calibrate

                extra["uncertainty"] = jsonable(calibrate(model, self.data.val, self.device))
                metrics["uncertainty"] = extra["uncertainty"]
            path = export_student(
                model.to("cpu"),
                self.model_config,
                self.out / f"{self.config.name}.mlffd.pt",
                teacher=self.data.stats.get("teacher", self.config.teacher),
                dataset_sha256=self.data.dataset_sha256,
                metrics=jsonable(metrics),
                structure=self.data.stats.get("structure"),
                **extra,
            )
            summary = {
                "artifact": str(path),
                "metrics": metrics,
                "stats": self.data.stats,
                "num_parameters": num_parameters(model),
                "model_config": self.model_config.to_dict(),
                "stop_reason": self.stop_reason,
            }
            tmp = self.out / "metrics.json.tmp"
            tmp.write_text(json.dumps(jsonable(summary), indent=2))
            os.replace(tmp, self.out / "metrics.json")
        if self.dist.active:
            import torch.distributed as dist

            dist.barrier()
        return summary

    def close(self) -> None:
        """Leave the process group (when this trainer joined it).

        Every rank first finishes all collectives and checks in at the rendezvous store; only
        then are the gloo/nccl connections torn down (a rank that destroys its group while a
        peer is still completing the last barrier makes that peer fail: pytorch/gloo#155).
        """
        torch.set_num_threads(self._threads_before)
        if not self.dist.initialised_here:
            return
        import torch.distributed as dist

        try:
            dist.barrier()
            store = dist.distributed_c10d._get_default_store()
            store.add("mlffd/closed", 1)
            deadline = time.time() + 300
            while store.add("mlffd/closed", 0) < self.dist.world and time.time() < deadline:
                time.sleep(0.02)
        finally:
            dist.destroy_process_group()


def _changed_options(old: dict[str, Any], config: TrainConfig) -> list[str]:
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


def under_trained(history: list[dict[str, Any]]) -> bool:
    """Whether the best validation loss came at the run's last evaluation (of at least three):
    it was still falling when training stopped, so more steps would likely help."""
    evals = [h for h in history if "val_loss" in h]
    return len(evals) >= 3 and bool(evals[-1].get("best"))


UNDER_TRAINED = ("the best validation loss came at the last evaluation: the student was still improving when "
                 "training stopped; train longer (max_steps / max_epochs) or fine-tune it (init_from)")


def _pair_table(d: np.ndarray, elements: Sequence[str]) -> dict[str, float | None]:
    """``{"A-B": value}`` for each unordered element pair (``None`` where ``d`` is not finite)."""
    n = len(elements)
    return {f"{elements[i]}-{elements[j]}": (float(d[i, j]) if np.isfinite(d[i, j]) else None) for i in range(n) for j in range(i, n)}


def _pair_matrix(table: dict[str, float | None], elements: Sequence[str], dtype: torch.dtype) -> torch.Tensor:
    """The symmetric ``[S, S]`` matrix of a :func:`_pair_table` (``inf`` for ``None``)."""
    n = len(elements)
    out = torch.full((n, n), math.inf, dtype=dtype)
    for i in range(n):
        for j in range(i, n):
            v = table[f"{elements[i]}-{elements[j]}"]
            if v is not None:
                out[i, j] = out[j, i] = v
    return out


def _model_differs(old: dict[str, Any], config: ModelConfig) -> bool:
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
    conflicts = _changed_options(state["config"], config)
    if state.get("dataset_sha256") != dataset_sha256(config.train):
        conflicts.append("training data (sha256)")
    return conflicts


def counts_of(graphs: list[Graph]) -> dict[str, int]:
    """Loss normalisers of a list of graphs (see :func:`mlffd.training.loss.counts`)."""
    return {
        "structures": len(graphs),
        "components": 3 * sum(g.num_atoms for g in graphs),
        "stress_components": 9 * sum(g.stress is not None for g in graphs),
    }


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


__all__ = ["DistInfo", "Prepared", "Schedule", "Trainer", "checkpoint_conflicts", "counts", "init_distributed", "prepare", "train"]
