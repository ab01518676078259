"""Teacher-driven sampling: explore configurations with a teacher and write a labelled extxyz dataset.

A run expands the config's tasks into *trajectories* (one teacher run each: a task at one
temperature, one repeat, one split). Each trajectory builds its start structure from a seed
(optionally strained, rattled, with vacancies/interstitials, or cut into a slab), runs teacher MD
(NVT Langevin or NPT Berendsen; or melt → liquid → quench → anneal; or single points only),
keeps every ``sample_every``-th frame, drops near-duplicates by farthest-point sampling on a cheap
descriptor, and adds rattled/strained copies of the kept frames (one teacher evaluation each).

Output, per split (``train``/``test``): an extxyz file whose frames carry energy, forces and
stress (ASE SinglePointCalculator; Voigt order, ASE sign) and ``info`` keys ``config_type``,
``trajectory`` (the trajectory id; test trajectories are separate teacher runs), ``teacher``
(spec), ``teacher_sha256`` (when a checkpoint file is involved), ``temperature`` (K) and ``step``;
a sidecar ``FILE.provenance.json``; and a progress record ``progress.jsonl`` in the output
directory. Frames are appended after each finished trajectory; a killed run keeps every finished
trajectory and continues with the next one when started again.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlffd.neighbors import neighbor_list

__all__ = [
    "SeedConfig",
    "TaskConfig",
    "SampleConfig",
    "Trajectory",
    "SampleResult",
    "load_config",
    "plan",
    "run_sampling",
    "descriptor",
    "select_frames",
    "build_seed",
]

FORMAT_VERSION = 1
CONFIG_TYPES_BY_SURFACE = {(1, 0, 0): "surface100", (1, 1, 0): "surface110", (1, 1, 1): "surface111"}


# ---------------------------------------------------------------------------------------------
# configuration (frozen dataclasses, mapped 1:1 from YAML/TOML)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedConfig:
    """A seed structure: a file readable by ``ase.io.read`` or a bulk crystal from ``ase.build.bulk``."""

    name: str
    file: str | None = None  #: path (relative to the current directory), read with ase.io.read
    symbol: str | None = None  #: element(s) for ase.build.bulk, e.g. "Si"
    crystal: str = "diamond"  #: crystalstructure for ase.build.bulk
    a: float | None = None  #: lattice constant (Å); None uses ASE's reference value
    cubic: bool = True
    supercell: tuple[int, int, int] = (1, 1, 1)


@dataclass(frozen=True)
class TaskConfig:
    """One kind of teacher run; it expands to ``len(temperatures) * (repeats + test_repeats)`` trajectories.

    kind:
        ``md``: equilibrate, then ``steps`` MD steps sampled every ``sample_every``.
        ``melt_quench``: melt at ``melt_temperature`` (``melt_steps``, not kept), liquid at each of
        ``temperatures`` for ``steps`` (``liquid``), quench linearly to ``quench_temperature`` over
        ``quench_steps`` and anneal ``anneal_steps`` there (both ``amorphous``).
        ``single``: ``steps`` randomly rattled/strained copies of the start structure, no MD.
    """

    name: str
    seed: str  #: name of a SeedConfig
    kind: str = "md"
    config_type: str | None = None  #: default: crystal/strained/vacancy/interstitial/surfaceHKL/liquid/amorphous
    ensemble: str = "nvt"  #: nvt (Langevin) | npt (anisotropic Berendsen)
    temperatures: tuple[float, ...] = (300.0,)
    repeats: int = 1  #: training trajectories per temperature
    test_repeats: int = 0  #: extra, independent trajectories per temperature for the test file
    steps: int = 100
    equilibrate: int = 20  #: MD steps before sampling starts (not kept)
    sample_every: int = 5
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.02  #: Langevin friction
    pressure_gpa: float = 0.0  #: npt target pressure
    taut_fs: float = 100.0  #: npt thermostat time
    taup_fs: float = 500.0  #: npt barostat time
    bulk_modulus_gpa: float = 100.0  #: npt barostat compressibility = 1 / bulk modulus
    # start-structure modifiers
    strain: float = 0.0  #: random symmetric strain, components uniform in ±strain, applied to the start cell
    rattle: float = 0.0  #: Gaussian displacement (Å) of the start positions
    vacancies: int = 0
    interstitials: int = 0
    surface: tuple[int, int, int] | None = None  #: Miller indices; cut a slab from the seed
    surface_layers: int = 2  #: ase.build.surface layers (of the seed cell)
    surface_repeat: tuple[int, int] = (1, 1)
    vacuum: float = 8.0  #: Å on each side of the slab (the cell stays periodic)
    # melt-quench
    melt_temperature: float = 3000.0
    melt_steps: int = 100
    quench_temperature: float = 300.0
    quench_steps: int = 100
    anneal_steps: int = 50
    # frame selection
    max_frames: int | None = None  #: keep at most this many MD frames per trajectory (farthest-point)
    min_distance: float = 0.0  #: drop frames closer than this (descriptor distance) to a kept one
    # perturbed copies of each kept frame (one teacher evaluation each)
    copies: int = 0
    copy_rattle: float = 0.03  #: Å
    copy_strain: float = 0.03  #: random strain components in ±copy_strain
    copy_config_type: str | None = None  #: default: "strained" for crystal frames with copy_strain > 0, else parent's


@dataclass(frozen=True)
class SampleConfig:
    """A sampling run: teacher, seeds, tasks, outputs."""

    teacher: str
    seeds: tuple[SeedConfig, ...]
    tasks: tuple[TaskConfig, ...]
    output_dir: str = "data"
    train_file: str = "train.extxyz"
    test_file: str = "test.extxyz"
    device: str = "cpu"
    random_seed: int = 0
    threads: int | None = None  #: torch.set_num_threads for the run (None leaves it)
    order: str = "interleave"  #: interleave tasks round-robin (coverage early) or "listed"
    descriptor_cutoff: float = 5.0  #: Å, for the frame-selection descriptor
    max_force: float = 50.0  #: eV/Å; frames with a larger (or non-finite) force or energy are dropped

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SampleConfig":
        """Strict mapping from a plain dict (as loaded from YAML/TOML); unknown keys are errors."""
        data = dict(data)
        seeds = tuple(_from_dict(SeedConfig, s, "seeds[]") for s in data.pop("seeds", []) or [])
        tasks = tuple(_from_dict(TaskConfig, t, "tasks[]") for t in data.pop("tasks", []) or [])
        cfg = _from_dict(cls, {**data, "seeds": seeds, "tasks": tasks}, "sample config")
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """ValueError on inconsistent settings (names, kinds, counts)."""
        seed_names = [s.name for s in self.seeds]
        if len(set(seed_names)) != len(seed_names):
            raise ValueError(f"seed names must be unique, got {seed_names}")
        for s in self.seeds:
            if (s.file is None) == (s.symbol is None):
                raise ValueError(f"seed {s.name!r}: give exactly one of 'file' or 'symbol'")
        task_names = [t.name for t in self.tasks]
        if len(set(task_names)) != len(task_names):
            raise ValueError(f"task names must be unique, got {task_names}")
        if not self.tasks:
            raise ValueError("sample config has no tasks")
        if self.order not in ("interleave", "listed"):
            raise ValueError(f"order must be 'interleave' or 'listed', got {self.order!r}")
        if Path(self.train_file).name == Path(self.test_file).name:
            raise ValueError("train_file and test_file must differ")
        for t in self.tasks:
            where = f"task {t.name!r}"
            if t.seed not in seed_names:
                raise ValueError(f"{where}: unknown seed {t.seed!r}; seeds are {seed_names}")
            if t.kind not in ("md", "melt_quench", "single"):
                raise ValueError(f"{where}: kind must be md, melt_quench or single, got {t.kind!r}")
            if t.ensemble not in ("nvt", "npt"):
                raise ValueError(f"{where}: ensemble must be nvt or npt, got {t.ensemble!r}")
            if t.kind == "melt_quench" and t.ensemble != "nvt":
                raise ValueError(f"{where}: melt_quench runs NVT")
            if t.sample_every < 1 or t.steps < 0 or t.equilibrate < 0 or t.repeats < 0 or t.test_repeats < 0:
                raise ValueError(f"{where}: sample_every >= 1 and steps, equilibrate, repeats, test_repeats >= 0")
            if not t.temperatures:
                raise ValueError(f"{where}: temperatures is empty")
            if t.timestep_fs <= 0:
                raise ValueError(f"{where}: timestep_fs must be > 0")
            if t.surface is not None and len(t.surface) != 3:
                raise ValueError(f"{where}: surface must be three Miller indices")


def _from_dict(cls, data: Any, where: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def load_config(path: str | Path) -> SampleConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sampling config."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    data = data.get("sample", data)  # allow a [sample] section inside a larger config
    try:
        return SampleConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# planning: tasks -> trajectories
# ---------------------------------------------------------------------------------------------


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


def labelled_frame(atoms: Atoms, calc_results: dict[str, Any], info: dict[str, Any]) -> Atoms:
    """A clean copy of ``atoms`` holding the teacher's energy, forces, stress (SinglePointCalculator)."""
    frame = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())
    energy = float(calc_results["energy"])
    kw: dict[str, Any] = {"energy": energy, "free_energy": float(calc_results.get("free_energy", energy))}
    kw["forces"] = np.asarray(calc_results["forces"], dtype=np.float64).reshape(len(frame), 3).copy()
    if calc_results.get("stress") is not None:
        stress = np.asarray(calc_results["stress"], dtype=np.float64)
        if stress.shape == (3, 3):
            from ase.stress import full_3x3_to_voigt_6_stress

            stress = full_3x3_to_voigt_6_stress(stress)
        kw["stress"] = stress.reshape(6).copy()
    frame.calc = SinglePointCalculator(frame, **kw)
    frame.info.update(info)
    return frame


def evaluate(atoms: Atoms, calc) -> dict[str, Any]:
    """Teacher energy, forces and stress of ``atoms`` (one evaluation; stress only for 3-D cells)."""
    atoms.calc = calc
    out: dict[str, Any] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    out["free_energy"] = calc.results.get("free_energy", out["energy"])
    if atoms.cell.rank == 3:
        out["stress"] = atoms.get_stress(voigt=True)
    return out


def descriptor(atoms: Atoms, cutoff: float = 5.0, bins: int = 40, width: float = 0.1) -> np.ndarray:
    """Cheap per-structure descriptor: Gaussian-smeared pair-distance histogram per atom plus E/atom.

    The histogram (neighbours per atom per bin) captures density, coordination and disorder; the
    last entry is the energy per atom in units of 10 meV (only when the frame has an energy).
    """
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    d = np.linalg.norm(atoms.positions[edges.j] - atoms.positions[edges.i] + edges.shifts(atoms.cell.array), axis=1)
    centres = np.linspace(0.0, cutoff, bins)
    hist = np.exp(-0.5 * ((d[:, None] - centres[None, :]) / width) ** 2).sum(0) / max(len(atoms), 1)
    hist *= width * np.sqrt(2 * np.pi) / (centres[1] - centres[0])  # ~ counts per bin
    e = 0.0
    if atoms.calc is not None and "energy" in getattr(atoms.calc, "results", {}):
        e = float(atoms.calc.results["energy"]) / len(atoms) / 0.01
    return np.concatenate([hist, [e]])


def select_frames(descriptors: np.ndarray, n: int | None = None, min_distance: float = 0.0) -> list[int]:
    """Farthest-point selection: indices (in selection order) of up to ``n`` mutually distant rows.

    Starts from row 0 (the first sampled frame) and repeatedly adds the row farthest from those
    chosen; stops at ``n`` rows or when the farthest remaining row is closer than ``min_distance``
    (so exact and near duplicates are dropped).
    """
    x = np.asarray(descriptors, dtype=np.float64)
    m = len(x)
    if m == 0:
        return []
    n = m if n is None else min(int(n), m)
    if n <= 0:
        return []
    chosen = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    while len(chosen) < n:
        k = int(np.argmax(dist))
        if dist[k] <= min_distance:
            break
        chosen.append(k)
        dist = np.minimum(dist, np.linalg.norm(x - x[k], axis=1))
    return chosen


# ---------------------------------------------------------------------------------------------
# running one trajectory
# ---------------------------------------------------------------------------------------------


def _sane_results(res: dict[str, Any], max_force: float) -> bool:
    forces = np.asarray(res["forces"], dtype=np.float64)
    ok = np.isfinite(res["energy"]) and np.isfinite(forces).all() and float(np.abs(forces).max(initial=0.0)) <= max_force
    return bool(ok and (res.get("stress") is None or np.isfinite(res["stress"]).all()))


def _sane(frame: Atoms, max_force: float) -> bool:
    return _sane_results(frame.calc.results, max_force)


def _make_dynamics(atoms: Atoms, task: TaskConfig, temperature: float, rng: np.random.Generator):
    dt = task.timestep_fs * units.fs
    if task.ensemble == "npt":
        from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen

        return Inhomogeneous_NPTBerendsen(
            atoms,
            timestep=dt,
            temperature_K=temperature,
            pressure_au=task.pressure_gpa * units.GPa,
            taut=task.taut_fs * units.fs,
            taup=task.taup_fs * units.fs,
            compressibility_au=1.0 / (task.bulk_modulus_gpa * units.GPa),
        )
    from ase.md.langevin import Langevin

    return Langevin(atoms, dt, temperature_K=temperature, friction=task.friction_per_fs / units.fs, fixcm=False, rng=rng)


def _set_temperature(dyn, temperature: float) -> None:
    dyn.set_temperature(temperature_K=temperature)



def _perturbed_copy(trial: Atoms, task, rng) -> Atoms:
    """``trial`` strained (random, up to ``task.copy_strain``) and rattled (``task.copy_rattle`` Å)."""
    if task.copy_strain > 0:
        apply_strain(trial, random_strain(rng, task.copy_strain))
    if task.copy_rattle > 0:
        trial.positions += rng.normal(0.0, task.copy_rattle, size=trial.positions.shape)
    return trial

def run_trajectory(
    traj: Trajectory,
    seed_atoms: Atoms,
    calc,
    teacher_tags: dict[str, Any],
    random_seed: int = 0,
    descriptor_cutoff: float = 5.0,
    max_force: float = 50.0,
    on_evaluation: Callable[[int], None] | None = None,
) -> list[Atoms]:
    """Run one teacher trajectory and return its labelled, selected frames (plus perturbed copies)."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    task = traj.task
    rng = np.random.default_rng([int(random_seed), zlib.crc32(traj.id.encode())])
    tick = on_evaluation or (lambda n: None)
    atoms = start_structure(task, seed_atoms, rng)
    base_type = default_config_type(task)
    base_info = {"trajectory": traj.id, **teacher_tags}
    candidates: list[Atoms] = []

    def snap(config_type: str, temperature: float, step: int) -> None:
        if atoms.calc.check_state(atoms) or "forces" not in atoms.calc.results:
            atoms.get_forces()  # results must belong to these positions and this cell
        res = dict(atoms.calc.results)
        if "stress" not in res and atoms.cell.rank == 3:
            res["stress"] = atoms.get_stress(voigt=True)
        candidates.append(
            labelled_frame(atoms, res, {**base_info, "config_type": config_type, "temperature": float(temperature), "step": int(step)})
        )

    if task.kind == "single":
        for k in range(task.steps):
            trial = _perturbed_copy(atoms.copy(), task, rng)
            res = evaluate(trial, calc)
            tick(1)
            if not _sane_results(res, max_force):
                continue
            ctype = task.config_type or ("strained" if task.copy_strain > 0 and base_type == "crystal" else base_type)
            candidates.append(labelled_frame(trial, res, {**base_info, "config_type": ctype, "temperature": 0.0, "step": k}))
        return candidates

    atoms.calc = calc
    if task.kind == "melt_quench":
        start_t = task.melt_temperature
    else:
        start_t = traj.temperature
    MaxwellBoltzmannDistribution(atoms, temperature_K=start_t, rng=rng)
    Stationary(atoms)
    dyn = _make_dynamics(atoms, task, start_t, rng)
    dyn.attach(lambda: tick(1), interval=1)

    step = 0
    if task.kind == "melt_quench":
        dyn.run(task.melt_steps)
        _set_temperature(dyn, traj.temperature)
        dyn.run(task.equilibrate)
        ctype_liquid = task.config_type or "liquid"
        for _ in range(task.steps // task.sample_every):
            dyn.run(task.sample_every)
            step += task.sample_every
            snap(ctype_liquid, traj.temperature, step)
        dyn.run(task.steps % task.sample_every)
        n_q = task.quench_steps
        for k in range(n_q):
            temp = traj.temperature + (task.quench_temperature - traj.temperature) * (k + 1) / n_q
            _set_temperature(dyn, temp)
            dyn.run(1)
            step += 1
            if (k + 1) % task.sample_every == 0:
                snap("amorphous", temp, step)
        _set_temperature(dyn, task.quench_temperature)
        for k in range(task.anneal_steps):
            dyn.run(1)
            step += 1
            if (k + 1) % task.sample_every == 0:
                snap("amorphous", task.quench_temperature, step)
    else:
        dyn.run(task.equilibrate)
        for _ in range(task.steps // task.sample_every):
            dyn.run(task.sample_every)
            step += task.sample_every
            snap(base_type, traj.temperature, step)
        # remaining steps (if steps is not a multiple of sample_every) are not needed

    candidates = [f for f in candidates if _sane(f, max_force)]
    # near-duplicate removal / subsampling (farthest-point on the descriptor)
    if candidates and (task.max_frames is not None or task.min_distance > 0):
        desc = np.stack([descriptor(f, descriptor_cutoff) for f in candidates])
        keep = sorted(select_frames(desc, task.max_frames, task.min_distance))
        candidates = [candidates[i] for i in keep]

    frames = list(candidates)
    for parent in candidates:
        ptype = parent.info["config_type"]
        ctype = task.copy_config_type or ("strained" if task.copy_strain > 0 and ptype == "crystal" else ptype)
        for c in range(task.copies):
            bare = Atoms(numbers=parent.numbers, positions=parent.positions.copy(), cell=parent.cell.array.copy(), pbc=parent.pbc)
            trial = _perturbed_copy(bare, task, rng)
            res = evaluate(trial, calc)
            tick(1)
            if not _sane_results(res, max_force):
                continue
            info = {**base_info, "config_type": ctype, "temperature": parent.info["temperature"], "step": parent.info["step"], "copy": c + 1}
            frames.append(labelled_frame(trial, res, info))
    for f in frames:
        f.info.setdefault("copy", 0)
    return frames


# ---------------------------------------------------------------------------------------------
# the run: outputs, progress record, resume
# ---------------------------------------------------------------------------------------------


@dataclass
class SampleResult:
    """What a call of :func:`run_sampling` did."""

    files: dict[str, Path]
    provenance: dict[str, Path]
    progress: Path
    trajectories_done: int
    trajectories_total: int
    trajectories_run_now: int
    frames: dict[str, int] = field(default_factory=dict)
    config_types: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.trajectories_done == self.trajectories_total


def config_hash(config: SampleConfig) -> str:
    """sha256 of the config minus the parts that cannot change the data (threads, device, output_dir)."""
    d = config.to_dict()
    for k in ("threads", "device", "output_dir"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _read_progress(path: Path) -> tuple[dict | None, list[dict]]:
    if not path.exists():
        return None, []
    header, done = None, []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a kill: ignore it
            if rec.get("type") == "header":
                header = rec
            elif rec.get("type") == "done":
                done.append(rec)
    return header, done


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _append_frames(path: Path, frames: Sequence[Atoms]) -> int:
    """Append frames to an extxyz file, flush + fsync; return the new file size."""
    from ase.io import write

    with open(path, "a") as fh:
        write(fh, list(frames), format="extxyz")
        fh.flush()
        os.fsync(fh.fileno())
    return path.stat().st_size


def _teacher_tags(info: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = {"teacher": str(info["spec"])}
    if info.get("checkpoint_sha256"):
        tags["teacher_sha256"] = str(info["checkpoint_sha256"])
    return tags


def run_sampling(
    config: SampleConfig,
    teacher=None,
    output_dir: str | Path | None = None,
    max_trajectories: int | None = None,
    progress: bool = True,
) -> SampleResult:
    """Run (or resume) a sampling config; returns what was written.

    Args:
        config: the run's configuration.
        teacher: an ASE calculator to use instead of loading ``config.teacher`` (provenance then
            describes that object).
        output_dir: overrides ``config.output_dir``.
        max_trajectories: stop after running this many trajectories in this call (the rest is
            left for a later call, which resumes).
        progress: show tqdm progress bars.
    """
    from tqdm.auto import tqdm

    from mlffd.teachers import load_teacher, teacher_info

    out = Path(output_dir if output_dir is not None else config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": out / config.train_file, "test": out / config.test_file}
    prov_paths = {k: p.with_name(p.name + ".provenance.json") for k, p in files.items()}
    progress_path = out / "progress.jsonl"
    chash = config_hash(config)

    header, done = _read_progress(progress_path)
    if header is None:
        existing = [str(p) for p in files.values() if p.exists() and p.stat().st_size > 0]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} exist(s) but {progress_path} does not: not a resumable run of this config; "
                "remove the files or choose another output directory"
            )
    elif header.get("config_sha256") != chash:
        raise ValueError(
            f"{progress_path} belongs to a different sampling config (sha256 {header.get('config_sha256')}, "
            f"this one {chash}); use another output directory or remove the old run"
        )

    # truncate each output to the size recorded after its last finished trajectory (drops a torn batch)
    for split, path in files.items():
        sizes = [rec["size"] for rec in done if rec["split"] == split]
        size = max(sizes) if sizes else 0
        if path.exists() and path.stat().st_size != size:
            with open(path, "r+b") as fh:
                fh.truncate(size)
        elif not path.exists() and size > 0:
            raise FileNotFoundError(f"{path} is missing but {progress_path} records {len(sizes)} finished trajectories in it")

    calc = load_teacher(teacher if teacher is not None else config.teacher, device=config.device)
    tinfo = teacher_info(calc)  # the adapters attach their provenance (incl. resolved checkpoint) to calc
    tags = _teacher_tags(tinfo)
    if header is None:
        _append_line(
            progress_path,
            {"type": "header", "format_version": FORMAT_VERSION, "config_sha256": chash, "teacher": tinfo,
             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        )

    if config.threads is not None:
        import torch

        torch.set_num_threads(int(config.threads))

    trajectories = plan(config)
    finished = {rec["id"] for rec in done}
    todo = [t for t in trajectories if t.id not in finished]
    if max_trajectories is not None:
        todo = todo[: int(max_trajectories)]
    seeds = {s.name: build_seed(s) for s in config.seeds}

    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for rec in done:
        for k, v in rec.get("config_types", {}).items():
            counts[rec["split"]][k] = counts[rec["split"]].get(k, 0) + v

    def write_provenance() -> None:
        for split, path in prov_paths.items():
            _write_json_atomic(
                path,
                {
                    "format_version": FORMAT_VERSION,
                    "file": files[split].name,
                    "split": split,
                    "teacher": tinfo,
                    "config": config.to_dict(),
                    "config_sha256": chash,
                    "frames": sum(counts[split].values()),
                    "config_types": dict(sorted(counts[split].items())),
                    "trajectories_done": sum(1 for r in done if r["split"] == split),
                    "trajectories": [r["id"] for r in done if r["split"] == split],
                    "trajectories_total": sum(1 for t in trajectories if t.split == split),
                    "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "schema": {
                        "arrays": ["forces (eV/Å)"],
                        "calc": ["energy (eV)", "free_energy (eV)", "stress (eV/Å^3, Voigt xx yy zz yz xz xy, ASE sign)"],
                        "info": ["config_type", "trajectory", "teacher", "teacher_sha256", "temperature (K)", "step", "copy"],
                    },
                },
            )

    total_evals = sum(t.evaluations for t in todo)
    bar = tqdm(total=total_evals, unit="eval", desc="teacher", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    run_now = 0
    try:
        for k, traj in enumerate(todo):
            bar.set_postfix_str(f"{len(finished) + k + 1}/{len(trajectories)} {traj.id}")
            frames = run_trajectory(
                traj, seeds[traj.task.seed], calc, tags, config.random_seed, config.descriptor_cutoff, config.max_force,
                on_evaluation=bar.update,
            )
            size = _append_frames(files[traj.split], frames) if frames else (files[traj.split].stat().st_size if files[traj.split].exists() else 0)
            ctypes: dict[str, int] = {}
            for f in frames:
                ctypes[f.info["config_type"]] = ctypes.get(f.info["config_type"], 0) + 1
            rec = {"type": "done", "id": traj.id, "split": traj.split, "frames": len(frames), "size": size, "config_types": ctypes,
                   "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            _append_line(progress_path, rec)
            done.append(rec)
            for key, v in ctypes.items():
                counts[traj.split][key] = counts[traj.split].get(key, 0) + v
            write_provenance()
            run_now += 1
    finally:
        bar.close()
    write_provenance()

    return SampleResult(
        files=files,
        provenance=prov_paths,
        progress=progress_path,
        trajectories_done=len(done),
        trajectories_total=len(trajectories),
        trajectories_run_now=run_now,
        frames={k: sum(v.values()) for k, v in counts.items()},
        config_types=counts,
    )


def snapshot(output_dir: str | Path, config: SampleConfig | None = None, dest_dir: str | Path | None = None,
             compress: str = "xz") -> dict[str, Path]:
    """Compressed copies of the *finished* part of a (possibly still running) sampling run.

    Each output file is cut at the size recorded after its last finished trajectory, so a batch
    being written right now is never included. ``compress``: ``xz``, ``gz`` or ``none``. Returns
    ``{split: path}``; the provenance sidecars are copied next to them (``NAME.extxyz.provenance.json``).
    """
    import gzip
    import lzma
    import shutil

    out = Path(output_dir)
    dest = Path(dest_dir) if dest_dir is not None else out
    dest.mkdir(parents=True, exist_ok=True)
    names = {"train": (config.train_file if config else "train.extxyz"), "test": (config.test_file if config else "test.extxyz")}
    _, done = _read_progress(out / "progress.jsonl")
    opener = {"xz": lambda p: lzma.open(p, "wb", preset=9), "gz": lambda p: gzip.open(p, "wb", compresslevel=9),
              "none": lambda p: open(p, "wb")}
    if compress not in opener:
        raise ValueError(f"compress must be xz, gz or none, got {compress!r}")
    written: dict[str, Path] = {}
    for split, name in names.items():
        src = out / name
        sizes = [rec["size"] for rec in done if rec["split"] == split]
        if not src.exists() or not sizes:
            continue
        size = max(sizes)
        target = dest / (name + ("" if compress == "none" else f".{compress}"))
        if target.resolve() == src.resolve():
            raise ValueError(f"snapshot target {target} is the live output file")
        tmp = target.with_name(target.name + ".tmp")
        with open(src, "rb") as fin, opener[compress](tmp) as fout:
            remaining = size
            while remaining > 0:
                block = fin.read(min(remaining, 1 << 20))
                if not block:
                    break
                fout.write(block)
                remaining -= len(block)
        os.replace(tmp, target)
        prov = src.with_name(src.name + ".provenance.json")
        if prov.exists() and dest.resolve() != out.resolve():
            shutil.copyfile(prov, dest / prov.name)
        written[split] = target
    return written
