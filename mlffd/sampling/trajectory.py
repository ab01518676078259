"""One teacher trajectory: MD (NVT/NPT, melt-quench) or single points, frames selected and perturbed."""


from __future__ import annotations

import warnings
import zlib
from typing import Any, Callable

import numpy as np
from ase import Atoms, units

from mlffd.sampling.config import TaskConfig
from mlffd.sampling.frames import _sane, _sane_results, descriptor, evaluate, labelled_frame, select_frames
from mlffd.sampling.structures import Trajectory, apply_strain, default_config_type, random_strain, start_structure

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

    def guard() -> None:
        forces = atoms.calc.results.get("forces")
        if forces is not None and not (np.isfinite(forces).all() and np.abs(forces).max(initial=0.0) <= max_force):
            raise TrajectoryUnstable(
                f"{traj.id}: teacher MD became unstable after {dyn.nsteps} steps (max |F| = {np.abs(forces).max():.3g} eV/Å "
                f"> max_force {max_force:g}); stopped it, keeping the {len(candidates)} frames sampled before"
            )

    dyn.attach(guard, interval=1)
    try:
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

    except TrajectoryUnstable as exc:
        warnings.warn(str(exc), RuntimeWarning, stacklevel=2)

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
