"""Frames along the path of a silicon interstitial from diamond's hexagonal site to its tetrahedral sites, labelled by 7net-0.

7net-0's hexagonal interstitial is not a minimum: relaxed, it ends at the tetrahedral site. A
student that has a minimum there needs the teacher's energy *along* the way out, not only at the
site. The added atom is held at ``hex + s (tet - hex)`` on the [111] line from the hexagonal
site (5/8, 5/8, 5/8) to the tetrahedral one (1/2, 1/2, 1/2) (conventional-cell coordinates; the
other tetrahedral site on that line is its mirror image); the host relaxes around it with the
student (BFGS, fmax 0.02 eV/Å, at most 100 steps) with the added atom and the host atom farthest
from it fixed (else the host slides rigidly until a tetrahedral site reaches the held atom). That
frame and two copies rattled by 0.03 Å are labelled by 7net-0 (energy, forces, stress); 7net-0's
force on the held atom is the slope of its energy along the path.

Training frames: ``s = 0, 0.1, ..., 1`` in 54-atom (3x3x3 primitive) and 128-atom (2x2x4
conventional) cells; test frames: the midpoints ``s = 0.05, ..., 0.95`` in the 128-atom cell.
Neither is the 64-atom cell that ``mlffd-validate properties`` relaxes its interstitials in. The
lattice constant is data/si-interstitials'. ``--near`` samples the first stretch of the path,
where 7net-0's slope grows from zero and a student's is too flat: ``s = 0.025, 0.05, ..., 0.3``
(training, both cells) and ``s = 0.0375, 0.0875, ..., 0.2875`` (test, 128 atoms).
Run from the repository root:
    python examples/si/finetune/hex_tet_path.py original     # -> runs/si/hextet/{train,test}.extxyz
    python examples/si/finetune/hex_tet_path.py original --near --out runs/si/hextet-near
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from student_relax_paths import TEACHER, labelled, lattice_constant, write_splits  # this directory: the same labelling and files

from mlffd.calculator import DistilledCalculator
from mlffd.teachers import load_teacher, teacher_info

TRAIN_STEPS = np.linspace(0.0, 1.0, 11)
TEST_STEPS = np.linspace(0.05, 0.95, 10)
NEAR_TRAIN_STEPS = np.linspace(0.025, 0.3, 12)
NEAR_TEST_STEPS = np.linspace(0.0375, 0.2875, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the student that relaxes the host (a shipped name or an artifact path)")
    parser.add_argument("--out", default="runs/si/hextet")
    parser.add_argument("--near", action="store_true", help="only the first 0.35 A of the path, finer")
    args = parser.parse_args()
    train_steps, test_steps = (NEAR_TRAIN_STEPS, NEAR_TEST_STEPS) if args.near else (TRAIN_STEPS, TEST_STEPS)
    a = lattice_constant()
    cells = {"p54": bulk("Si", "diamond", a=a) * (3, 3, 3), "c128": bulk("Si", "diamond", a=a, cubic=True) * (2, 2, 4)}
    hexagonal = a * np.full(3, 5 / 8)
    tet = a * np.full(3, 1 / 2)
    paths = [("train", "p54", train_steps), ("train", "c128", train_steps), ("test", "c128", test_steps)]
    student, teacher = DistilledCalculator(args.model), load_teacher(TEACHER)
    sha = teacher_info(TEACHER).get("checkpoint_sha256") or ""
    rng = np.random.default_rng(20261207 if args.near else 20261206)
    frames: dict[str, list[Atoms]] = {"train": [], "test": []}
    for split, cname, steps in paths:
        host = cells[cname]
        anchor = int(np.argmax(np.linalg.norm(host.positions - hexagonal, axis=1)))
        relaxed = None
        for j, s in enumerate(steps):
            atoms = host + Atoms("Si", positions=[hexagonal + s * (tet - hexagonal)])
            if relaxed is not None:  # start from the previous point's host: a continuous path
                atoms.positions[:-1] = relaxed.positions[:-1]
            atoms.set_constraint(FixAtoms(indices=[anchor, len(atoms) - 1]))
            atoms.calc = student
            BFGS(atoms, logfile=None).run(fmax=0.02, steps=100)
            relaxed = atoms.copy()
            picked = [atoms.copy()]
            for _ in range(2):
                r = atoms.copy()
                r.positions += rng.normal(0.0, 0.03, r.positions.shape)
                picked.append(r)
            out = [labelled(p, teacher, f"hex_tet{'_near' if args.near else ''}/{cname}-{split}", j, c, sha) for c, p in enumerate(picked)]
            frames[split] += out
            f = out[0].get_forces()[-1]
            along = float(f @ (tet - hexagonal) / np.linalg.norm(tet - hexagonal))
            print(f"{split} {cname} s={s:.2f}: 7net-0 energy {out[0].get_potential_energy():.4f} eV, "
                  f"student {atoms.get_potential_energy():.4f} eV, 7net-0 force on the added atom along the path {along:+.3f} eV/A", flush=True)
    write_splits(args.out, frames)


if __name__ == "__main__":
    main()
