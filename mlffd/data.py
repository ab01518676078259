"""Labelled datasets for training: frames -> graphs -> concatenated batches.

A *frame* is an ASE ``Atoms`` with a teacher's energy (eV), forces (eV/Å) and, for periodic
cells, stress (Voigt, ASE sign, eV/Å³), plus ``info["trajectory"]`` / ``info["config_type"]``.
A :class:`Graph` holds one frame's model inputs (species, edges with Cartesian shifts) and
labels; :func:`collate` concatenates graphs into one :class:`Batch`, exactly the way the
calculator batches structures, plus a ``batch`` vector mapping atoms to structures.

Statistics used to initialise a student come from the training frames only:
:func:`fit_reference_energies` (least squares of energy on element counts),
:func:`average_num_neighbors` and :func:`force_rms`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from mlffd.neighbors import neighbor_list

__all__ = [
    "Batch",
    "Graph",
    "average_num_neighbors",
    "collate",
    "dataset_sha256",
    "fit_reference_energies",
    "force_rms",
    "frame_group",
    "read_frames",
    "split_by_group",
    "to_graphs",
]


# -- reading ---------------------------------------------------------------------------------


def read_frames(paths: str | Path | Sequence[str | Path]) -> list[Atoms]:
    """All frames of one or more extxyz files (``.xz``/``.gz``/``.bz2`` compressed or not).

    A missing file is a FileNotFoundError; an empty, unreadable (binary, truncated) or frameless
    file a ValueError; both name the file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames: list[Atoms] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"dataset file {path} is not a file")
        if path.stat().st_size == 0:
            raise ValueError(f"dataset file {path} is empty")
        try:
            got = _read_extxyz(path)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure (format, truncation, encoding) names the file
            detail = " ".join(str(exc).split())[:200]
            raise ValueError(f"dataset file {path}: cannot read frames ({type(exc).__name__}: {detail}); "
                             "expected a complete extxyz file") from exc
        if not got:
            raise ValueError(f"dataset file {path} holds no frames")
        frames.extend(got if isinstance(got, list) else [got])
    return frames


_OPENERS = {".xz": "lzma", ".gz": "gzip", ".bz2": "bz2"}


def _read_extxyz(path: Path) -> list[Atoms]:
    """Read every frame; compressed files are decompressed into memory first, because ASE's
    extxyz reader seeks frame by frame, which re-decompresses from the start each time."""
    import importlib
    import io

    import ase.io

    module = _OPENERS.get(path.suffix)
    if module is None:
        return ase.io.read(str(path), index=":")
    with importlib.import_module(module).open(path, "rt") as fh:
        text = fh.read()
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")


def dataset_sha256(paths: str | Path | Sequence[str | Path]) -> str:
    """sha256 of a dataset file's bytes (of the files' bytes in order, for several files)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def frame_labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(energy, forces, stress-or-None) of a frame, from its calculator or its info/arrays."""
    calc = atoms.calc
    energy = forces = stress = None
    if calc is not None:
        res = getattr(calc, "results", {})
        energy = res.get("energy", res.get("free_energy"))
        forces = res.get("forces")
        stress = res.get("stress")
    if energy is None:
        energy = atoms.info.get("energy", atoms.info.get("REF_energy"))
    if forces is None:
        forces = atoms.arrays.get("forces", atoms.arrays.get("REF_forces"))
    if stress is None:
        stress = atoms.info.get("stress", atoms.info.get("REF_stress"))
    if energy is None or forces is None:
        raise ValueError(
            f"frame {atoms.get_chemical_formula()} (trajectory {atoms.info.get('trajectory')!r}) lacks an energy or forces label"
        )
    forces = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64).reshape(-1)
        if stress.shape == (9,):
            s = stress.reshape(3, 3)
            stress = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if stress.shape != (6,) or not np.isfinite(stress).all():
            stress = None
    if stress is not None and (atoms.cell.rank != 3 or not atoms.pbc.all()):
        stress = None  # stress is only meaningful for a fully periodic cell
    return float(energy), forces, stress


def frame_group(atoms: Atoms) -> str:
    """The split unit of a frame: its ``trajectory`` id, else its ``config_type``, else ``"default"``."""
    for key in ("trajectory", "config_type"):
        value = atoms.info.get(key)
        if value is not None and str(value) != "":
            return f"{key}:{value}"
    return "default"


# -- graphs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    """One labelled frame as model inputs (numpy, float64)."""

    positions: np.ndarray  # [N, 3]
    species: np.ndarray  # [N] int64
    edge_index: np.ndarray  # [2, E] int64
    shifts: np.ndarray  # [E, 3] Cartesian
    energy: float
    forces: np.ndarray  # [N, 3]
    stress: np.ndarray | None  # [6] Voigt, ASE sign (eV/Å³), None when absent
    volume: float  # Å³ (0 when the cell is not of rank 3)
    config_type: str
    group: str

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


def species_index(elements: Sequence[str]) -> np.ndarray:
    """Lookup table atomic number -> model species index (-1 for unknown)."""
    table = np.full(119, -1, dtype=np.int64)
    for k, symbol in enumerate(elements):
        table[atomic_numbers[symbol]] = k
    return table


def shortest_pair_distances(graphs: Sequence[Graph], num_species: int) -> np.ndarray:
    """The shortest distance (Å) between atoms of each species pair ``[S, S]`` over ``graphs``
    (``inf`` for a pair never within the cutoff): where the short-range prior must be off."""
    out = np.full((num_species, num_species), np.inf)
    for g in graphs:
        if g.num_edges == 0:
            continue
        i, j = g.edge_index
        d = np.linalg.norm(g.positions[j] - g.positions[i] + g.shifts, axis=1)
        np.minimum.at(out, (g.species[i], g.species[j]), d)
    return np.minimum(out, out.T)


def to_graphs(frames: Iterable[Atoms], elements: Sequence[str], cutoff: float) -> list[Graph]:
    """Graphs (edges within ``cutoff``, Cartesian shifts) for labelled frames."""
    table = species_index(elements)
    graphs = []
    for n, atoms in enumerate(frames):
        species = table[atoms.numbers]
        if (species < 0).any():
            unknown = sorted(set(atoms.symbols[species < 0]))
            raise ValueError(f"frame {n}: element(s) {', '.join(unknown)} not in the model's elements {list(elements)}")
        energy, forces, stress = frame_labels(atoms)
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
            bad = "energy" if not np.isfinite(energy) else "forces" if not np.isfinite(forces).all() else "positions"
            raise ValueError(f"frame {n} ({atoms.get_chemical_formula()}, trajectory {atoms.info.get('trajectory')!r}): "
                             f"non-finite {bad}; a label or input that is NaN or infinite is never used")
        edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        volume = float(atoms.get_volume()) if atoms.cell.rank == 3 else 0.0
        graphs.append(
            Graph(
                positions=np.asarray(atoms.positions, dtype=np.float64),
                species=species,
                edge_index=edges.index,
                shifts=edges.shifts(atoms.cell.array),
                energy=energy,
                forces=forces,
                stress=stress,
                volume=volume,
                config_type=str(atoms.info.get("config_type", "default")),
                group=frame_group(atoms),
            )
        )
    return graphs


# -- batches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Several graphs concatenated: the model's inputs plus labels and per-structure indices."""

    positions: torch.Tensor  # [N, 3]
    species: torch.Tensor  # [N]
    edge_index: torch.Tensor  # [2, E]
    shifts: torch.Tensor  # [E, 3]
    energy_mask: torch.Tensor  # [N] bool (all true)
    batch: torch.Tensor  # [N] structure index of each atom
    num_atoms: torch.Tensor  # [B] atoms per structure (int64)
    energy: torch.Tensor  # [B]
    forces: torch.Tensor  # [N, 3]
    stress: torch.Tensor  # [B, 3, 3] (zeros where absent), ASE sign, eV/Å³
    stress_mask: torch.Tensor  # [B] bool
    volume: torch.Tensor  # [B] (1 where the cell has no volume)

    @property
    def num_structures(self) -> int:
        return int(self.num_atoms.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """``(positions, species, edge_index, shifts, energy_mask)`` for the model."""
        return self.positions, self.species, self.edge_index, self.shifts, self.energy_mask


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """Voigt (xx, yy, zz, yz, xz, xy) -> symmetric 3x3."""
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def collate(graphs: Sequence[Graph], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Batch:
    """Concatenate graphs into one :class:`Batch` (edge indices offset per structure)."""
    if not graphs:
        raise ValueError("cannot collate an empty list of graphs")
    counts = np.array([g.num_atoms for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    stress = np.zeros((len(graphs), 3, 3))
    mask = np.zeros(len(graphs), dtype=bool)
    for k, g in enumerate(graphs):
        if g.stress is not None:
            stress[k] = voigt_to_matrix(g.stress)
            mask[k] = True

    def f(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    def i(x):
        return torch.as_tensor(x, dtype=torch.int64, device=device)

    n = int(counts.sum())
    return Batch(
        positions=f(np.concatenate([g.positions for g in graphs])),
        species=i(np.concatenate([g.species for g in graphs])),
        edge_index=i(np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets)], axis=1)),
        shifts=f(np.concatenate([g.shifts for g in graphs])),
        energy_mask=torch.ones(n, dtype=torch.bool, device=device),
        batch=i(np.repeat(np.arange(len(graphs)), counts)),
        num_atoms=i(counts),
        energy=torch.as_tensor([g.energy for g in graphs], dtype=torch.float64, device=device).to(dtype),
        forces=f(np.concatenate([g.forces for g in graphs])),
        stress=f(stress),
        stress_mask=torch.as_tensor(mask, device=device),
        volume=f([g.volume if g.volume > 0 else 1.0 for g in graphs]),
    )


# -- splitting -------------------------------------------------------------------------------


def split_by_group(groups: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train/val frame indices with whole groups (trajectories) on one side, never split.

    Groups are shuffled deterministically with ``seed`` and moved to validation until it holds
    at least ``val_fraction`` of the frames. With a single group there is nothing to hold out
    by trajectory and a ValueError explains that.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(
            f"all {len(groups)} frames belong to one trajectory/config_type ({names[0] if names else None!r}); "
            "cannot hold out whole trajectories: label frames with info['trajectory'] or give a separate val file"
        )
    rng = np.random.default_rng(seed)
    order = [names[k] for k in rng.permutation(len(names))]
    sizes = {name: 0 for name in names}
    for g in groups:
        sizes[g] += 1
    target = val_fraction * len(groups)
    val_groups: set[str] = set()
    held = 0
    for name in order:
        if held >= target or len(val_groups) == len(names) - 1:
            break
        val_groups.add(name)
        held += sizes[name]
    train = [k for k, g in enumerate(groups) if g not in val_groups]
    val = [k for k, g in enumerate(groups) if g in val_groups]
    return train, val


# -- statistics ------------------------------------------------------------------------------


def fit_reference_energies(graphs: Sequence[Graph], num_elements: int) -> np.ndarray:
    """Per-element energies (eV) minimising ``sum_frames (E - sum_k n_k e_k)^2`` (least squares).

    Elements absent from the data get 0.
    """
    counts = np.zeros((len(graphs), num_elements))
    for row, g in enumerate(graphs):
        counts[row] = np.bincount(g.species, minlength=num_elements)
    energies = np.array([g.energy for g in graphs])
    present = counts.sum(0) > 0
    ref = np.zeros(num_elements)
    sol, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    ref[present] = sol
    return ref


def average_num_neighbors(graphs: Sequence[Graph]) -> float:
    """Mean number of neighbours within the cutoff per atom."""
    atoms = sum(g.num_atoms for g in graphs)
    return float(sum(g.num_edges for g in graphs)) / max(atoms, 1)


def force_rms(graphs: Sequence[Graph]) -> float:
    """Root mean square of the force components (eV/Å): the scale of the per-atom energy readout."""
    total = sum(float(np.square(g.forces).sum()) for g in graphs)
    n = sum(3 * g.num_atoms for g in graphs)
    return float(np.sqrt(total / max(n, 1)))
