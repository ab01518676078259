"""``--engine lammps``: run a validation stage with ``pair_style mlffd`` in LAMMPS.

Built on :mod:`mlffd.lammps` (data files, the ``lmp`` launcher, the ASE <-> LAMMPS frame
rotation). One stage is one ``lmp`` run: ``fix nve`` (plus ``fix langevin`` for NVT, damping
time = 1 / friction; for NPT ``fix nph iso`` with the same Langevin thermostat, LAMMPS'
counterpart of the ASE engine's Langevin barostat: the cell keeps its shape and changes its
volume), a thermo line with the box and a dump frame every ``interval`` steps. The frames come
back in the ASE frame and atom order with their cell, velocities, forces, energy and stress, and
go through the same recorder as the ASE engine, so the analysis cannot tell the engines apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from md_validation.md import MDPlan, Recorder, Stage


class LammpsEngine:
    """MD stages in LAMMPS with an mlffd artifact (a shipped name or a path)."""

    name = "lammps"
    #: LAMMPS' own "Loop time" of the last stage (s), without start-up; used for speed metrics
    last_loop_s: float | None = None

    def __init__(self, model: str | Path, nprocs: int = 1, threads: int = 1, skin: float = 1.0, timeout: float = 3600.0) -> None:
        from mlffd.lammps import deck_number, lammps_quote
        from mlffd.registry import resolve

        self.model = Path(resolve(model)).resolve()
        # the path goes into the deck as one quoted word: refused here, before any MD, when that
        # cannot be done safely (a newline in it would start another LAMMPS command)
        lammps_quote(self.model, "model path")
        self.nprocs = int(deck_number(nprocs, "nprocs", positive=True, integer=True))
        self.threads = int(deck_number(threads, "threads", positive=True, integer=True))
        self.skin = float(deck_number(skin, "skin", positive=True))
        self.timeout = float(timeout)

    def deck(self, stage: Stage, plan: MDPlan, seed: int, elements: list[str]) -> str:
        """The LAMMPS input for one stage (reads ``atoms.data``; writes ``traj.dump``).

        Every value is checked before it is written (:class:`ValueError` naming it): the model
        path is one quoted word, numbers are finite, counts are integers.
        """
        from mlffd.lammps import deck_number, mlffd_pair

        if stage.ensemble not in ("nvt", "nve", "npt"):
            raise ValueError(f"the LAMMPS engine runs NVT, NVE and NPT stages, not {stage.ensemble!r}")
        interval = deck_number(stage.interval, "stage interval", positive=True, integer=True)
        lines = [
            "units metal",
            "atom_style atomic",
            "atom_modify map array",
            "boundary p p p",
            "read_data atoms.data",
            *mlffd_pair(self.model, elements),
            f"neighbor {deck_number(self.skin, 'skin', positive=True)} bin",
            f"timestep {deck_number(float(deck_number(plan.dt_fs, 'dt_fs', positive=True)) / 1000.0, 'dt_fs')}",
            "compute mlffd_p all pressure NULL virial",
            "thermo_style custom step temp pe ke etotal press "
            + " ".join(f"c_mlffd_p[{k}]" for k in range(1, 7)) + " " + " ".join(BOX),
            "thermo_modify format float %.17g norm no",
            f"thermo {interval}",
            # the model's forces, stored before fix langevin adds its friction and noise to them
            "fix mlffd_f all store/force",
            f"dump mlffd_traj all custom {interval} traj.dump id x y z vx vy vz f_mlffd_f[1] f_mlffd_f[2] f_mlffd_f[3]",
            "dump_modify mlffd_traj sort id format float %.17g",
        ]
        if stage.ensemble == "npt":
            bar = deck_number(float(deck_number(plan.pressure_GPa, "pressure_GPa")) * 1e4, "pressure (bar)")
            pdamp_ps = deck_number(float(deck_number(plan.barostat_fs, "barostat_fs", positive=True)) / 1000.0, "barostat time")
            lines.append(f"fix mlffd_nph all nph iso {bar} {bar} {pdamp_ps} dilate all")
        else:
            lines.append("fix mlffd_nve all nve")
        if stage.ensemble in ("nvt", "npt"):
            temperature = deck_number(plan.temperature_K, "temperature_K")
            friction = float(deck_number(plan.friction_per_fs, "friction_per_fs", positive=True))
            damp_ps = deck_number(1.0 / (friction * 1000.0), "Langevin damping time")
            lseed = int(deck_number(seed, "seed", integer=True)) % 900_000_000 + 1
            lines.append(f"fix mlffd_lgv all langevin {temperature} {temperature} {damp_ps} {lseed} zero yes")
        lines.append(f"run {deck_number(stage.steps, 'stage steps', integer=True)}")
        return "\n".join(lines) + "\n"

    def run_stage(self, atoms: Atoms, stage: Stage, plan: MDPlan, seed: int, record: Recorder, progress) -> Atoms:
        from mlffd.lammps import (
            NKTV2P_METAL,
            VELOCITY_ASE_TO_METAL,
            LammpsError,
            error_lines,
            lmp_command,
            parse_thermo,
            voigt6_to_3x3,
            write_data,
        )

        self.last_loop_s = None
        if not atoms.pbc.all():
            raise ValueError("the LAMMPS engine of md_validation needs a fully periodic structure")
        elements = sorted(set(atoms.get_chemical_symbols()))
        with tempfile.TemporaryDirectory(prefix="md-validation-lammps-") as tmp:
            work = Path(tmp)
            prism = write_data(atoms, work / "atoms.data", elements, velocities=True)
            (work / "in.mlffd").write_text(self.deck(stage, plan, seed, elements))
            env = dict(os.environ)
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
            # LAMMPS' screen output goes to a file, not a pipe: this loop only polls, and a pipe
            # nobody drains fills up on long runs and blocks LAMMPS for ever
            screen = open(work / "screen.txt", "w")
            proc = subprocess.Popen(lmp_command(self.nprocs) + ["-in", "in.mlffd", "-log", "log.lammps"], cwd=work, env=env,
                                    stdout=screen, stderr=subprocess.STDOUT, text=True)
            screen.close()  # the child has its own copy
            shown, start = 0, time.monotonic()
            log = work / "log.lammps"
            while proc.poll() is None:
                time.sleep(0.5)
                if log.exists():
                    step = _last_step(log.read_text(errors="replace"))
                    if step > shown:
                        progress.update(step - shown)
                        shown = step
                if time.monotonic() - start > self.timeout:
                    proc.kill()
                    raise LammpsError(f"LAMMPS did not finish within {self.timeout:g} s")
            output = (work / "screen.txt").read_text(errors="replace")
            text = log.read_text(errors="replace") if log.exists() else ""
            thermo = parse_thermo(text)
            loop = re.search(r"Loop time of ([0-9.eE+-]+)", text)
            self.last_loop_s = float(loop.group(1)) if loop else None
            frames = _read_frames(work / "traj.dump") if (work / "traj.dump").exists() else []
            failed = proc.returncode != 0 or "ERROR" in output
            if stage.steps > shown:
                progress.update(stage.steps - shown)
        steps = thermo.get("Step", np.empty(0)).astype(int).tolist()
        last = atoms
        for step, data in frames:
            if step not in steps:
                continue
            k = steps.index(step)
            frame = atoms.copy()
            frame.set_constraint()
            lower, origin = _box(thermo, k)
            frame.set_cell(prism.to_ase(lower), scale_atoms=False)
            frame.positions = prism.to_ase(data[:, 1:4] - origin)
            frame.set_velocities(prism.to_ase(data[:, 4:7]) / VELOCITY_ASE_TO_METAL)
            p_virial = np.array([thermo[f"c_mlffd_p[{j}]"][k] for j in range(1, 7)])  # bar, xx yy zz xy xz yz
            stress = -prism.tensor_to_ase(voigt6_to_3x3(p_virial)) / NKTV2P_METAL
            frame.calc = SinglePointCalculator(frame, energy=float(thermo["PotEng"][k]), free_energy=float(thermo["PotEng"][k]),
                                               forces=prism.to_ase(data[:, 7:10]), stress=full_3x3_to_voigt_6_stress(stress))
            record(frame, step)
            last = frame
        if failed:
            errors = error_lines(output) or output.strip().splitlines()[-10:]
            raise LammpsError("LAMMPS failed: " + " | ".join(errors))
        return last


#: thermo keywords of the box: its origin, edge lengths and tilts (LAMMPS' lower-triangular cell)
BOX = ("xlo", "ylo", "zlo", "lx", "ly", "lz", "xy", "xz", "yz")


def _box(thermo: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The LAMMPS cell (rows a, b, c) and origin at thermo row ``k``."""
    v = {name: float(thermo[name.capitalize()][k]) for name in BOX}
    lower = np.array([[v["lx"], 0.0, 0.0], [v["xy"], v["ly"], 0.0], [v["xz"], v["yz"], v["lz"]]])
    return lower, np.array([v["xlo"], v["ylo"], v["zlo"]])


def _last_step(log: str) -> int:
    """Step of the last thermo line in a (growing) LAMMPS log."""
    from mlffd.lammps import parse_thermo

    try:
        steps = parse_thermo(log).get("Step")
    except (ValueError, IndexError):
        return 0
    return int(steps[-1]) if steps is not None and len(steps) else 0


def _read_frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """(step, rows sorted by id) of every frame of a ``dump custom`` file."""
    lines = path.read_text().splitlines()
    frames, k = [], 0
    while k < len(lines):
        if lines[k].startswith("ITEM: TIMESTEP"):
            step = int(lines[k + 1])
            n = int(lines[k + 3])
            start = next(j for j in range(k, len(lines)) if lines[j].startswith("ITEM: ATOMS")) + 1
            rows = lines[start: start + n]
            if len(rows) < n:
                break  # a frame cut short by a crash
            data = np.array([[float(v) for v in row.split()] for row in rows])
            frames.append((step, data[np.argsort(data[:, 0])]))
            k = start + n
        else:
            k += 1
    return frames
