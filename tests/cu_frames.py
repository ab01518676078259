"""Small EMT-labelled Cu datasets for the training tests (generated, never stored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

#: a very small student: seconds per epoch on one core
SMALL_MODEL = dict(features=8, channels=8, hidden=8, readout_hidden=8, num_basis=4, num_interactions=2, cutoff=4.0)


def _label(atoms: Atoms, trajectory: str, config_type: str) -> Atoms:
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress() if atoms.pbc.all() else None
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces, **({"stress": stress} if stress is not None else {}))
    out.info.update(trajectory=trajectory, config_type=config_type, teacher="emt")
    return out


def cu_frames(n_traj: int = 4, per_traj: int = 5, seed: int = 0, slab: bool = True) -> list[Atoms]:
    """``n_traj`` trajectories of ``per_traj`` rattled, strained 8-16-atom Cu cells (+ one slab frame)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_traj):
        base = bulk("Cu", "fcc", a=3.61, cubic=True) * ((2, 1, 1) if t % 2 else (2, 2, 1))
        for k in range(per_traj):
            atoms = base.copy()
            strain = np.eye(3) + rng.normal(scale=0.02, size=(3, 3))
            atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            atoms.positions += rng.normal(scale=0.05 + 0.03 * t, size=atoms.positions.shape)
            frames.append(_label(atoms, f"md-{t}", "bulk" if t % 2 else "bulk-hot"))
    if slab:
        s = fcc100("Cu", size=(2, 2, 3), vacuum=4.0)
        s.info.pop("adsorbate_info", None)
        s.positions += rng.normal(scale=0.05, size=s.positions.shape)
        frames.append(_label(s, "slab-0", "surface"))
    return frames


def write_frames(path: Path, frames: list[Atoms]) -> Path:
    import ase.io

    ase.io.write(str(path), frames, format="extxyz")
    return path
