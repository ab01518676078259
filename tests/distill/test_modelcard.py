"""Model cards for any chemistry: a Cu-Au student gets a Cu-Au card (no silicon anywhere),
timed on a structure of its own data against its teacher."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mlffd.modelcard import speed_structure, write_card
from mlffd.testing import random_artifact


def _cuau_frames(n: int = 4) -> list:
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True) * (2, 1, 1)
        atoms.symbols[::2] = "Au"
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        atoms.info.update(config_type="ordered" if k % 2 else "rattled", trajectory=f"t{k}", teacher="emt")
        frames.append(atoms)
    return frames


def test_card_of_a_cu_au_student_says_cu_au(tmp_path):
    model = random_artifact(tmp_path / "cuau.mlffd.pt", "ultra-tiny", elements=("Au", "Cu"))
    frames = _cuau_frames()
    write(tmp_path / "test.extxyz", frames)
    card = write_card(model, tmp_path / "test.extxyz", teacher="emt", out_dir=tmp_path / "cards", name="cuau").read_text()
    assert "Si" not in card.replace("Simple", "") and "silicon" not in card.lower() and "diamond" not in card
    assert "Student potential for Au-Cu distilled from **none**" in card
    assert "pair_coeff * * cuau Au Cu" in card
    assert "ordered (2), rattled (2)" in card
    assert "-atom structure of the held-out data" in card and "SevenNet" not in card


def test_speed_structure_is_the_data_grown_to_size():
    frames = _cuau_frames(2)
    atoms = speed_structure(frames, min_atoms=64)
    assert len(atoms) >= 64 and set(atoms.get_chemical_symbols()) == {"Au", "Cu"}
    assert len(atoms) % len(frames[0]) == 0 and atoms.calc is None
    lengths = atoms.cell.lengths()
    assert lengths.max() / lengths.min() < 2.1  # grown along the short sides, not one long rod


def test_card_states_targets_only_when_given(tmp_path):
    """A card holds the model's numbers; bounds on them (an issue's targets) come from the caller."""
    import json

    from mlffd.modelcard import render

    from issue_targets import ACCURACY

    meta = {"elements": ["Si"], "teacher": "emt", "num_parameters": 10, "model": {}, "num_interactions": 2, "cutoff": 5.0,
            "interaction_range": 10.0, "dtype": "float32", "dataset_sha256": "0" * 64, "created": "now"}
    metrics = {"num_frames": 3, "force_rmse": 0.1, "force_r2": 0.995}
    plain = render("tiny", meta, metrics, None, "test.extxyz")
    assert "| metric | value |\n" in plain and "target" not in plain.split("## Speed")[0] and "--targets" not in plain
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(ACCURACY["tiny"]))
    with_targets = render("tiny", meta, metrics, None, "test.extxyz", targets=(ACCURACY["tiny"], str(path)))
    assert "| force RMSE | 0.1000 eV/Å | ≤ 0.12 — met |" in with_targets
    assert "| force R² | 0.99500  | ≥ 0.99 — met |" in with_targets and f"--targets {path}" in with_targets
