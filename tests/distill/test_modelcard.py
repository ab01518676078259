"""Model cards for any chemistry: a Cu-Au student gets a Cu-Au card (no silicon anywhere),
timed on a structure of its own data against its teacher."""

from __future__ import annotations

import pytest
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


def test_card_carries_md_stability_active_record_and_merged_properties(tmp_path):
    """`mlffd card --nve ... --active ... --properties A --properties B`: the stability table
    counts the passing runs and names why one failed; the active rounds are listed; the rows
    of two properties runs are merged under one verdict."""
    import json

    from md_validation.nve import NVESettings, drift_metrics, nve_verdict

    model = random_artifact(tmp_path / "cuau.mlffd.pt", "ultra-tiny", elements=("Au", "Cu"))
    write(tmp_path / "test.extxyz", _cuau_frames())
    t = np.arange(0.0, 1001.0, 10.0)
    nve = []
    for seed, slope in ((0, 0.2), (1, 5.0)):  # meV/atom/ps: one conserves energy, one drifts
        settings = NVESettings(temperature_K=3000.0, time_fs=1000.0, seed=seed)
        metrics = {"settings": settings.__dict__, "n_atoms": 216, "engine": "lammps",
                   **drift_metrics(t, -5.0 * 216 + slope * 1e-3 * 216 * t / 1000.0, 216)}
        metrics["passed"], metrics["fail_reasons"] = nve_verdict(metrics, settings, completed=True)
        path = tmp_path / f"nve{seed}.json"
        path.write_text(json.dumps(metrics))
        nve.append(path)
    active = {"rounds": [{"round": 1, "explored": 120, "flags": {"failed": 30, "candidate": 20}, "labelled": 40,
                          "selected_by_reason": {"failed_deviation": 25, "audit": 4}, "before": {"flagged_force_rmse_member0": 0.41},
                          "after": {"flagged_force_rmse_member0": 0.12}, "spearman": 0.71}],
              "teacher_calls": 40, "teacher_calls_total_budget": 100, "stop_reason": "max_rounds (1) reached",
              "member_names": ["cuau", "cuau-big"]}
    (tmp_path / "active.json").write_text(json.dumps(active))
    reports = []
    for k, ok in enumerate((True, False)):
        rec = {"section": f"s{k}", "property": f"p{k}", "unit": "eV", "teacher": 1.0, "student": 1.0 if ok else 2.0,
               "error": 0.0 if ok else 100.0, "tolerance": 5.0, "tolerance_kind": "rel_%", "passed": ok, "note": ""}
        reports.append(tmp_path / f"p{k}.json")
        reports[-1].write_text(json.dumps({"student": str(model), "teacher": "emt", "records": [rec], "verdict": "PASS"}))
    card = write_card(model, tmp_path / "test.extxyz", teacher="emt", out_dir=tmp_path / "cards", name="cuau", speed=False,
                      properties=reports, nve=nve, active=tmp_path / "active.json").read_text()
    assert "**1 of 2 runs pass**" in card
    assert "| lammps | 3000 | 0 | 216 | 500 | 1000 | +0.200 |" in card
    assert "FAIL: |drift| 5 > threshold 1 meV/atom/ps" in card
    assert "| 1 | 120 | 30 | 20 | 40 | audit 4, failed_deviation 25 | 0.410 | 0.120 | 0.710 |" in card
    assert "Committee: `cuau`, `cuau-big`" in card
    assert "FAIL: 1 of 2 scored properties outside tolerance" in card and "| s1 | p1 |" in card and "| s0 | p0 |" in card
    (tmp_path / "bad.json").write_text("{}")
    import pytest

    with pytest.raises(ValueError, match="not a nve.json"):
        write_card(model, tmp_path / "test.extxyz", teacher="emt", out_dir=tmp_path / "cards", speed=False, nve=[tmp_path / "bad.json"])


def test_card_of_a_molecular_student_lists_molecules_elements_and_molecular_flags(tmp_path):
    """A drug-like student's card: force errors per element, its training molecules (from the
    distill recipe's sampling YAML) and held-out ones, the molecular property rows, the failed
    molecular flags in words, notes, and a Reproduce block with its own recipe."""
    from mlffd.modelcard import render, sampling_molecules

    pytest.importorskip("rdkit")
    sample = tmp_path / "sample.yaml"
    sample.write_text("seeds:\n  - {name: paracetamol, smiles: 'CC(=O)Nc1ccc(O)cc1'}\n  - {name: box, molecules: [O]}\n")
    recipe = tmp_path / "distill.yaml"
    recipe.write_text("root: .\nsample: sample.yaml\n")
    assert sampling_molecules(recipe) == {"paracetamol": "CC(=O)Nc1ccc(O)cc1"}
    meta = {"elements": ["H", "C", "N", "O"], "teacher": "xtb:GFN2-xTB", "num_parameters": 10, "model": {},
            "num_interactions": 2, "cutoff": 5.0, "interaction_range": 10.0, "dtype": "float32",
            "dataset_sha256": "0" * 64, "created": "now"}
    el = {"atoms": 4, "rmse": 0.2, "mae": 0.1, "r2": 0.97, "angle_mean_deg": 5.0}
    metrics = {"num_frames": 3, "force_rmse": 0.1, "by_element": {"C": el, "H": el, "N": el, "O": el}}
    report = {"student": "m", "teacher": "xtb", "verdict": "FAIL: 1 of 2",
              "records": [{"section": "vibrations", "property": "aspirin_imaginary_modes", "unit": "flag", "teacher": 0.0,
                           "student": 1.0, "error": None, "tolerance": None, "tolerance_kind": "flag", "passed": False},
                          {"section": "geometry", "property": "aspirin_heavy_rmsd_A", "unit": "Å", "teacher": 0.0,
                           "student": 0.03, "error": 0.03, "tolerance": 0.1, "tolerance_kind": "abs", "passed": True}]}
    card = render("druglike-x", meta, metrics, None, "heldout.extxyz", properties=(report, "p.json"), recipe=str(recipe),
                  molecules={"Training molecules": (sampling_molecules(recipe), str(recipe))}, notes="## NVE\n\n100 ps.")
    assert "| H | 4 | 0.2000 | 0.1000 | 0.9700 | 5.0 |" in card
    assert card.index("| H |") < card.index("| C |")  # the model's element order
    assert "| paracetamol | `CC(=O)Nc1ccc(O)cc1` | 11 | 20 |" in card
    assert "imaginary vibrational modes at its own minimum (its minimum is a saddle point) (aspirin)" in card
    assert "| geometry | aspirin_heavy_rmsd_A | Å |" in card
    assert "## NVE\n\n100 ps." in card and f"mlffd distill {recipe} --student druglike-x" in card
    assert "examples/si" not in card and "pair_coeff * * druglike-x H C N O" in card
