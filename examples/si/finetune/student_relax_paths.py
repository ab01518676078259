"""Frames along the student's own relaxations of a silicon interstitial, labelled by 7net-0.

Each start is the teacher's diamond (2x2x2 conventional cell, the lattice constant of
data/si-interstitials) with one atom added at a random open site
(``mlffd.sampling.structures.interstitial_point(..., "open")``) and every atom rattled by 0.03 Å;
the student relaxes it (BFGS, fmax 0.005 eV/Å, at most 150 steps); six frames evenly spaced along
the path and three copies of its end rattled by 0.05 Å are labelled by 7net-0 (energy, forces,
stress). Every eighth path goes to the test file. Written for original-student-relax.yaml.
Run from the repository root:
    python examples/si/finetune/student_relax_paths.py original 24     # -> runs/si/hexpath/{train,test}.extxyz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read, write
from ase.optimize import BFGS

from mlffd.calculator import DistilledCalculator
from mlffd.sampling.frames import labelled_frame
from mlffd.sampling.structures import interstitial_point
from mlffd.teachers import load_teacher, teacher_info

TEACHER = "sevennet:7net-0"


def labelled(atoms: Atoms, teacher, trajectory: str, step: int, copy: int, sha: str, config_type: str = "interstitial") -> Atoms:
    """7net-0's energy, forces and stress for ``atoms`` (constraints dropped) as a training frame."""
    work = atoms.copy()
    work.set_constraint()
    work.calc = teacher
    results = dict(energy=work.get_potential_energy(), forces=work.get_forces(), stress=work.get_stress())
    info = dict(trajectory=trajectory, teacher=TEACHER, teacher_sha256=sha, config_type=config_type, step=step, copy=copy)
    return labelled_frame(work, results, info)


def write_splits(out: str, frames: dict[str, list[Atoms]]) -> None:
    """``OUT/train.extxyz`` and ``OUT/test.extxyz``; prints the counts."""
    Path(out).mkdir(parents=True, exist_ok=True)
    for split, lst in frames.items():
        write(Path(out) / f"{split}.extxyz", lst)
    print({split: len(lst) for split, lst in frames.items()})


def lattice_constant() -> float:
    """The teacher's diamond lattice constant, as data/si-interstitials' 2x2x2 conventional cells hold it."""
    return float(read("data/si-interstitials/train.extxyz.xz", 0).cell.lengths()[0] / 2)


def open_site_start(host: Atoms, rng: np.random.Generator, extra: int = 1) -> Atoms:
    """``host`` with ``extra`` Si added one after another, each at a random open site of what is
    there by then, every atom rattled by 0.03 Å."""
    atoms = host
    for _ in range(extra):
        atoms = atoms + Atoms("Si", positions=[interstitial_point(atoms, rng, "open")])
    atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the student that relaxes (a shipped name or an artifact path)")
    parser.add_argument("paths", type=int, help="number of relaxations")
    parser.add_argument("--out", default="runs/si/hexpath")
    args = parser.parse_args()
    host = bulk("Si", "diamond", a=lattice_constant(), cubic=True) * (2, 2, 2)
    student, teacher = DistilledCalculator(args.model), load_teacher(TEACHER)
    sha = teacher_info(TEACHER).get("checkpoint_sha256") or ""
    rng = np.random.default_rng(20261206)
    frames: dict[str, list[Atoms]] = {"train": [], "test": []}
    for k in range(args.paths):
        atoms = open_site_start(host, rng)
        atoms.calc = student
        path = [atoms.copy()]
        for _ in BFGS(atoms, logfile=None).irun(fmax=0.005, steps=150):
            path.append(atoms.copy())
        picked = [path[i] for i in sorted(set(np.linspace(0, len(path) - 1, 6).round().astype(int)))]
        kept = len(picked)
        for _ in range(3):  # the teacher's forces around the student's end point: its curvature there
            end = path[-1].copy()
            end.positions += rng.normal(0.0, 0.05, end.positions.shape)
            picked.append(end)
        split = "test" if k % 8 == 7 else "train"
        out = [labelled(p, teacher, f"student_relax_open/{split}{k}", j, int(j >= kept), sha) for j, p in enumerate(picked)]
        frames[split] += out
        print(f"path {k}: {len(path)} steps, 7net-0 energy at the student's end {out[kept - 1].get_potential_energy():.3f} eV", flush=True)
    write_splits(args.out, frames)


if __name__ == "__main__":
    main()
