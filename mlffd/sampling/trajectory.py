"""One teacher trajectory: MD (NVT/NPT, melt-quench), single points, clusters or a random-search
relaxation; frames selected and perturbed."""


from __future__ import annotations

import warnings
import zlib
from typing import Any, Callable

import numpy as np
from ase import Atoms, units

from mlffd.sampling.config import PATH_KINDS, TaskConfig
from mlffd.sampling.contacts import cluster, push_pair
from mlffd.sampling.frames import (TEACHER_FAILURES, descriptor, evaluate, has_stress, labelled_frame, sane_frame, sane_results,
                                   select_frames)
from mlffd.sampling.structures import (
    Trajectory,
    apply_strain,
    default_config_type,
    random_strain,
    set_volume,
    start_structure,
    volume_scale,
)

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



def _perturbed_copy(trial: Atoms, task: TaskConfig, rng: np.random.Generator, volume: float | None = None) -> tuple[Atoms, float | None]:
    """``trial`` strained (random, up to ``task.copy_strain``; then scaled back to ``volume`` Å^3 if
    given, so the strain only changes the shape), rattled (``task.copy_rattle`` Å) and with
    ``task.push_pairs`` pairs pushed together; returns it and the shortest pushed distance (Å) or None."""
    if task.copy_strain > 0 and has_stress(trial):  # a molecule has no cell to strain
        apply_strain(trial, random_strain(rng, task.copy_strain))
    if volume is not None:
        set_volume(trial, volume)
    if task.copy_rattle > 0:
        trial.positions += rng.normal(0.0, task.copy_rattle, size=trial.positions.shape)
    pushed: list[tuple[int, int]] = []
    distances = [push_pair(trial, rng, task.contact_range, pushed) for _ in range(int(task.push_pairs))]
    distances = [d for d in distances if d is not None]
    return trial, (min(distances) if distances else None)


def _copy_info(contact: float | None) -> dict[str, Any]:
    return {} if contact is None else {"contact_distance": float(contact)}


def _molecule_start(traj: Trajectory, seed_atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """A molecule seed's start: the conformer of this trajectory (:func:`conformer_index`), with
    ``task.twist`` rotatable bonds turned (torsion coverage); other seeds unchanged."""
    from mlffd.sampling.molecules import conformer_index, perceive_bonds

    task = traj.task
    confs = seed_atoms.info.get("conformers")
    atoms = seed_atoms
    if confs is not None:
        k = conformer_index(traj.repeat, traj.index % len(task.temperatures), len(confs))
        atoms = Atoms(numbers=seed_atoms.numbers, positions=confs[k], cell=seed_atoms.cell, pbc=seed_atoms.pbc)
    if task.twist:
        from mlffd.sampling.torsions import twist

        bonds = seed_atoms.info.get("bonds")
        if bonds is None:
            bonds = perceive_bonds(atoms, where=f"task {task.name!r}: seed {task.seed!r}")
        atoms, _ = twist(atoms, bonds, task.twist, rng, seed_atoms.info.get("bond_orders"))
    return atoms


class TrajectoryUnstable(RuntimeError):
    """The teacher's MD left the physical range (force above ``max_force`` or not finite)."""


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
    run = _TrajectoryRun(traj, seed_atoms, calc, teacher_tags, random_seed, max_force, on_evaluation)
    if run.task.kind in ("single", "cluster"):
        return run.points()
    if run.task.kind in PATH_KINDS:
        run.relax()
    else:
        run.molecular_dynamics()
    return _select_and_copy(run.candidates, run.task, calc, run.base_info, descriptor_cutoff, max_force, run.rng, run.tick)


class _TrajectoryRun:
    """One trajectory's state: its random stream (seeded by the run's seed and the trajectory's
    id, so every trajectory is reproducible on its own), start structure and candidate frames."""

    def __init__(self, traj: Trajectory, seed_atoms: Atoms, calc, teacher_tags: dict[str, Any], random_seed: int,
                 max_force: float, on_evaluation: Callable[[int], None] | None) -> None:
        self.traj = traj
        self.task = task = traj.task
        self.seed_atoms = seed_atoms
        self.calc = calc
        self.max_force = max_force
        self.rng = rng = np.random.default_rng([int(random_seed), zlib.crc32(traj.id.encode())])
        self.tick = on_evaluation or (lambda n: None)
        self.base_info = {"trajectory": traj.id, **teacher_tags}
        self.candidates: list[Atoms] = []
        self.seed_volume = abs(seed_atoms.cell.volume) if seed_atoms.cell.rank == 3 else None
        if self.seed_volume is None and (task.volume_range is not None or task.kind == "random_search"):
            raise ValueError(f"task {task.name!r}: volume_range and kind random_search need a seed with a 3-D cell")
        scale = None  # this trajectory's volume scale (kinds with one start structure)
        if task.volume_range is not None and task.kind in ("md", "melt_quench", *PATH_KINDS):
            scale = volume_scale(task, traj.index, traj.count, rng)
        self.atoms: Atoms | None = None  # clusters build each structure afresh
        if task.kind == "random_search":
            from mlffd.sampling.relax import default_min_separation, random_structure

            volume = self.seed_volume * (scale or 1.0)
            min_sep = task.min_separation or default_min_separation(seed_atoms.get_chemical_symbols(), volume / len(seed_atoms))
            self.atoms = random_structure(seed_atoms.numbers, volume, min_sep, rng)
        elif task.kind != "cluster":
            self.atoms = start_structure(task, _molecule_start(traj, seed_atoms, rng), rng,
                                         None if scale is None else scale * self.seed_volume)
        self.seed_kind, self.periodic = seed_atoms.info.get("seed_kind", "crystal"), bool(np.any(seed_atoms.pbc))
        self.base_type = default_config_type(task, scale, self.seed_kind, self.periodic)

    def snap(self, config_type: str, temperature: float, step: int) -> None:
        """Keep the current structure, labelled by the teacher, as a candidate frame."""
        atoms = self.atoms
        if atoms.calc.check_state(atoms) or "forces" not in atoms.calc.results:
            atoms.get_forces()  # results must belong to these positions and this cell
        res = dict(atoms.calc.results)
        if "stress" not in res and has_stress(atoms):
            res["stress"] = atoms.get_stress(voigt=True)
        self.candidates.append(
            labelled_frame(atoms, res, {**self.base_info, "config_type": config_type, "temperature": float(temperature), "step": int(step)})
        )

    def points(self) -> list[Atoms]:
        """Kinds ``single`` and ``cluster``: independent structures, one teacher call each."""
        task, rng = self.task, self.rng
        for k in range(task.steps):
            contact, point_scale = None, None
            if task.kind == "cluster":
                trial = cluster(k, task.steps, self.seed_atoms.numbers.tolist(), task.contact_range, task.vacuum, rng)
                ctype = task.config_type or ("dimer" if len(trial) == 2 else "trimer")
            else:
                if task.volume_range is not None:
                    point_scale = volume_scale(task, k, task.steps, rng)
                volume = None if point_scale is None else point_scale * self.seed_volume
                trial, contact = _perturbed_copy(self.atoms.copy(), task, rng, volume)
                ptype = default_config_type(task, point_scale, self.seed_kind, self.periodic)
                ctype = task.config_type or ("contact" if contact is not None else
                                             "strained" if task.copy_strain > 0 and ptype == "crystal" else ptype)
            res = _evaluate_or_drop(trial, self.calc, f"{self.traj.id}: point {k}")
            self.tick(1)
            if res is None or not sane_results(res, self.max_force):
                continue
            info = {**self.base_info, "config_type": ctype, "temperature": 0.0, "step": k, **_copy_info(contact)}
            self.candidates.append(labelled_frame(trial, res, info))
        return self.candidates

    def relax(self) -> None:
        """Kinds ``random_search`` (a random structure, cell relaxed too), ``relax_positions``
        (the start structure at fixed cell) and ``relax_shape`` (the start structure, its cell's
        shape relaxed at constant volume): the teacher relaxes it, sampled along the path."""
        from mlffd.sampling.relax import relax_path

        def on_step(step: int) -> None:
            self.tick(1)
            if step % self.task.sample_every == 0:
                self.snap(self.base_type, 0.0, step)

        cell = {"random_search": "full", "relax_shape": "shape"}.get(self.task.kind, "fixed")
        error = relax_path(self.atoms, self.calc, self.task.steps, on_step, cell=cell, keep_symmetry=self.task.keep_symmetry)
        if error:
            warnings.warn(f"{self.traj.id}: the teacher's relaxation {error}; keeping the frames before", RuntimeWarning, stacklevel=3)

    def molecular_dynamics(self) -> None:
        """Kinds ``md`` and ``melt_quench``: teacher MD, sampled every ``sample_every`` steps,
        stopped (keeping the frames before) when the forces leave the physical range."""
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        task, traj, atoms = self.task, self.traj, self.atoms
        atoms.calc = self.calc
        start_t = task.melt_temperature if task.kind == "melt_quench" else traj.temperature
        MaxwellBoltzmannDistribution(atoms, temperature_K=start_t, rng=self.rng)
        Stationary(atoms)
        if not np.any(atoms.pbc):
            from ase.md.velocitydistribution import ZeroRotation

            ZeroRotation(atoms)  # a free molecule's tumbling is no sampled configuration
        dyn = _make_dynamics(atoms, task, start_t, self.rng)
        dyn.attach(lambda: self.tick(1), interval=1)

        def guard() -> None:
            forces = atoms.calc.results.get("forces")
            if forces is not None and not (np.isfinite(forces).all() and np.abs(forces).max(initial=0.0) <= self.max_force):
                raise TrajectoryUnstable(
                    f"{traj.id}: teacher MD became unstable after {dyn.nsteps} steps (max |F| = {np.abs(forces).max():.3g} eV/Å "
                    f"> max_force {self.max_force:g}); stopped it, keeping the {len(self.candidates)} frames sampled before"
                )

        dyn.attach(guard, interval=1)
        try:
            if task.kind == "melt_quench":
                self.melt_quench(dyn)
            else:
                dyn.run(task.equilibrate)
                step = 0
                for _ in range(task.steps // task.sample_every):
                    dyn.run(task.sample_every)
                    step += task.sample_every
                    self.snap(self.base_type, traj.temperature, step)
                # remaining steps (if steps is not a multiple of sample_every) are not needed
        except TrajectoryUnstable as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=3)
        except TEACHER_FAILURES as exc:  # e.g. an SCF that does not converge: one bad step must not stop the dataset
            warnings.warn(f"{traj.id}: the teacher failed after {dyn.nsteps} MD steps ({exc}); stopped it, keeping the "
                          f"{len(self.candidates)} frames sampled before", RuntimeWarning, stacklevel=3)

    def melt_quench(self, dyn) -> None:
        """Melt, equilibrate and sample the liquid, quench linearly, anneal (amorphous frames)."""
        task, traj = self.task, self.traj
        step = 0
        dyn.run(task.melt_steps)
        _set_temperature(dyn, traj.temperature)
        dyn.run(task.equilibrate)
        ctype_liquid = task.config_type or "liquid"
        for _ in range(task.steps // task.sample_every):
            dyn.run(task.sample_every)
            step += task.sample_every
            self.snap(ctype_liquid, traj.temperature, step)
        dyn.run(task.steps % task.sample_every)
        n_q = task.quench_steps
        for k in range(n_q):
            temp = traj.temperature + (task.quench_temperature - traj.temperature) * (k + 1) / n_q
            _set_temperature(dyn, temp)
            dyn.run(1)
            step += 1
            if (k + 1) % task.sample_every == 0:
                self.snap("amorphous", temp, step)
        _set_temperature(dyn, task.quench_temperature)
        for k in range(task.anneal_steps):
            dyn.run(1)
            step += 1
            if (k + 1) % task.sample_every == 0:
                self.snap("amorphous", task.quench_temperature, step)


def _evaluate_or_drop(atoms: Atoms, calc, what: str) -> dict[str, Any] | None:
    """The teacher's labels of ``atoms``, or None (with a warning) when the teacher fails on it
    (e.g. an SCF that does not converge): that structure is dropped like an insane one, the run goes on."""
    try:
        return evaluate(atoms, calc)
    except TEACHER_FAILURES as exc:
        warnings.warn(f"the teacher failed on {what} ({exc}); dropped it", RuntimeWarning, stacklevel=3)
        return None


def _select_and_copy(candidates: list[Atoms], task: TaskConfig, calc, base_info: dict[str, Any],
                     descriptor_cutoff: float, max_force: float, rng: np.random.Generator, tick: Callable[[int], None]) -> list[Atoms]:
    """Drop insane frames, select the most distinct ones, add the perturbed copies of each."""
    candidates = [f for f in candidates if sane_frame(f, max_force)]
    # near-duplicate removal / subsampling (farthest-point on the descriptor)
    if candidates and (task.max_frames is not None or task.min_distance > 0):
        desc = np.stack([descriptor(f, descriptor_cutoff) for f in candidates])
        keep = sorted(select_frames(desc, task.max_frames, task.min_distance))
        candidates = [candidates[i] for i in keep]

    frames = list(candidates)
    for parent in candidates:
        ptype = parent.info["config_type"]
        ctype = task.copy_config_type or ("strained" if task.copy_strain > 0 and ptype == "crystal" else ptype)
        volume = abs(parent.cell.volume) if task.volume_range is not None else None
        for c in range(task.copies):
            bare = Atoms(numbers=parent.numbers, positions=parent.positions.copy(), cell=parent.cell.array.copy(), pbc=parent.pbc)
            trial, contact = _perturbed_copy(bare, task, rng, volume)
            res = _evaluate_or_drop(trial, calc, "a perturbed copy")
            tick(1)
            if res is None or not sane_results(res, max_force):
                continue
            info = {**base_info, "config_type": (task.copy_config_type or "contact") if contact is not None else ctype,
                    "temperature": parent.info["temperature"], "step": parent.info["step"], "copy": c + 1, **_copy_info(contact)}
            frames.append(labelled_frame(trial, res, info))
    for f in frames:
        f.info.setdefault("copy", 0)
    return frames


# ---------------------------------------------------------------------------------------------
# the run: outputs, progress record, resume
# ---------------------------------------------------------------------------------------------
