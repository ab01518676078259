"""What a training run starts from: the data read, split by trajectory and turned into graphs,
the teacher that labelled it, and the statistics the student is normalised with."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from mlffd.data import (
    Graph,
    average_num_neighbors,
    dataset_sha256,
    fit_reference_energies,
    force_rms,
    read_frames,
    shortest_pair_distances,
    split_by_group,
    to_graphs,
)
from mlffd.models import ModelConfig, preset
from mlffd.representative import pick_structure, structure_record
from mlffd.training.config import TrainConfig


def elements_of(frames) -> tuple[str, ...]:
    from ase.data import atomic_numbers

    symbols = {s for atoms in frames for s in atoms.get_chemical_symbols()}
    return tuple(sorted(symbols, key=lambda s: atomic_numbers[s]))


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
    if configured != "unknown" and not same_teacher(configured, data_teacher):
        raise ValueError(f"teacher: the config says {configured!r} but the data were labelled by {data_teacher!r} "
                         "(the frames' info['teacher']); set teacher to the data's")
    return data_teacher


def same_teacher(a: str, b: str) -> bool:
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
    elements = config.elements or elements_of(frames)
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
    if config.repeat:  # oversampling: a file's training frames (never its validation ones) used several times
        times = np.concatenate([np.full(len(part), config.repeat.get(f, 1)) for f, part in zip(config.train, per_file)])
        train_index = [k for k in train_index for _ in range(int(times[k]))]
    train_frames = [frames[k] for k in train_index]
    # one graph per frame, shared by its repeats (graphs are frozen)
    unique = list(dict.fromkeys(train_index))
    graph_of = dict(zip(unique, to_graphs([frames[k] for k in unique], mc.elements, mc.cutoff)))
    train = [graph_of[k] for k in train_index]
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
        # what tools run for this model when the user names no structure (mlffd/representative.py)
        "structure": structure_record(pick_structure(train_frames)),
        # where the short-range prior must vanish: the closest approach of each pair in the data
        "shortest_pair_distance_A": pair_table(shortest_pair_distances(train + val, len(mc.elements)), mc.elements),
    }
    return Prepared(mc, train, val, test, train_index, val_index, stats, dataset_sha256(config.train))


def pair_table(d: np.ndarray, elements: Sequence[str]) -> dict[str, float | None]:
    """``{"A-B": value}`` for each unordered element pair (``None`` where ``d`` is not finite)."""
    n = len(elements)
    return {f"{elements[i]}-{elements[j]}": (float(d[i, j]) if np.isfinite(d[i, j]) else None) for i in range(n) for j in range(i, n)}


def pair_matrix(table: dict[str, float | None], elements: Sequence[str], dtype: torch.dtype) -> torch.Tensor:
    """The symmetric ``[S, S]`` matrix of a :func:`pair_table` (``inf`` for ``None``)."""
    n = len(elements)
    out = torch.full((n, n), math.inf, dtype=dtype)
    for i in range(n):
        for j in range(i, n):
            v = table[f"{elements[i]}-{elements[j]}"]
            if v is not None:
                out[i, j] = out[j, i] = v
    return out


def counts_of(graphs: list[Graph]) -> dict[str, int]:
    """Loss normalisers of a list of graphs (see :func:`mlffd.training.loss.counts`)."""
    return {
        "structures": len(graphs),
        "components": 3 * sum(g.num_atoms for g in graphs),
        "stress_components": 9 * sum(g.stress is not None for g in graphs),
    }
