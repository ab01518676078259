"""The student's own equations of state of every silicon prototype, labelled by 7net-0.

`mlffd-validate properties` relaxes each prototype at zero pressure (symmetry kept) and then at
each volume of its E-V curve relaxes the internal coordinates and the cell shape at constant
volume. Where a student's phase gives way (its hcp c/a running off, its beta-tin turning into
another structure) the structures it reaches are ones the teacher never visited, so no training
frame holds them. This script walks the same path with the student (zero-pressure relaxation,
then 70-120 % of its V0 outward from V0, each volume from its neighbour's shape) and has 7net-0
label every structure the student reaches: the cell as relaxed, and one supercell of at least 16
atoms rattled by 0.03 Å (the teacher's forces around it). Every fourth volume of a phase goes to
the test file. Written for tiny-minima3.yaml.
Run from the repository root:
    python examples/si/finetune/student_phase_paths.py runs/si/finetune/tiny-minima2-cal.mlffd.pt   # -> runs/si/phases/{train,test}.extxyz
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms

from md_validation.properties.config import PropertiesConfig
from md_validation.properties.eos import EOS_FMAX, at_volume
from md_validation.properties.relax import relax
from md_validation.properties.system import element_system
from mlffd.calculator import DistilledCalculator
from mlffd.teachers import load_teacher, teacher_info

from student_relax_paths import TEACHER, labelled, write_splits

#: volumes of each phase, as fractions of the student's own zero-pressure volume
FRACTIONS = np.linspace(0.70, 1.20, 11)
#: fewest atoms of the rattled copy
MIN_ATOMS = 16


def rattled_supercell(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    reps = 1
    while len(atoms) * reps**3 < MIN_ATOMS:
        reps += 1
    big = atoms * (reps, reps, reps)
    big.positions += rng.normal(0.0, 0.03, big.positions.shape)
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the student that relaxes (a shipped name or an artifact path)")
    parser.add_argument("--out", default="runs/si/phases")
    args = parser.parse_args()
    student, teacher = DistilledCalculator(args.model), load_teacher(TEACHER)
    sha = teacher_info(TEACHER).get("checkpoint_sha256") or ""
    config, rng = PropertiesConfig(), np.random.default_rng(20261206)
    frames: dict[str, list[Atoms]] = {"train": [], "test": []}
    for name, start in element_system("Si").phases.items():
        zero = relax(start, student, fmax=config.fmax, steps=config.relax_steps)
        if zero.error:
            print(f"{name}: the student's zero-pressure relaxation failed ({zero.error}); skipped", flush=True)
            continue
        reached = {1.0: zero.atoms}
        for order in (FRACTIONS[FRACTIONS < 1.0][::-1], FRACTIONS[FRACTIONS > 1.0]):
            prev = zero.atoms
            for f in order:
                _, end = at_volume(prev, student, f * zero.atoms.get_volume(), min(config.fmax, EOS_FMAX))
                if end is not None:
                    reached[float(f)] = prev = end
        for k, (f, atoms) in enumerate(sorted(reached.items())):
            split = "test" if k % 4 == 3 else "train"
            trajectory = f"student_phase/{name}/{split}"
            frames[split] += [labelled(atoms, teacher, trajectory, k, 0, sha, "phase"),
                              labelled(rattled_supercell(atoms, rng), teacher, trajectory, k, 1, sha, "phase")]
        print(f"{name}: {len(reached)} volumes, student V0 {zero.atoms.get_volume() / len(zero.atoms):.2f} Å^3/atom", flush=True)
    write_splits(args.out, frames)


if __name__ == "__main__":
    main()
