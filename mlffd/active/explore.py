"""Exploration with the student itself: MD on a temperature/pressure ladder and relaxations from
random and defected starts, where a student's false minima and collapses show up.

Every run records a frame every ``sample_every`` steps. A run stops early at the first step
whose structure and student prediction fail a sanity check (:mod:`mlffd.active.sanity`), and
that frame is kept: it is exactly what the teacher must label. (A relaxation's start, built
here, is kept with its flags but the run goes on: where the student takes it is the test.) A student that cannot evaluate a
structure at all (non-finite output, overlapping atoms) ends its run the same way; nothing a
run does raises out of :func:`explore`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms, units

from mlffd.active.config import PHASE_START, ActiveConfig, phase_of
from mlffd.active.sanity import Reference, distance_limits, sanity_reasons
from mlffd.sampling.relax import cell_filter_quiet

#: what a student's failure to evaluate a structure looks like (mlffd.calculator's errors)
EVALUATION_ERRORS = (FloatingPointError, ValueError, RuntimeError, ArithmeticError)


@dataclass(frozen=True)
class Run:
    """One exploration run: ``md`` at a temperature (and pressure: NPT) or ``relax`` from a start."""

    name: str
    kind: str  #: ``md`` or ``relax``
    start: str  #: ``crystal``, ``random``, a defect of :data:`mlffd.active.config.DEFECT_KINDS` or ``phase:NAME`` (a prototype)
    temperature: float = 0.0
    pressure: float | None = None  #: GPa; None: NVT


def plan(config: ActiveConfig, round_index: int = 1) -> list[Run]:
    """The runs of one round, in order; the prototypes of ``relax_phases`` go on where the last
    round's stopped, so rounds together visit every one."""
    from mlffd.prototypes import PROTOTYPES

    runs = []
    for t in config.temperatures:
        runs.append(Run(f"md-nvt-{t:g}K", "md", "crystal", t))
        runs += [Run(f"md-npt-{t:g}K-{p:g}GPa", "md", "crystal", t, p) for p in config.pressures]
    runs += [Run(f"relax-random-{k}", "relax", "random") for k in range(config.relax_random)]
    runs += [Run(f"relax-{config.defects[k % len(config.defects)]}-{k}", "relax", config.defects[k % len(config.defects)])
             for k in range(config.relax_defected)]
    names = list(PROTOTYPES)
    for k in range(config.relax_phases):
        name = names[((round_index - 1) * config.relax_phases + k) % len(names)]
        runs.append(Run(f"relax-phase-{name}-{k}", "relax", PHASE_START + name))
    return runs


def steps_of(config: ActiveConfig, run: Run) -> int:
    return config.md_steps if run.kind == "md" else config.relax_steps


def start_structure(frames: Sequence[Atoms], min_atoms: int) -> Atoms:
    """The training data's representative cell (:func:`mlffd.representative.pick_structure`: the
    most common periodic composition and size, its lowest energy per atom), repeated to
    ``min_atoms`` atoms: defected starts then hold one defect in the bulk, not a second one in
    whatever defect cell happened to be the largest frame."""
    from mlffd.representative import grown, pick_structure

    atoms = pick_structure(frames)
    return grown(atoms, min_atoms) if min_atoms > 0 else atoms


# -- start structures ------------------------------------------------------------------------


def _mic_distances(atoms: Atoms, point: np.ndarray) -> np.ndarray:
    from ase.geometry import find_mic

    d = atoms.positions - point
    if atoms.pbc.any():
        d, _ = find_mic(d, atoms.cell, atoms.pbc)
    return np.linalg.norm(d, axis=1)


def random_start(start: Atoms, config: ActiveConfig, reference: Reference, rng: np.random.Generator) -> Atoms:
    """``start``'s atoms placed at random in a random cell at its density times ``1 ± density_range``,
    no two closer than ``random_min_distance`` × the data's typical first-neighbour distance
    (:attr:`Reference.bond`; lowered by 5 % steps when the atoms do not fit after many tries). Not
    the shortest distance: data with close contacts would make every random cell a pile of them."""
    n = len(start)
    numbers = rng.permutation(start.numbers)
    scale = (1.0 + rng.uniform(-config.density_range, config.density_range)) ** (1.0 / 3.0)
    if start.pbc.all():
        strain = np.eye(3) + np.triu(rng.uniform(-0.05, 0.05, (3, 3)))
        side = start.get_volume() ** (1.0 / 3.0)
        cell = side * scale * strain
        cell *= (start.get_volume() * scale**3 / abs(np.linalg.det(cell))) ** (1.0 / 3.0)
    else:  # a molecule or slab: the start's bounding box, padded, as the box of the random atoms
        span = np.ptp(start.positions, axis=0) + 1.0
        cell = np.diag(span * scale)
    d_min = config.random_min_distance * reference.bond
    for _ in range(40):
        atoms = Atoms(numbers=numbers[:0], cell=cell, pbc=start.pbc)
        for z in numbers:
            for _ in range(2000):
                p = rng.uniform(0.0, 1.0, 3) @ cell
                if len(atoms) == 0 or _mic_distances(atoms, p).min() >= d_min:
                    atoms += Atoms(numbers=[z], positions=[p])
                    break
            else:
                break
        if len(atoms) == n:
            return atoms
        d_min *= 0.95
    raise RuntimeError(f"could not place {n} atoms at random in the cell")  # only for absurd densities


def defected_start(start: Atoms, defect: str, config: ActiveConfig, reference: Reference, rng: np.random.Generator) -> Atoms:
    """``start`` rattled by 0.02 Å (so that relaxations leave symmetric saddles) with a vacancy,
    an interstitial (at the emptiest of 200 random points; ``interstitial_open``: at a random one
    of the open sites among them, :func:`mlffd.sampling.structures.interstitial_point`) or a pushed
    pair (an atom and its nearest neighbour moved along their bond to ``push_fraction`` × the
    pair's shortest training distance)."""
    from ase.geometry import find_mic

    from mlffd.sampling.structures import interstitial_point

    atoms = Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
    if defect == "vacancy" and len(atoms) > 1:
        del atoms[int(rng.integers(len(atoms)))]
    elif defect in ("interstitial", "interstitial_open"):
        if atoms.pbc.all():
            best = interstitial_point(atoms, rng, "open" if defect == "interstitial_open" else "largest", n_trial=200)
        else:
            lo, hi = atoms.positions.min(0) - 0.5, atoms.positions.max(0) + 0.5
            points = rng.uniform(lo, hi, (200, 3))
            best = max(points, key=lambda p: _mic_distances(atoms, p).min())
        atoms += Atoms(numbers=[int(rng.choice(np.unique(start.numbers)))], positions=[best])
    elif defect == "pushed_pair" and len(atoms) > 1:
        i = int(rng.integers(len(atoms)))
        d = _mic_distances(atoms, atoms.positions[i])
        d[i] = np.inf
        j = int(np.argmin(d))
        bond = atoms.positions[j] - atoms.positions[i]
        if atoms.pbc.any():
            bond = find_mic(bond[None], atoms.cell, atoms.pbc)[0][0]
        length = float(np.linalg.norm(bond))
        target = config.push_fraction * reference.pair_shortest(int(atoms.numbers[i]), int(atoms.numbers[j]))
        shift = 0.5 * (length - target) * bond / max(length, 1e-12)
        atoms.positions[i] += shift
        atoms.positions[j] -= shift
    return atoms


def one_element_crystal(atoms: Atoms) -> bool:
    """Whether ``atoms`` is periodic in 3D and of one element: what prototype starts need."""
    return bool(atoms.pbc.all()) and len(set(atoms.numbers.tolist())) == 1


def phase_start(start: Atoms, name: str, config: ActiveConfig, rng: np.random.Generator) -> Atoms | None:
    """Prototype ``name`` of ``start``'s element (:func:`mlffd.prototypes.prototype`) rattled by
    0.02 Å (so that a relaxation may leave the phase where the student has no barrier), at a
    random volume per atom between the prototype's own (at the element's bond length) and
    ``start``'s, widened by ``phase_volume_range`` each way: dense phases of a covalent element sit
    between the two; None unless ``start`` is a one-element crystal."""
    from mlffd.prototypes import prototype

    if not one_element_crystal(start):
        return None
    atoms = prototype(name, start.get_chemical_symbols()[0])
    own, data = atoms.get_volume() / len(atoms), start.get_volume() / len(start)
    target = rng.uniform(min(own, data) * (1.0 - config.phase_volume_range), max(own, data) * (1.0 + config.phase_volume_range))
    atoms.set_cell(atoms.cell.array * (target / own) ** (1.0 / 3.0), scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
    atoms.info.clear()
    return atoms


# -- one run ---------------------------------------------------------------------------------


class _Stop(Exception):
    """A sanity check failed: the run ends (its frame is recorded)."""


def _frame(atoms: Atoms, info: dict[str, Any]) -> Atoms:
    frame = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())
    frame.info.update(info)
    return frame


def run_one(run: Run, start: Atoms, calc, config: ActiveConfig, reference: Reference, rng: np.random.Generator,
            round_index: int, tick: Callable[[int], None] = lambda n: None) -> tuple[list[Atoms], dict[str, Any]]:
    """Run ``run`` from ``start`` with the student calculator ``calc``; its frames and record."""
    from ase.md.velocitydistribution import Stationary

    try:  # ASE >= 3.29; older releases have only the function it replaces
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    limits = distance_limits(reference, config.min_distance_fraction, config.min_distance_A)
    atoms = start.copy()
    atoms.calc = calc
    frames: list[Atoms] = []
    record: dict[str, Any] = {"run": run.name, "kind": run.kind, "start": run.start, "temperature_K": run.temperature,
                              "pressure_GPa": run.pressure, "steps": 0, "frames": 0, "stopped": None, "error": None}
    base = {"active_round": round_index, "active_source": run.name}

    def keep(step: int, reasons: Sequence[str] = ()) -> None:
        frames.append(_frame(atoms, {**base, "active_step": int(step), "active_explore_reason": ",".join(reasons)}))

    def observe(dyn) -> None:
        step = int(dyn.nsteps)
        if step > record["steps"]:
            tick(step - record["steps"])
        record["steps"] = step
        res = atoms.calc.results
        if "forces" not in res or atoms.calc.check_state(atoms):  # the results must be those of this structure
            atoms.get_forces()
            res = atoms.calc.results
        reasons = sanity_reasons(atoms, float(res.get("energy", np.nan)), np.asarray(res.get("forces", np.full((len(atoms), 3), np.nan))),
                                 reference, limits, config.energy_margin, config.max_force)
        if reasons and (step > 0 or run.kind == "md"):
            keep(step, reasons)
            record["stopped"] = reasons[0]
            raise _Stop
        if reasons:  # a relaxation's constructed start: flagged and kept, but where the student takes it is the point
            keep(step, reasons)
            return
        if step % config.sample_every == 0 and (step > 0 or run.kind == "relax"):
            keep(step)

    try:
        if run.kind == "md":
            thermalize_momenta(atoms, temperature_K=run.temperature, rng=rng)
            Stationary(atoms)
            dyn = _dynamics(atoms, run, config, rng)
            dyn.attach(lambda: observe(dyn), interval=1)
            dyn.run(config.md_steps)
        else:
            from ase.optimize import BFGS

            target = atoms
            phase = phase_of(run.start) is not None
            if (config.relax_cell or phase) and atoms.pbc.all():
                from ase.filters import FrechetCellFilter

                target = FrechetCellFilter(atoms, constant_volume=phase)  # a phase: a point of its E-V curve
            opt = BFGS(target, logfile=None)
            opt.attach(lambda: observe(opt), interval=1)
            converged = opt.run(fmax=config.relax_fmax, steps=config.relax_steps)
            record["converged"] = bool(converged)
            if not frames or frames[-1].info["active_step"] != record["steps"]:
                keep(record["steps"])  # the end point: a (possibly false) minimum
    except _Stop:
        pass
    except EVALUATION_ERRORS as exc:  # the student could not evaluate where its run led: a finding
        record["stopped"] = "non_finite"
        record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        keep(record["steps"], ["non_finite"])
    tick(max(steps_of(config, run) - record["steps"], 0))
    record["frames"] = len(frames)
    return frames, record


def _dynamics(atoms: Atoms, run: Run, config: ActiveConfig, rng: np.random.Generator):
    dt = config.timestep_fs * units.fs
    if run.pressure is not None:
        from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen

        return Inhomogeneous_NPTBerendsen(atoms, timestep=dt, temperature_K=run.temperature, pressure_au=run.pressure * units.GPa,
                                          taut=config.taut_fs * units.fs, taup=config.taup_fs * units.fs,
                                          compressibility_au=1.0 / (config.bulk_modulus_gpa * units.GPa))
    from ase.md.langevin import Langevin

    return Langevin(atoms, dt, temperature_K=run.temperature, friction=config.friction_per_fs / units.fs, fixcm=False, rng=rng)


def explore(config: ActiveConfig, artifact: str | Path, start: Atoms, reference: Reference, round_index: int,
            log: Callable[[str], None] = print, data_reference: Reference | None = None) -> tuple[list[Atoms], list[dict[str, Any]]]:
    """All runs of one round with the student ``artifact``; the recorded frames and one record
    per run. Each run draws its own random numbers from ``(seed, round, run name)``.

    ``reference`` (the teacher-labelled data so far) decides when a run leaves the data;
    ``data_reference`` (the student's training data alone; default ``reference``) places the
    starts: a pushed pair at ``push_fraction`` × its shortest distance, random cells spaced by its
    bond length. Were the starts placed by the labels so far, each round's pushed pairs, once
    labelled, would set the next round's shortest distance and the pairs would close in round
    after round, into distances where the teacher itself is not trained."""
    from tqdm.auto import tqdm

    from mlffd.calculator import DistilledCalculator

    data_reference = reference if data_reference is None else data_reference
    runs = plan(config, round_index)
    if config.relax_phases and not one_element_crystal(start):
        runs = [r for r in runs if phase_of(r.start) is None]
        log("[explore] relax_phases: no prototype relaxations, the data are not one-element crystals")
    frames: list[Atoms] = []
    records: list[dict[str, Any]] = []
    total = sum(steps_of(config, r) for r in runs)
    with cell_filter_quiet(), tqdm(total=total, desc=f"explore round {round_index}", unit="step", disable=not config.progress,
                                  dynamic_ncols=True) as bar:
        for run in runs:
            rng = np.random.default_rng([config.seed, round_index, zlib.crc32(run.name.encode())])
            if run.start == "crystal":
                begin = start.copy()
            elif run.start == "random":
                begin = random_start(start, config, data_reference, rng)
            elif (phase := phase_of(run.start)) is not None:
                begin = phase_start(start, phase, config, rng)
            else:
                begin = defected_start(start, run.start, config, data_reference, rng)
            calc = DistilledCalculator(artifact)  # a fresh neighbour-list cache per run
            got, record = run_one(run, begin, calc, config, reference, rng, round_index, tick=bar.update)
            frames += got
            records.append(record)
            if record["stopped"]:
                log(f"[explore] {run.name}: stopped at step {record['steps']} ({record['stopped']}"
                    f"{': ' + record['error'] if record['error'] else ''})")
    return frames, records


__all__ = ["Run", "defected_start", "explore", "phase_start", "plan", "random_start", "run_one", "start_structure"]
