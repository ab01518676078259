"""The plan of teacher trajectories and their start structures (seeds, strain, defects, slabs)."""


from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from mlffd.neighbors import neighbor_list
from mlffd.sampling.config import CONFIG_TYPES_BY_SURFACE, INTERSTITIAL_SITES, PATH_KINDS, SampleConfig, SeedConfig, TaskConfig

@dataclass(frozen=True)
class Trajectory:
    """One teacher run: a task at one temperature, one repeat, one split."""

    id: str
    task: TaskConfig
    temperature: float
    repeat: int
    split: str  #: "train" | "test"
    index: int = 0  #: position among the task's trajectories of this split (where its volume_range stratum lies)
    count: int = 1  #: the task's trajectories in this split
    relaxes: bool = False  #: the run's first trajectory to need its seed's teacher relaxation (which it pays for)

    @property
    def evaluations(self) -> int:
        """Teacher evaluations this trajectory will cost (upper bound for relaxations and copies)."""
        t = self.task
        relax = t.relax_steps + 1 if self.relaxes else 0
        if t.kind in ("single", "cluster"):
            return relax + t.steps
        if t.kind in PATH_KINDS:
            return relax + t.steps + 1 + t.copies * self.max_kept
        md = t.equilibrate + t.steps + 1
        if t.kind == "melt_quench":
            md += t.melt_steps + t.quench_steps + t.anneal_steps
        return relax + md + t.copies * self.max_kept

    @property
    def max_kept(self) -> int:
        t = self.task
        if t.kind in ("single", "cluster"):
            return t.steps
        if t.kind in PATH_KINDS:
            n = t.steps // t.sample_every + 1
        else:
            n = t.steps // t.sample_every
        if t.kind == "melt_quench":
            n += (t.quench_steps + t.anneal_steps) // t.sample_every
        return min(n, t.max_frames) if t.max_frames is not None else n


def relax_key(task: TaskConfig, seed: SeedConfig) -> str:
    """What identifies a teacher relaxation: the seed's cell (without its supercell, which the
    relaxed cell is then repeated to) and the settings; tasks and seeds sharing it share one relaxation."""
    cell = {k: v for k, v in asdict(seed).items() if k not in ("name", "supercell")}
    return json.dumps({**cell, "relax_steps": task.relax_steps, "relax_fmax": task.relax_fmax}, sort_keys=True)


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
    """All trajectories of a run (coverage recipe included), in execution order (deterministic).

    ``order: interleave`` runs the tasks round-robin and each temperature ladder ends-first
    (see :func:`_spread`), so an early stop still covers every task and temperature range. The
    first trajectory of a task with ``relax`` on a seed not yet relaxed carries that relaxation's cost.
    """
    config = config.expanded()
    per_task: list[list[Trajectory]] = []
    for task in config.tasks:
        units = []
        n_t = len(task.temperatures)
        order = _spread(list(range(n_t))) if config.order == "interleave" else list(range(n_t))
        for r in range(max(task.repeats, task.test_repeats)):
            for k in order:
                temp = task.temperatures[k]
                for split, n in (("train", task.repeats), ("test", task.test_repeats)):
                    if r < n:
                        tid = f"{task.name}/{split}{r}/T{float(temp):g}"
                        units.append(Trajectory(tid, task, float(temp), r, split, index=r * n_t + k, count=n * n_t))
        per_task.append(units)
    if config.order == "listed":
        out = [u for units in per_task for u in units]
    else:
        out = []
        for k in range(max((len(u) for u in per_task), default=0)):
            out.extend(units[k] for units in per_task if k < len(units))
    seeds = {s.name: s for s in config.seeds}
    relaxed: set[str] = set()
    for i, traj in enumerate(out):
        key = relax_key(traj.task, seeds[traj.task.seed]) if traj.task.relax else None
        if key is not None and key not in relaxed:
            relaxed.add(key)
            out[i] = replace(traj, relaxes=True)
    return out


# ---------------------------------------------------------------------------------------------
# structures
# ---------------------------------------------------------------------------------------------


def build_seed(seed: SeedConfig, unit: bool = False, base_dir: str = "") -> Atoms:
    """The seed structure (supercell applied unless ``unit``), periodic in all directions unless
    read from a file (a relative ``file`` is read from ``base_dir``, the config file's folder) or a
    molecule from ``smiles`` (no cell, not periodic; ``info['conformers']`` and ``info['bonds']``).
    ``info['seed_kind']`` is the seed's :attr:`SeedConfig.kind`."""
    if seed.smiles is not None:
        from mlffd.sampling.molecules import molecule_from_smiles

        atoms = molecule_from_smiles(seed.smiles, seed.conformers, f"seed {seed.name!r}")
        atoms.info["seed_kind"] = "smiles"
        return atoms
    if seed.molecules is not None:
        import zlib

        from mlffd.sampling.boxes import pack_box

        # the packing is a function of the seed alone, so a resumed run starts from the same box
        rng = np.random.default_rng(zlib.crc32(json.dumps(asdict(seed), sort_keys=True).encode()))
        atoms = pack_box(seed.molecules, seed.counts, seed.density, seed.packing_distance, rng, f"seed {seed.name!r}")
        atoms.info["seed_kind"] = "box"
        return atoms
    if seed.file is not None:
        from pathlib import Path

        from ase.io import read

        path = Path(seed.file)
        atoms = read(path if path.is_absolute() or not base_dir else Path(base_dir) / path)
    elif seed.prototype is not None:
        from mlffd.prototypes import prototype

        atoms = prototype(seed.prototype, seed.symbol)
        if seed.a is not None:
            atoms.set_cell(atoms.cell.array * (seed.a / atoms.cell.lengths()[0]), scale_atoms=True)
    else:
        from ase.build import bulk

        kw: dict[str, Any] = {"crystalstructure": seed.crystal, "cubic": seed.cubic}
        if seed.a is not None:
            kw["a"] = seed.a
        atoms = bulk(seed.symbol, **kw)
    atoms = atoms if unit else repeat(atoms, seed.supercell)
    atoms.info["seed_kind"] = seed.kind
    return atoms


def repeat(atoms: Atoms, supercell: Sequence[int]) -> Atoms:
    """``atoms`` repeated ``supercell`` times, as a clean Atoms (no info, constraints or calculator)."""
    atoms = atoms * tuple(int(n) for n in supercell)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def random_strain(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A symmetric 3x3 strain with components uniform in ±amplitude."""
    e = rng.uniform(-amplitude, amplitude, size=(3, 3))
    return 0.5 * (e + e.T)


def symmetric_strain(atoms: Atoms, strain: np.ndarray, symprec: float = 1e-3) -> np.ndarray:
    """``strain`` averaged over the point group of ``atoms``' space group (spglib): the part of it
    that keeps every symmetry (for hexagonal and tetragonal cells a change of c/a and volume, for
    cubic ones a change of volume only)."""
    try:
        import spglib
    except ImportError as exc:
        raise ImportError("keep_symmetry needs spglib: pip install 'mlffd[properties]'") from exc

    cell = atoms.cell.array
    data = spglib.get_symmetry((cell, atoms.get_scaled_positions(), atoms.numbers), symprec=symprec)
    if data is None:
        raise ValueError("spglib found no symmetry for the start structure")
    inv = np.linalg.inv(cell)
    # spglib's rotations act on fractional coordinates; r = cell.T @ x, so in Cartesian R = cell.T W cell^-T
    rotations = [cell.T @ w @ inv.T for w in data["rotations"]]
    return sum(r @ strain @ r.T for r in rotations) / len(rotations)


def apply_strain(atoms: Atoms, strain: np.ndarray) -> None:
    """Deform the cell by ``1 + strain``, positions scaled with it (in place)."""
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)


def set_volume(atoms: Atoms, volume: float) -> None:
    """Scale the cell isotropically (positions with it) to ``volume`` Å^3 (in place)."""
    atoms.set_cell(atoms.cell.array * (volume / abs(atoms.cell.volume)) ** (1.0 / 3.0), scale_atoms=True)


def volume_scale(task: TaskConfig, index: int, count: int, rng: np.random.Generator) -> float:
    """A draw from stratum ``index`` of ``count`` equal strata of ``task.volume_range``, so that
    ``count`` draws cover the range evenly."""
    lo, hi = task.volume_range
    return lo + (index + float(rng.random())) / max(count, 1) * (hi - lo)


#: an ``open`` interstitial site is any point at least this fraction as far from its nearest atom
#: as the emptiest point found (in diamond Si both the tetrahedral and the hexagonal site qualify)
OPEN_SITE_FRACTION = 0.9


def interstitial_point(atoms: Atoms, rng: np.random.Generator, site: str = "largest", n_trial: int = 2000) -> np.ndarray:
    """Where to add an interstitial atom: of ``n_trial`` random points of the cell, the one farthest
    from every atom (``site="largest"``), or a random one of those at least ``OPEN_SITE_FRACTION``
    as far as that (``site="open"``): relaxations from the other open sites find the basins (and,
    in a student, the false minima) that the emptiest site alone never starts from."""
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
    if site == "largest":
        return pts[int(np.argmax(nearest))]
    if site == "open":
        candidates = np.flatnonzero(nearest >= OPEN_SITE_FRACTION * nearest.max())
        return pts[int(rng.choice(candidates))]
    raise ValueError(f"interstitial site must be one of {INTERSTITIAL_SITES}, got {site!r}")


def default_config_type(task: TaskConfig, volume_scale: float | None = None, seed_kind: str = "crystal",
                        periodic: bool = True) -> str:
    """The frames' config_type unless the task names one (``volume_scale``: the start's, if drawn;
    ``seed_kind`` and ``periodic``: the seed's)."""
    if task.config_type:
        return task.config_type
    if task.twist:
        return "torsion"
    if seed_kind == "box":
        return "molecular_box"
    if seed_kind == "smiles" or not periodic:
        return "molecule"
    if task.kind == "random_search":
        return "random"
    if task.surface is not None:
        hkl = tuple(int(abs(h)) for h in task.surface)
        return CONFIG_TYPES_BY_SURFACE.get(hkl, "surface" + "".join(map(str, hkl)))
    if task.interstitials:
        return "interstitial"
    if task.vacancies:
        return "vacancy"
    if volume_scale is not None:
        return "compressed" if volume_scale < 1.0 else "expanded"
    if task.strain > 0:
        return "strained"
    return "crystal"


def start_structure(task: TaskConfig, seed: Atoms, rng: np.random.Generator, volume: float | None = None) -> Atoms:
    """Apply the task's modifiers (surface, defects, strain, rattle) to a copy of the seed; with
    ``volume`` (Å^3) the cell is scaled to it after the strain, which then changes only its shape."""
    atoms = seed.copy()
    if task.surface is not None:
        from ase.build import surface

        slab = surface(atoms, tuple(int(h) for h in task.surface), int(task.surface_layers), vacuum=task.vacuum, periodic=True)
        slab = slab * (int(task.surface_repeat[0]), int(task.surface_repeat[1]), 1)
        atoms = Atoms(numbers=slab.numbers, positions=slab.positions, cell=slab.cell, pbc=True)
    for _ in range(int(task.vacancies)):
        del atoms[int(rng.integers(len(atoms)))]
    for _ in range(int(task.interstitials)):
        pos = interstitial_point(atoms, rng, task.interstitial_site)
        atoms += Atoms(numbers=[int(rng.choice(atoms.numbers))], positions=[pos])
    if task.strain > 0:
        strain = random_strain(rng, task.strain)
        apply_strain(atoms, symmetric_strain(atoms, strain) if task.keep_symmetry else strain)
    if volume is not None:
        set_volume(atoms, volume)
    if task.rattle > 0:
        atoms.positions += rng.normal(0.0, task.rattle, size=atoms.positions.shape)
    return atoms


# ---------------------------------------------------------------------------------------------
# frames, descriptor, selection
# ---------------------------------------------------------------------------------------------
