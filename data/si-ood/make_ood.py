"""Out-of-domain silicon frames for the uncertainty check (mlffd-validate forces): structures
outside the distillation recipe (hotter than 2 Tm, denser than 70 % and sparser than 125 % of
the equilibrium volume), labelled by the teacher. Run from the repository root:

    python data/si-ood/make_ood.py            # writes data/si-ood/test.extxyz.xz
"""

from __future__ import annotations

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase import units

from mlffd.calculator import DistilledCalculator
from mlffd.teachers import load_teacher


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(2026)
    student = DistilledCalculator("ultra-tiny")
    frames = []
    # hot liquid far above the recipe's 2 Tm, by the student (the teacher labels the snapshots)
    for temperature in (4500.0, 6000.0):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
        atoms.calc = student
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        md = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
        for k in range(6):
            md.run(300)
            snap = atoms.copy()
            snap.info["config_type"] = f"ood_liquid_{temperature:.0f}K"
            frames.append(snap)
    # crystals squeezed below and stretched above the recipe's volume range
    for scale, tag in ((0.60, "ood_compressed_60"), (0.64, "ood_compressed_64"), (1.40, "ood_expanded_140"), (1.55, "ood_expanded_155")):
        for k in range(3):
            atoms = bulk("Si", "diamond", a=5.43 * scale ** (1 / 3), cubic=True) * (2, 2, 2)
            atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
            atoms.info["config_type"] = tag
            frames.append(atoms)
    teacher = load_teacher("sevennet:7net-0")
    labelled = []
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = teacher
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        if not (np.isfinite(e) and np.isfinite(f).all()) or np.abs(f).max() > 50.0:
            continue
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        atoms.info.update(teacher="sevennet:7net-0", trajectory=f"ood{i}")
        labelled.append(atoms)
        print(i, atoms.info["config_type"], f"{e / len(atoms):.3f} eV/atom", flush=True)
    write("data/si-ood/test.extxyz.xz", labelled, format="extxyz")


if __name__ == "__main__":
    main()
