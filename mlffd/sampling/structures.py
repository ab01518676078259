"""The plan of teacher trajectories and their start structures (seeds, strain, defects, slabs)."""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from mlffd.neighbors import neighbor_list
from mlffd.sampling.config import CONFIG_TYPES_BY_SURFACE, SampleConfig, SeedConfig, TaskConfig

@dataclass(frozen=True)
class Trajectory:
    """One teacher run: a task at one temperature, one repeat, one split."""

    id: str
    task: TaskConfig
    temperature: float
    repeat: int
    split: str  #: "train" | "test"

    @property
    def evaluations(self) -> int:
        """Teacher evaluations this trajectory will cost (upper bound for the copies)."""
        t = self.task
        if t.kind == "single":
            return t.steps
        md = t.equilibrate + t.steps + 1
        if t.kind == "melt_quench":
            md += t.melt_steps + t.quench_steps + t.anneal_steps
        return md + t.copies * self.max_kept

    @property
    def max_kept(self) -> int:
        t = self.task
        if t.kind == "single":
            return t.steps
        n = t.steps // t.sample_every
        if t.kind == "melt_quench":
            n += (t.quench_steps + t.anneal_steps) // t.sample_every
        return min(n, t.max_frames) if t.max_frames is not None else n


def _spread(values: Sequence[float]) -> list[float]:
    """Reorder so that any prefix spans the range: first, last, then repeated bisection.

    ``[300, 600, 900, 1200, 1500]`` -> ``[300, 1500, 900, 600, 1200]``; a run stopped early still
    has the ends of each temperature ladder.
    """
    n = len(values)
    if n <= 2:
        return list(values)
    order = [0, n - 1]
    intervals = [(0, n - 1)]
    while len(order) < n:
        nxt = []
        for lo, hi in intervals:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                order.append(mid)
                nxt += [(lo, mid), (mid, hi)]
        intervals = nxt
    return [values[i] for i in order]


def plan(config: SampleConfig) -> list[Trajectory]:
    """All trajectories of a run, in execution order (deterministic).

    ``order: interleave`` runs the tasks round-robin and each temperature ladder ends-first
    (see :func:`_spread`), so an early stop still covers every task and temperature range.
    """
    per_task: list[list[Trajectory]] = []
    for task in config.tasks:
        units = []
        for r in range(max(task.repeats, task.test_repeats)):
            for temp in _spread(task.temperatures) if config.order == "interleave" else task.temperatures:
                for split, n in (("train", task.repeats), ("test", task.test_repeats)):
                    if r < n:
                        tid = f"{task.name}/{split}{r}/T{float(temp):g}"
                        units.append(Trajectory(tid, task, float(temp), r, split))
        per_task.append(units)
    if config.order == "listed":
        return [u for units in per_task for u in units]
    out: list[Trajectory] = []
    for k in range(max((len(u) for u in per_task), default=0)):
        out.extend(units[k] for units in per_task if k < len(units))
    return out


# ---------------------------------------------------------------------------------------------
# structures
# ---------------------------------------------------------------------------------------------


def build_seed(seed: SeedConfig) -> Atoms:
    """The seed structure (supercell applied), periodic in all directions unless read from a file."""
    if seed.file is not None:
        from ase.io import read

        atoms = read(seed.file)
    else:
        from ase.build import bulk

        kw: dict[str, Any] = {"crystalstructure": seed.crystal, "cubic": seed.cubic}
        if seed.a is not None:
            kw["a"] = seed.a
        atoms = bulk(seed.symbol, **kw)
    atoms = atoms * tuple(int(n) for n in seed.supercell)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def random_strain(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A symmetric 3x3 strain with components uniform in ±amplitude."""
    e = rng.uniform(-amplitude, amplitude, size=(3, 3))
    return 0.5 * (e + e.T)


def apply_strain(atoms: Atoms, strain: np.ndarray) -> None:
    """Deform the cell by ``1 + strain``, positions scaled with it (in place)."""
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)


def _largest_void(atoms: Atoms, rng: np.random.Generator, n_trial: int = 2000) -> np.ndarray:
    """A point of the cell far from all atoms (best of random trial points), for an interstitial."""
    frac = rng.random((n_trial, 3))
    pts = frac @ atoms.cell.array
    probe = Atoms(
        numbers=np.concatenate([atoms.numbers, np.zeros(n_trial, dtype=int)]),
        positions=np.concatenate([atoms.positions, pts]),
        cell=atoms.cell,
        pbc=atoms.pbc,
    )
    n = len(atoms)
    edges = neighbor_list(probe.positions, probe.cell.array, probe.pbc, 4.0)
    mask = (edges.i >= n) & (edges.j < n)
    d = np.linalg.norm(probe.positions[edges.j[mask]] - probe.positions[edges.i[mask]] + edges.shifts(probe.cell.array)[mask], axis=1)
    nearest = np.full(n_trial, 4.0)
    np.minimum.at(nearest, edges.i[mask] - n, d)
    return pts[int(np.argmax(nearest))]


def default_config_type(task: TaskConfig) -> str:
    if task.config_type:
        return task.config_type
    if task.surface is not None:
        hkl = tuple(int(abs(h)) for h in task.surface)
        return CONFIG_TYPES_BY_SURFACE.get(hkl, "surface" + "".join(map(str, hkl)))
    if task.interstitials:
        return "interstitial"
    if task.vacancies:
        return "vacancy"
    if task.strain > 0:
        return "strained"
    return "crystal"


def start_structure(task: TaskConfig, seed: Atoms, rng: np.random.Generator) -> Atoms:
    """Apply the task's modifiers (surface, defects, strain, rattle) to a copy of the seed."""
    atoms = seed.copy()
    if task.surface is not None:
        from ase.build import surface

        slab = surface(atoms, tuple(int(h) for h in task.surface), int(task.surface_layers), vacuum=task.vacuum, periodic=True)
        slab = slab * (int(task.surface_repeat[0]), int(task.surface_repeat[1]), 1)
        atoms = Atoms(numbers=slab.numbers, positions=slab.positions, cell=slab.cell, pbc=True)
    for _ in range(int(task.vacancies)):
        del atoms[int(rng.integers(len(atoms)))]
    for _ in range(int(task.interstitials)):
        pos = _largest_void(atoms, rng)
        atoms += Atoms(numbers=[int(rng.choice(atoms.numbers))], positions=[pos])
    if task.strain > 0:
        apply_strain(atoms, random_strain(rng, task.strain))
    if task.rattle > 0:
        atoms.positions += rng.normal(0.0, task.rattle, size=atoms.positions.shape)
    return atoms


# ---------------------------------------------------------------------------------------------
# frames, descriptor, selection
# ---------------------------------------------------------------------------------------------
