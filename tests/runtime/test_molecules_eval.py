"""Non-periodic structures through the student: invariances, stress only where it means something,
training graphs without stress, and LAMMPS (free and shrink-wrapped boundaries) = ASE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from scipy.spatial.transform import Rotation

from mlffd.calculator import DistilledCalculator
from mlffd.models import ModelConfig
from mlffd.testing import random_artifact

ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    cfg = ModelConfig(elements=ELEMENTS, cutoff=4.5, features=16, channels=8, hidden=16, readout_hidden=8)
    return random_artifact(tmp_path_factory.mktemp("mol") / "mol.mlffd.pt", config=cfg, dtype=torch.float64, seed=3)


def drug_like() -> Atoms:
    """A molecule with every element of the drug-like family (no cell, pbc False)."""
    atoms = molecule("CH3CONH2")  # acetamide, then substituents with F, S and Cl
    atoms += Atoms("FSCl", positions=[[2.6, 1.2, 0.4], [-2.3, -1.1, 0.5], [-1.0, 2.4, -0.8]])
    atoms.rattle(0.05, seed=1)
    return atoms


def evaluate(atoms: Atoms, path) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = DistilledCalculator(path)
    return atoms.get_potential_energy(), atoms.get_forces()


def test_energy_is_invariant_under_rotation_and_translation_and_forces_rotate(artifact):
    atoms = drug_like()
    e0, f0 = evaluate(atoms, artifact)
    assert np.abs(f0).max() > 1e-3  # not trivially zero
    for seed in range(3):
        rot = Rotation.random(random_state=seed).as_matrix()
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.random.default_rng(seed).normal(0, 20, 3)
        e, f = evaluate(moved, artifact)
        assert e == pytest.approx(e0, abs=1e-9 * len(atoms))
        np.testing.assert_allclose(f, f0 @ rot.T, atol=1e-9)


def test_a_molecule_in_a_box_is_the_same_molecule(artifact):
    """No cell, a box with free boundaries, and a periodic box wider than two cutoffs all give the
    same energy and forces; only the periodic box reports a stress."""
    atoms = drug_like()
    e0, f0 = evaluate(atoms, artifact)
    for pbc in (False, (True, True, False), True):
        boxed = atoms.copy()
        boxed.center(vacuum=6.0)
        boxed.pbc = pbc
        boxed.calc = DistilledCalculator(artifact)
        assert boxed.get_potential_energy() == pytest.approx(e0, abs=1e-10)
        np.testing.assert_allclose(boxed.get_forces(), f0, atol=1e-10)
        if np.any(pbc):
            assert boxed.get_stress().shape == (6,)
        else:
            with pytest.raises(PropertyNotImplementedError, match="periodic"):
                boxed.get_stress()
            assert "stress" not in boxed.calc.calculate_batch([boxed])[0]


def test_training_graphs_of_molecules_carry_no_stress():
    """A teacher stress on a non-periodic frame (or a slab) is dropped: no stress loss, and a batch
    mixing them with a periodic frame masks exactly their stresses."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlffd.data import collate, to_graphs

    frames = []
    for atoms, pbc in ((drug_like(), False), (drug_like(), (True, True, False)), (bulk("Cu", "fcc", a=3.6) * 2, True)):
        if atoms.cell.rank < 3:
            atoms.center(vacuum=5.0)
        atoms.pbc = pbc
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)), stress=np.ones(6))
        frames.append(atoms)
    graphs = to_graphs(frames, ("H", "C", "N", "O", "F", "S", "Cl", "Cu"), 4.5)
    assert [g.stress is None for g in graphs] == [True, True, False]
    batch = collate(graphs)
    assert batch.stress_mask.tolist() == [False, False, True]
    # the neighbour list of the free molecule has no periodic shifts
    assert graphs[0].num_edges > 0 and np.abs(graphs[0].shifts).max() == 0.0


@pytest.mark.lammps
@pytest.mark.parametrize("boundary", ["m", "f"])
def test_lammps_equals_ase_for_a_molecule(artifact, boundary):
    """``pair_style mlffd`` on a cell-less molecule (padded box, shrink-wrapped or fixed
    boundaries): the same energy, forces and per-atom energies as DistilledCalculator."""
    from mlffd.lammps import mlffd_pair, run_lammps

    atoms = drug_like()
    got = run_lammps(atoms, mlffd_pair(artifact, list(ELEMENTS)), list(ELEMENTS), nonperiodic=boundary)
    ref = atoms.copy()
    ref.calc = DistilledCalculator(artifact)
    assert got.energy == pytest.approx(ref.get_potential_energy(), abs=1e-9 * len(atoms))
    np.testing.assert_allclose(got.forces, ref.get_forces(), atol=1e-8)
    np.testing.assert_allclose(got.energies, ref.get_potential_energies(), atol=1e-9)
    np.testing.assert_allclose(got.positions, atoms.positions, atol=1e-8)


@pytest.mark.lammps
def test_python_lammps_module_with_free_boundaries(artifact, tmp_path):
    """The deck a user writes: ``boundary f f f`` and a large box, driven by the lammps module."""
    from lammps_module import run_python_lammps

    from mlffd.lammps import molecule_box, write_data

    atoms, _ = molecule_box(drug_like())
    write_data(atoms, tmp_path / "mol.data", list(ELEMENTS))
    energy, forces = run_python_lammps(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary f f f
        read_data {tmp_path / 'mol.data'}
        pair_style mlffd
        pair_coeff * * {artifact} {' '.join(ELEMENTS)}
        run 0
        """, forces=True)
    ref = atoms.copy()
    ref.calc = DistilledCalculator(artifact)
    assert energy == pytest.approx(ref.get_potential_energy(), abs=1e-9 * len(atoms))
    np.testing.assert_allclose(forces, ref.get_forces(), atol=1e-8)


@pytest.mark.lammps
@pytest.mark.parametrize("nprocs", [1, 2])
def test_molecule_example_deck_runs_and_conserves_energy(artifact, tmp_path, nprocs):
    """examples/lammps/in.molecule.nve with a random H C N O F S Cl model: free boundaries, no
    atom lost, total energy flat over 200 steps of 0.5 fs."""
    import shutil
    from pathlib import Path

    from mlffd.lammps import parse_thermo, run_deck

    examples = Path(__file__).resolve().parents[2] / "examples" / "lammps"
    shutil.copy(examples / "paracetamol.data", tmp_path / "paracetamol.data")
    text = (examples / "in.molecule.nve").read_text()
    deck = f"variable model index {artifact}\nvariable steps index 200\n" + text.replace("thermo          100", "thermo          20")
    output = run_deck(deck, tmp_path, nprocs=nprocs, timeout=300)
    assert "Loop time" in output and "ERROR" not in output and "Lost atoms" not in output
    thermo = parse_thermo(output)
    etot = np.asarray(thermo["TotEng"])
    assert len(etot) == 11 and np.ptp(etot) / 20 < 1e-3  # eV per atom


def test_card_speed_of_a_molecule_model_needs_no_stress(artifact):
    """``mlffd card`` times energy + forces on a molecule (no stress to ask for)."""
    from mlffd.modelcard import measure_speed

    speed = measure_speed(artifact, "ase:ase.calculators.lj:LennardJones?rc=6.0", drug_like(), repeats=2)
    assert speed["atoms"] == len(drug_like()) and speed["stress"] is False and speed["speedup"] > 0
