"""Shipped models: name resolution with sha256 checks, size, and accuracy on held-out frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mlffd import DistilledCalculator
from mlffd.artifact import read_metadata
from mlffd.registry import REGISTRY, DEFAULT_MODEL, ModelNotFoundError, NamedModel, resolve, sha256_file, shipped_path

DATA = Path(__file__).resolve().parents[2] / "data" / "si"

#: the families of shipped students: element order and teacher in each artifact's metadata
DRUGLIKE = ("druglike-tiny", "druglike-original")
SILICON = tuple(name for name in sorted(REGISTRY) if name not in DRUGLIKE)
FAMILY = {name: (["Si"], "sevennet:7net-0") for name in SILICON} | {
    name: (["H", "C", "N", "O", "F", "S", "Cl"], "xtb:GFN2-xTB") for name in DRUGLIKE
}


def test_default_model_is_shipped():
    assert DEFAULT_MODEL in REGISTRY
    calc = DistilledCalculator()
    assert calc.artifact.path == shipped_path(REGISTRY[DEFAULT_MODEL])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_files(name):
    entry = REGISTRY[name]
    path = resolve(name)
    assert sha256_file(path) == entry.sha256
    # weights (original: 0.46 M float32) plus a novelty reference of one F x F matrix per element
    # (original, 7 elements: 0.7 MB)
    assert path.stat().st_size < 3 * 1024 * 1024, "each shipped artifact must stay under 3 MB"
    meta = read_metadata(path)
    elements, teacher = FAMILY[name]
    assert meta["elements"] == elements
    assert meta["teacher"] == teacher
    assert meta["dataset_sha256"] and meta["metrics"]["force_r2"] > 0.9


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    entry = REGISTRY[DEFAULT_MODEL]
    fake = NamedModel(entry.name, entry.filename, "0" * 64)
    with pytest.raises(ModelNotFoundError, match=r"has sha256 .* expected 0{64}"):
        resolve(DEFAULT_MODEL, registry={DEFAULT_MODEL: fake})
    # a path still works and is not checked against the registry
    copy = tmp_path / "copy.mlffd.pt"
    shutil.copy(resolve(DEFAULT_MODEL), copy)
    assert resolve(copy) == copy


@pytest.mark.parametrize("name", SILICON)
def test_shipped_model_reproduces_teacher_on_held_out_frames(name):
    """An independent check of the card's headline number: force R² on teacher test frames."""
    import numpy as np

    from md_validation.forces import read_frames

    frames = read_frames(str(DATA / "test.extxyz.xz"))[::4]
    calc = DistilledCalculator(name)
    results = calc.calculate_batch(frames)
    pred = np.concatenate([r["forces"] for r in results])
    ref = np.concatenate([f.get_forces() for f in frames])
    r2 = 1.0 - np.sum((pred - ref) ** 2) / np.sum((ref - ref.mean()) ** 2)
    assert r2 > 0.98, f"{name}: force R² {r2:.4f} on held-out teacher frames"
    de = [(r["energy"] - f.get_potential_energy()) / len(f) for r, f in zip(results, frames)]
    assert np.mean(np.abs(de)) < 0.008, f"{name}: energy MAE {np.mean(np.abs(de)) * 1000:.1f} meV/atom"


@pytest.mark.parametrize("name", DRUGLIKE)
def test_druglike_names_resolve_and_give_conservative_forces(name):
    """Each drug-like student loads by name and evaluates a molecule it never saw in training
    (phenacetin, a held-out molecule): finite energy, forces = -dE/dx by central differences."""
    import numpy as np

    pytest.importorskip("rdkit")
    from mlffd.sampling.molecules import molecule_from_smiles

    assert name in REGISTRY
    atoms = molecule_from_smiles("CCOc1ccc(NC(C)=O)cc1")
    calc = DistilledCalculator(name, dtype="float64")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert np.isfinite(energy) and np.all(np.isfinite(forces))
    assert np.abs(forces).max() < 50.0  # an MMFF geometry: moderate forces, not a blow-up
    h = 1e-4
    for atom, axis in ((0, 0), (3, 1), (9, 2), (len(atoms) - 1, 0)):
        moved = [atoms.copy() for _ in range(2)]
        for sign, a in zip((1, -1), moved):
            a.positions[atom, axis] += sign * h
            a.calc = calc
        numeric = -(moved[0].get_potential_energy() - moved[1].get_potential_energy()) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, abs=2e-4), (atom, axis)


@pytest.mark.parametrize("name", DRUGLIKE)
def test_druglike_model_reproduces_teacher_on_held_out_molecules(name):
    """A regression guard for the card's held-out numbers on the blind fifth held-out set (8
    drugs, 300-800 K): the issue's force R² target (0.98; measured 0.993/0.994 on all 240 frames)
    and an energy MAE no worse than shipped (2.53/2.06 meV/atom; the target of 2 is missed)."""
    import numpy as np

    from md_validation.forces import read_frames

    frames = read_frames(str(DATA.parent / "druglike" / "heldout5.extxyz.xz"))[::6]
    results = DistilledCalculator(name).calculate_batch(frames)
    pred = np.concatenate([r["forces"] for r in results])
    ref = np.concatenate([f.get_forces() for f in frames])
    r2 = 1.0 - np.sum((pred - ref) ** 2) / np.sum((ref - ref.mean()) ** 2)
    assert r2 > 0.98, f"{name}: force R² {r2:.4f} on held-out teacher frames"
    energy_mae = np.mean([abs(r["energy"] - f.get_potential_energy()) / len(f) for r, f in zip(results, frames)]) * 1000
    assert energy_mae < 3.0, f"{name}: energy MAE {energy_mae:.2f} meV/atom on held-out teacher frames"


@pytest.mark.lammps
def test_druglike_name_resolves_in_lammps(monkeypatch):
    """``pair_coeff * * druglike-tiny H C N O F S Cl`` resolves the name through
    ``MLFFD_MODELS_DIR``/registry.json (sha256-checked by the plugin) and gives the calculator's
    numbers for a free molecule."""
    import numpy as np

    pytest.importorskip("rdkit")
    from mlffd.lammps import mlffd_pair, run_lammps
    from mlffd.sampling.molecules import molecule_from_smiles

    # the registry of the mlffd this test imports (a worktree's, not only the installed one)
    monkeypatch.setenv("MLFFD_MODELS_DIR", str(shipped_path(REGISTRY["druglike-tiny"]).parent))
    elements = FAMILY["druglike-tiny"][0]
    atoms = molecule_from_smiles("Clc1cccc(Cl)c1NC1=NCCN1")  # clonidine, held out
    got = run_lammps(atoms, mlffd_pair("druglike-tiny", elements), elements, nonperiodic="f")
    ref = atoms.copy()
    ref.calc = DistilledCalculator("druglike-tiny")
    assert got.energy == pytest.approx(ref.get_potential_energy(), abs=1e-4 * len(atoms))
    np.testing.assert_allclose(got.forces, ref.get_forces(), atol=1e-4)


def test_druglike_card_targets_file_is_the_issue_s():
    import json

    from issue_targets import DRUGLIKE_ACCURACY

    path = DATA.parents[1] / "examples" / "druglike" / "targets.json"
    assert json.loads(path.read_text()) == DRUGLIKE_ACCURACY


def _pair_energy(calc: DistilledCalculator, atoms, distances) -> np.ndarray:
    out = []
    for r in distances:
        a = atoms(r)
        a.calc = calc
        out.append(a.get_potential_energy())
    return np.array(out)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_students_are_the_zbl_wall_itself_below_r_inner(name):
    """Whole model, not the prior alone: for every element pair the dimer's energy below the
    pair's r_inner is the ZBL energy (the network does not see the pair there), so no student
    can fall into a well however close two atoms come (a network's extrapolation can reach
    -1e8 eV at 0.15 Å)."""
    import torch
    from ase import Atoms
    from ase.data import atomic_numbers

    from mlffd.models.repulsion import zbl

    calc = DistilledCalculator(name)
    elements, _ = FAMILY[name]
    inner = calc.module.repulsion.r_inner.detach().double().numpy()
    for a, sa in enumerate(elements):
        for b, sb in enumerate(elements[a:], start=a):
            r = np.linspace(0.15, inner[a, b] - 0.01, 6)
            dimer = lambda d: Atoms([sa, sb], positions=[[0, 0, 0], [d, 0, 0]], cell=[30, 30, 30], pbc=False)  # noqa: E731
            e = _pair_energy(calc, dimer, r) - _pair_energy(calc, dimer, [12.0])[0]
            za, zb = (torch.tensor(float(atomic_numbers[s]), dtype=torch.float64) for s in (sa, sb))
            ref = zbl(torch.tensor(r), za, zb)[0].numpy()
            np.testing.assert_allclose(e, ref, rtol=1e-4, atol=1e-3, err_msg=f"{name} {sa}-{sb}")


@pytest.mark.parametrize("name", SILICON)
def test_shipped_silicon_students_repel_monotonically_from_the_bond_to_close_contact(name):
    """The Si dimer from 1.7 Å and a nearest-neighbour pair pushed together inside the crystal
    (the rest held) from its bond, both down to 0.15 Å: the energy never falls as the pair
    closes (by more than 0.01 eV between points 0.02 Å apart), through the switch windows too."""
    from ase import Atoms
    from ase.build import bulk

    calc = DistilledCalculator(name)
    r = np.arange(0.15, 1.7, 0.02)
    dimer = _pair_energy(calc, lambda d: Atoms("Si2", positions=[[0, 0, 0], [d, 0, 0]], cell=[30, 30, 30], pbc=False), r)
    crystal = bulk("Si", "diamond", a=5.46, cubic=True)  # 8 atoms; the 5 Å cutoff sees the periodic images
    bond = crystal.positions[1] - crystal.positions[0]
    unit = bond / np.linalg.norm(bond)

    def pushed(d):
        a = crystal.copy()
        a.positions[1] = a.positions[0] + unit * d
        return a

    rc = np.arange(0.15, np.linalg.norm(bond), 0.02)
    pair = _pair_energy(calc, pushed, rc)
    for label, d, e in (("dimer", r, dimer), ("crystal pair", rc, pair)):
        rises = np.diff(e)  # along increasing distance: a repulsive wall only falls
        assert rises.max() < 0.01, f"{name}: the {label} energy rises by {rises.max():.3g} eV near {d[rises.argmax()]:.2f} Å"
