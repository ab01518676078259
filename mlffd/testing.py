"""A reusable test kit for potentials and calculators (in the spirit of torch-sim's testing.py).

Every ``check_*`` function raises ``AssertionError`` with a readable message when a physical
property does not hold, comparing against an independent reference (ASE finite differences,
symmetry operations, supercells). They take any ASE calculator, so they test a
``DistilledCalculator``, a teacher, or the LAMMPS engine alike.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mlffd.geometry import reports_stress
from mlffd.models import ModelConfig, export_student
# random-weight models live with the product code that times them (mlffd bench); re-exported here
from mlffd.models.random_weights import random_student  # noqa: F401
from mlffd.teachers.orb import random_checkpoint as random_orb_checkpoint  # noqa: F401

CalcFactory = Callable[[], Calculator]


# -- models and structures ------------------------------------------------------------------


def random_artifact(
    path: str | Path,
    config: ModelConfig | str = "tiny",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    elements: Sequence[str] | None = None,
    repulsion_outer: float = 0.0,
) -> Path:
    """Export a random student (see :func:`random_student`) to ``path``; one with ensemble heads
    gets an uncertainty record with unit scales (uncalibrated: nothing to calibrate it on)."""
    model, config = random_student(config, dtype=dtype, seed=seed, elements=elements, repulsion_outer=repulsion_outer)
    extra = {}
    if config.ensemble > 1:
        extra["uncertainty"] = {"heads": config.ensemble, "energy_scale": 1.0, "force_scale": 1.0, "frames": 0}
    return export_student(model, config, path, teacher="none", **extra)


def model_inputs(
    atoms: Atoms, dtype: torch.dtype, cutoff: float = 5.0, elements: Sequence[str] | None = None
) -> tuple[torch.Tensor, ...]:
    """The artifact's five inputs for ``atoms`` (every atom carrying energy): positions, species
    (indices into ``elements``; all 0 without), edge index, shift vectors, energy mask."""
    from mlffd.neighbors import neighbor_list

    e = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    if elements is None:
        species = torch.zeros(len(atoms), dtype=torch.long)
    else:
        species = torch.tensor([list(elements).index(s) for s in atoms.get_chemical_symbols()])
    return (
        torch.tensor(atoms.positions, dtype=dtype),
        species,
        torch.tensor(np.stack([e.i, e.j])),
        torch.tensor(e.shifts(atoms.cell.array), dtype=dtype),
        torch.ones(len(atoms), dtype=torch.bool),
    )


def random_edges(n_atoms: int, n_edges: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Random directed edges sorted by centre (centre 0 has none): centres, neighbours and edge
    vectors of up to ~9.5 Å, some beyond a 5 Å cutoff and a few very short, for kernel tests."""
    gen = torch.Generator().manual_seed(seed)
    center = torch.randint(1, n_atoms, (n_edges,), generator=gen).sort().values
    neighbor = torch.randint(0, n_atoms, (n_edges,), generator=gen)
    vectors = (torch.rand(n_edges, 3, generator=gen, dtype=dtype) - 0.5) * 11.0
    vectors[:5] *= 0.05
    return center, neighbor, vectors


def silicon(n: int = 2, rattle: float = 0.05, seed: int = 0, a: float = 5.43) -> Atoms:
    """Rattled diamond silicon, ``n``×``n``×``n`` conventional cells (8 atoms each)."""
    atoms = bulk("Si", "diamond", a=a, cubic=True) * (n, n, n)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def silicon_germanium(n: int = 2, rattle: float = 0.15, seed: int = 4) -> Atoms:
    """:func:`silicon` with every third atom germanium (a two-element test structure)."""
    atoms = silicon(n, rattle=rattle, seed=seed)
    atoms.symbols[::3] = "Ge"
    return atoms


def triclinic_silicon(rattle: float = 0.05, seed: int = 1) -> Atoms:
    """The 2-atom primitive (fcc-lattice, triclinic) silicon cell, sheared and rattled.

    Its cell is far smaller than twice the cutoff, so each atom sees many of its own images.
    """
    atoms = bulk("Si", "diamond", a=5.43)
    cell = atoms.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 1.0]])
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


# -- checks ---------------------------------------------------------------------------------


def max_relative_error(a, b) -> float:
    """Largest |a - b| relative to the largest |b| (engines and references compared to rounding)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _calc(atoms: Atoms, calc: Calculator) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


def check_forces_fd(atoms: Atoms, calc: Calculator, eps: float = 1e-4, atol: float = 1e-6, indices=None) -> None:
    """Forces equal ASE's central finite differences of the energy."""
    atoms = _calc(atoms, calc)
    forces = atoms.get_forces()
    indices = list(range(len(atoms))) if indices is None else list(indices)
    numeric = calculate_numerical_forces(atoms, eps=eps, iatoms=indices)
    np.testing.assert_allclose(forces[indices], numeric, atol=atol, err_msg="forces differ from finite differences")


def check_stress_fd(atoms: Atoms, calc: Calculator, eps: float = 1e-5, atol: float = 1e-6) -> None:
    """Stress (Voigt, ASE sign) equals ASE's finite-difference strain derivative / volume."""
    atoms = _calc(atoms, calc)
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=eps)
    np.testing.assert_allclose(stress, numeric, atol=atol, err_msg="stress differs from finite differences")


def random_rotation(seed: int = 0) -> np.ndarray:
    """A proper rotation matrix (det = +1) drawn uniformly."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def check_invariance(atoms: Atoms, calc_factory: CalcFactory, seed: int = 0, atol: float = 1e-8) -> None:
    """Energy is invariant and forces covariant under rotation, translation and permutation."""
    ref = _calc(atoms, calc_factory())
    e0, f0 = ref.get_potential_energy(), ref.get_forces()
    rot = random_rotation(seed)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    rotated = _calc(rotated, calc_factory())
    np.testing.assert_allclose(rotated.get_potential_energy(), e0, atol=atol * len(atoms), err_msg="energy not rotation invariant")
    np.testing.assert_allclose(rotated.get_forces(), f0 @ rot.T, atol=atol * 10, err_msg="forces not rotation covariant")
    moved = atoms.copy()
    moved.positions += np.random.default_rng(seed).normal(size=3)
    moved = _calc(moved, calc_factory())
    np.testing.assert_allclose(moved.get_potential_energy(), e0, atol=atol * len(atoms), err_msg="energy not translation invariant")
    np.testing.assert_allclose(moved.get_forces(), f0, atol=atol * 10, err_msg="forces not translation invariant")
    perm = np.random.default_rng(seed).permutation(len(atoms))
    permuted = _calc(atoms[perm], calc_factory())
    np.testing.assert_allclose(permuted.get_potential_energy(), e0, atol=atol * len(atoms), err_msg="energy not permutation invariant")
    np.testing.assert_allclose(permuted.get_forces(), f0[perm], atol=atol * 10, err_msg="forces not permutation covariant")


def check_supercell(atoms: Atoms, calc_factory: CalcFactory, reps=(2, 2, 2), atol: float = 1e-8) -> None:
    """A periodic cell and its supercell agree: energy per atom, forces, stress."""
    small = _calc(atoms, calc_factory())
    big = _calc(atoms * reps, calc_factory())
    n = int(np.prod(reps))
    np.testing.assert_allclose(big.get_potential_energy() / n, small.get_potential_energy(), atol=atol * len(atoms), err_msg="supercell energy per cell differs")
    np.testing.assert_allclose(big.get_forces(), np.tile(small.get_forces(), (n, 1)), atol=atol * 10, err_msg="supercell forces differ")
    if atoms.cell.rank == 3 and atoms.pbc.all():
        np.testing.assert_allclose(big.get_stress(), small.get_stress(), atol=atol * 10, err_msg="supercell stress differs")


def dimer_scan(calc: Calculator, symbol: str, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies and the force on atom 1 along the bond for an isolated dimer at ``distances``."""
    energies, forces = [], []
    for d in distances:
        atoms = _calc(Atoms(f"{symbol}2", positions=[[0, 0, 0], [d, 0, 0]]), calc)
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces()[1, 0])
    return np.array(energies), np.array(forces)


def check_cutoff_smoothness(calc: Calculator, symbol: str, cutoff: float, width: float = 0.05, n: int = 41, tol: float = 1e-6) -> None:
    """Pull an atom through the cutoff: energy and force go continuously to their far values.

    Energy and force must be constant beyond ``cutoff`` and approach that value smoothly from
    inside (the force's last step before r_c is tiny, no jump at r_c).
    """
    d = np.linspace(cutoff - width, cutoff + width, n)
    energies, forces = dimer_scan(calc, symbol, d)
    outside = d >= cutoff
    e_far = energies[outside]
    np.testing.assert_allclose(e_far, e_far[0], atol=1e-12, err_msg="energy changes beyond the cutoff")
    np.testing.assert_allclose(forces[outside], 0.0, atol=1e-12, err_msg="force is not zero beyond the cutoff")
    inside = ~outside
    jump_e = abs(energies[inside][-1] - e_far[0])
    jump_f = abs(forces[inside][-1])
    assert jump_e < tol, f"energy jumps by {jump_e:.3g} eV at the cutoff"
    assert jump_f < tol * 100, f"force jumps by {jump_f:.3g} eV/Å at the cutoff"
    # smooth approach: successive differences shrink toward r_c
    de = np.abs(np.diff(energies[inside]))
    assert de[-1] <= de[0] + 1e-15, "energy does not flatten toward the cutoff"


def check_atom_sums(atoms: Atoms, calc: Calculator, rtol: float = 1e-10) -> None:
    """Per-atom energies sum to the energy and per-atom stresses to the stress."""
    atoms = _calc(atoms, calc)
    e = atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), e, rtol=rtol, atol=1e-10)
    if reports_stress(atoms.cell.rank, atoms.pbc):
        np.testing.assert_allclose(atoms.get_stresses().sum(0), atoms.get_stress(), rtol=rtol, atol=1e-10)


def check_batch(structures: Sequence[Atoms], calc, atol: float = 1e-8) -> None:
    """``calc.calculate_batch`` equals evaluating each structure on its own."""
    batch = calc.calculate_batch(structures)
    assert len(batch) == len(structures)
    for atoms, res in zip(structures, batch):
        single = _calc(atoms, copy.copy(calc))
        single.calc.reset()
        np.testing.assert_allclose(res["energy"], single.get_potential_energy(), atol=atol * len(atoms))
        np.testing.assert_allclose(res["forces"], single.get_forces(), atol=atol * 10)
        np.testing.assert_allclose(res["energies"], single.get_potential_energies(), atol=atol * 10)
        if reports_stress(atoms.cell.rank, atoms.pbc):
            np.testing.assert_allclose(res["stress"], single.get_stress(), atol=atol * 10)


def energy_drift_nve(atoms: Atoms, calc: Calculator, steps: int = 1000, dt_fs: float = 1.0, temperature: float = 300.0, seed: int = 0) -> float:
    """Max |E_total(t) - E_total(0)| per atom (eV) over a VelocityVerlet run."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = _calc(atoms, calc)
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    e0 = atoms.get_total_energy()
    worst = 0.0
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    for _ in range(steps):
        dyn.run(1)
        worst = max(worst, abs(atoms.get_total_energy() - e0))
    return worst / len(atoms)
