"""Molecule sampling: SMILES seeds (RDKit conformers), torsion coverage, boxes of molecules, and
the validation of their keys."""

from __future__ import annotations

import numpy as np
import pytest

from mlffd.sampling import SampleConfig, config_hash, plan, run_sampling
from mlffd.sampling.boxes import box_length, pack_box
from mlffd.sampling.molecules import conformer_index, molecule_from_smiles, perceive_bonds
from mlffd.sampling.torsions import rotatable_bonds, twist

pytest.importorskip("rdkit")

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"


def test_smiles_seed_has_distinct_conformers_and_its_bonds():
    atoms = molecule_from_smiles("CCCCO", 3)
    assert atoms.get_chemical_formula() == "C4H10O"
    assert not atoms.pbc.any() and atoms.cell.rank == 0
    confs = atoms.info["conformers"]
    assert confs.shape[1:] == (15, 3) and len(confs) >= 2
    assert np.abs(confs[0] - confs[1]).max() > 0.1
    assert len(atoms.info["bonds"]) == 14  # a tree: atoms - 1
    d = np.linalg.norm(confs[0][:, None] - confs[0][None], axis=-1) + np.eye(15) * 9
    assert d.min() > 0.9  # pre-optimised: no overlapping atoms


def test_conformers_follow_the_temperature_ladder():
    assert [conformer_index(0, k, 3) for k in range(3)] == [0, 1, 2]
    assert sorted(conformer_index(r, 1, 3) for r in range(3)) == [0, 1, 2]


def test_bad_smiles_is_an_error_naming_the_seed():
    with pytest.raises(ValueError, match=r"seed 'bad': 'C1CC' is not a valid SMILES"):
        SampleConfig.from_dict({"teacher": "emt", "seeds": [{"name": "bad", "smiles": "C1CC"}],
                                "tasks": [{"name": "md", "seed": "bad"}]})
    with pytest.raises(ValueError, match=r"seed 'box': molecules\[1\]: 'xx' is not a valid SMILES"):
        SampleConfig.from_dict({"teacher": "emt", "seeds": [{"name": "box", "molecules": ["O", "xx"], "counts": [1, 1],
                                                             "density": 1.0}], "tasks": [{"name": "md", "seed": "box"}]})


@pytest.mark.parametrize("task, seed, message", [
    ({"strain": 0.02}, {"smiles": "CCO"}, "strain does not apply to the molecule seed 'm'"),
    ({"relax": True}, {"smiles": "CCO"}, "relax does not apply to the molecule seed 'm'"),
    ({"kind": "melt_quench"}, {"smiles": "CCO"}, "kind melt_quench does not apply to the molecule seed 'm'"),
    ({"ensemble": "npt"}, {"smiles": "CCO"}, "has no pressure"),
    ({"twist": 1}, {"symbol": "Si"}, "twist rotates bonds of one molecule; seed 'm' is a crystal"),
    ({"twist": -1}, {"smiles": "CCO"}, "twist must be >= 0"),
    ({}, {"smiles": "CCO", "conformers": 0}, "conformers must be >= 1"),
    ({}, {"symbol": "Si", "conformers": 2}, "conformers is for a 'smiles' seed"),
    ({}, {"molecules": ["O"], "counts": [1, 2], "density": 1.0}, "counts must give a number >= 0 for each of the 1"),
    ({}, {"molecules": ["O"], "counts": [4]}, "density must be > 0"),
    ({}, {"smiles": "CCO", "density": 1.0}, "density belong"),
    ({}, {"smiles": "CCO", "symbol": "Si"}, "give exactly one of 'file', 'symbol', 'smiles' or 'molecules'"),
])
def test_molecule_keys_are_validated_by_name(task, seed, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig.from_dict({"teacher": "emt", "coverage": False, "seeds": [{"name": "m", **seed}],
                                "tasks": [{"name": "t", "seed": "m", **task}]})


def test_a_task_over_several_seeds_becomes_one_task_per_seed():
    cfg = SampleConfig.from_dict({
        "teacher": "emt", "seeds": [{"name": "a", "smiles": "CO"}, {"name": "b", "smiles": "CCO"}, {"name": "c", "symbol": "Cu", "crystal": "fcc"}],
        "coverage": False, "tasks": [{"name": "md", "seeds": ["*"], "temperatures": [300, 600]}, {"name": "x", "seeds": ["b"]}]})
    assert [t.name for t in cfg.expanded().tasks] == ["md_a", "md_b", "x_b"]
    assert {t.id for t in plan(cfg)} >= {"md_a/train0/T300", "md_b/train0/T600", "x_b/train0/T300"}
    with pytest.raises(ValueError, match="give exactly one of 'seed' or 'seeds'"):
        SampleConfig.from_dict({"teacher": "emt", "seeds": [{"name": "a", "smiles": "CO"}], "tasks": [{"name": "md"}]})
    with pytest.raises(ValueError, match=r"seeds must be distinct seed names"):
        SampleConfig.from_dict({"teacher": "emt", "seeds": [{"name": "a", "smiles": "CO"}], "tasks": [{"name": "md", "seeds": ["z"]}]})


def test_configs_without_molecule_keys_keep_their_hash():
    """The molecule keys at their defaults are left out of the hash (a started run resumes)."""
    import hashlib
    import json

    cfg = SampleConfig.from_dict({"teacher": "emt", "coverage": False, "seeds": [{"name": "cu", "symbol": "Cu", "crystal": "fcc"}],
                                  "tasks": [{"name": "md", "seed": "cu"}]})
    d = cfg.to_dict()
    for k in ("threads", "device", "output_dir", "coverage", "base_dir"):
        d.pop(k)
    new_seed_keys = ("prototype", "smiles", "conformers", "molecules", "counts", "density", "packing_distance")
    new_task_keys = ("relax", "relax_steps", "relax_fmax", "volume_range", "contact_range", "push_pairs", "min_separation",
                     "seeds", "twist", "keep_symmetry", "interstitial_site")
    for s in d["seeds"]:
        for k in new_seed_keys:
            s.pop(k)
    for t in d["tasks"]:
        for k in new_task_keys:
            t.pop(k)
    assert config_hash(cfg) == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def test_twist_turns_a_rotatable_bond_and_keeps_bond_lengths():
    atoms = molecule_from_smiles("CCCC", 1)
    bonds, orders = atoms.info["bonds"], atoms.info["bond_orders"]
    assert rotatable_bonds(atoms.numbers, bonds, orders) == [(1, 2)]  # only the middle C-C
    before = atoms.get_dihedral(0, 1, 2, 3)
    turned, n = twist(atoms, bonds, 1, np.random.default_rng(3), orders)
    assert n == 1
    after = turned.get_dihedral(0, 1, 2, 3)
    assert abs((after - before + 180) % 360 - 180) > 10
    lengths = lambda p: np.linalg.norm(p[bonds[:, 0]] - p[bonds[:, 1]], axis=1)  # noqa: E731
    np.testing.assert_allclose(lengths(turned.positions), lengths(atoms.positions), atol=1e-10)
    # bonds perceived from positions (an xyz file) find the same rotatable bond
    assert [tuple(sorted(b)) for b in rotatable_bonds(atoms.numbers, perceive_bonds(atoms))] == [(1, 2)]
    # a double bond is not turned when bond orders are known
    ethene = molecule_from_smiles("CC=CC", 1)
    assert rotatable_bonds(ethene.numbers, ethene.info["bonds"], ethene.info["bond_orders"]) == []


def test_box_of_molecules_has_the_density_and_no_overlaps():
    atoms = pack_box(["O", "CO"], [6, 2], 0.9, 2.0, np.random.default_rng(0))
    assert atoms.pbc.all() and atoms.get_chemical_formula() == "C2H20O8"
    grams = atoms.get_masses().sum() / 6.02214076e23
    assert grams / (atoms.get_volume() * 1e-24) == pytest.approx(0.9, rel=1e-6)  # ASE's Avogadro constant is CODATA 2014
    assert box_length(atoms.get_masses().sum(), 0.9) == pytest.approx(atoms.cell.lengths()[0])
    mol = np.repeat(np.arange(8), [6, 6, 3, 3, 3, 3, 3, 3])  # methanol (6 atoms) placed first
    d = atoms.get_all_distances(mic=True)
    assert d[mol[:, None] != mol[None, :]].min() >= 2.0
    with pytest.raises(ValueError, match="could not place molecule"):
        pack_box(["O"], [40], 3.0, 2.5, np.random.default_rng(0))


def test_sampling_from_smiles_gives_valid_gas_phase_frames(tmp_path):
    """Teacher MD (GFN2-xTB) of a molecule from SMILES at a temperature ladder, plus torsion MD:
    non-periodic frames of the molecule's elements with energy and forces, no stress."""
    pytest.importorskip("tblite")
    cfg = SampleConfig.from_dict({
        "teacher": "xtb", "coverage": False, "output_dir": str(tmp_path), "threads": 1,
        "seeds": [{"name": "propanol", "smiles": "CCCO", "conformers": 2}],
        "tasks": [{"name": "md", "seeds": ["*"], "temperatures": [300, 900], "equilibrate": 2, "steps": 6, "sample_every": 3,
                   "timestep_fs": 0.5, "copies": 1},
                  {"name": "tor", "seed": "propanol", "twist": 1, "equilibrate": 1, "steps": 3, "sample_every": 3,
                   "timestep_fs": 0.5, "test_repeats": 1}],
    })
    result = run_sampling(cfg, progress=False)
    assert result.complete
    from ase.io import read

    frames = read(result.files["train"], ":")
    assert len(frames) == 2 * 4 + 1 and len(read(result.files["test"], ":")) == 1
    for f in frames:
        assert f.get_chemical_formula() == "C3H8O"
        assert not f.pbc.any()
        assert set(f.calc.results) >= {"energy", "forces"} and "stress" not in f.calc.results
        assert np.isfinite(f.get_forces()).all() and np.abs(f.get_forces()).max() < 50
        assert f.info["teacher"] == "xtb:GFN2-xTB"
    assert {f.info["config_type"] for f in frames} == {"molecule", "torsion"}
    assert {f.info["trajectory"] for f in frames} == {"md_propanol/train0/T300", "md_propanol/train0/T900", "tor/train0/T300"}


def test_druglike_recipe_lists_and_holds_out_its_molecules():
    """examples/druglike: every training and held-out SMILES is documented in its README, no
    held-out molecule is in any training list (canonical SMILES, so that another spelling of the
    same molecule is caught), and the elements are H, C, N, O, F, S, Cl."""
    from pathlib import Path

    from rdkit import Chem

    from mlffd.sampling import load_config

    root = Path(__file__).resolve().parents[2] / "examples" / "druglike"
    readme = (root / "README.md").read_text()
    training = ("sample.yaml", "sample-heterocycles.yaml", "sample-more-drugs.yaml", "sample-rings.yaml", "sample-enumerated.yaml",
                "sample-enumerated2.yaml", "sample-enumerated3.yaml", "sample-enumerated4.yaml", "sample-enumerated5.yaml",
                "sample-enumerated6.yaml", "sample-drugs3.yaml")
    heldout = ("sample-heldout.yaml", "sample-heldout2.yaml", "sample-heldout3.yaml", "sample-heldout4.yaml",
               "sample-heldout5.yaml", "sample-heldout6.yaml")
    canon = {}
    for name in (*training, *heldout):
        cfg = load_config(root / name)
        smiles = [s.smiles for s in cfg.seeds if s.smiles is not None]
        assert smiles and all(f"`{s}`" in readme for s in smiles), name
        canon[name] = {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles}
        assert len(canon[name]) == len(smiles), f"{name} lists a molecule twice"
        for s in smiles:
            assert {a.GetSymbol() for a in Chem.AddHs(Chem.MolFromSmiles(s)).GetAtoms()} <= {"H", "C", "N", "O", "F", "S", "Cl"}
    assert all(len(canon[name]) >= 8 for name in heldout)
    for name in training:
        assert not canon[name] & set().union(*(canon[h] for h in heldout)), name
    for k, name in enumerate(training):  # each list adds molecules the earlier ones lack
        assert not canon[name] & set().union(*(canon[earlier] for earlier in training[:k])), name
    # lists labelled but not (yet) trained on: the seventh enumerated list and the calibration set of
    # the uncertainty, which must stay out of every training list and every test set
    later = ("sample-enumerated7.yaml", "sample-calibration.yaml")
    for name in later:
        smiles = [s.smiles for s in load_config(root / name).seeds]
        canon[name] = {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles}
        assert len(canon[name]) == len(smiles), f"{name} lists a molecule twice"
        assert not canon[name] & set().union(*(canon[other] for other in (*training, *heldout))), name
    for k, name in enumerate(later):
        assert not canon[name] & set().union(*(canon[other] for other in later[:k])), name


@pytest.mark.parametrize("batch, name", [(1, "sample-enumerated.yaml"), (2, "sample-enumerated2.yaml"),
                                         (3, "sample-enumerated3.yaml"), (4, "sample-enumerated4.yaml"),
                                         (5, "sample-enumerated5.yaml"), (6, "sample-enumerated6.yaml"),
                                         (7, "sample-enumerated7.yaml"), (8, "sample-calibration.yaml")])
def test_the_enumerated_druglike_lists_are_what_their_script_writes(tmp_path, batch, name):
    """examples/druglike/sample-enumerated*.yaml are reproducible: their generator writes the
    committed files byte for byte."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "druglike"
    out = tmp_path / name
    subprocess.run([sys.executable, str(root / "enumerate_molecules.py"), "--batch", str(batch), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == (root / name).read_text()


def test_an_xyz_molecule_gets_torsions_from_perceived_bonds_and_single_points(tmp_path):
    """A molecule from an xyz file (no cell) is sampled like a SMILES seed: twisted MD (bonds from
    RDKit's perception) and rattled single points, all non-periodic and without stress."""
    pytest.importorskip("tblite")
    from ase.io import read, write

    write(tmp_path / "butanol.xyz", molecule_from_smiles("CCCCO", 1))
    cfg = SampleConfig.from_dict({
        "teacher": "xtb", "coverage": False, "output_dir": str(tmp_path / "out"), "threads": 1,
        "seeds": [{"name": "butanol", "file": str(tmp_path / "butanol.xyz")}],
        "tasks": [{"name": "tor", "seed": "butanol", "twist": 2, "equilibrate": 1, "steps": 4, "sample_every": 2, "timestep_fs": 0.5},
                  {"name": "pts", "seed": "butanol", "kind": "single", "steps": 2, "copy_rattle": 0.05}],
    })
    result = run_sampling(cfg, progress=False)
    frames = read(result.files["train"], ":")
    assert [f.info["config_type"] for f in frames] == ["torsion", "torsion", "molecule", "molecule"]
    assert all(not f.pbc.any() and "stress" not in f.calc.results for f in frames)


def test_druglike_heldout_table_agrees_with_mlffd_evaluate_and_splits_by_molecule():
    """examples/druglike/heldout_table.py: its per-set row is `mlffd evaluate`'s numbers, and its
    per-molecule rows cover the set (frame-weighted energy MAE of the molecules = the set's)."""
    import importlib.util
    from pathlib import Path

    from mlffd.training.evaluate import evaluate

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("heldout_table", root / "examples" / "druglike" / "heldout_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = str(root / "data" / "druglike" / "heldout.extxyz.xz")
    text = module.tables("druglike-tiny", (data,))
    m = evaluate("druglike-tiny", data)
    row = next(line for line in text.splitlines() if line.startswith("| heldout |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["240", f"{m['force_rmse']:.3f}", f"{m['force_r2']:.3f}", f"{m['energy_mae_mev_per_atom']:.2f}"]
    molecules = [line.split("|") for line in text.splitlines() if line.startswith("| heldout | ") and line.count("|") == 7]
    assert len(molecules) == 8  # 30 frames each
    assert abs(sum(float(r[4]) for r in molecules) / 8 - m["energy_mae_mev_per_atom"]) < 0.01


def test_druglike_novelty_table_matches_the_calculator_and_its_spearman():
    """examples/druglike/novelty_table.py: a molecule's energy MAE and novelty are the means of
    DistilledCalculator's per frame, and the stated Spearman is scipy's on the rows."""
    import importlib.util
    import sys
    from pathlib import Path

    import numpy as np
    from scipy.stats import spearmanr

    from mlffd.calculator import DistilledCalculator
    from mlffd.data import read_frames

    root = Path(__file__).resolve().parents[2] / "examples" / "druglike"
    sys.path.insert(0, str(root))  # novelty_table imports heldout_table, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("novelty_table", root / "novelty_table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        data = str(root.parents[1] / "data" / "druglike" / "heldout5.extxyz.xz")
        rows = module.rows("druglike-tiny", (data,))
        text = module.table("druglike-tiny", (data,))
    finally:
        sys.path.remove(str(root))
    assert len(rows) == 8
    frames = [f for f in read_frames(data) if module.molecule_of(f) == rows[0][1]]
    results = DistilledCalculator("druglike-tiny", uncertainty=True).calculate_batch(frames)
    assert rows[0][3] == pytest.approx(np.mean([r["novelty"] for r in results]), rel=1e-9)
    assert rows[0][2] == pytest.approx(np.mean([abs(r["energy"] - f.get_potential_energy()) / len(f) * 1000
                                                for r, f in zip(results, frames)]), rel=1e-6)
    rho = spearmanr([r[2] for r in rows], [r[3] for r in rows]).statistic
    assert f"Spearman ρ of the energy MAE with the novelty: {rho:.2f}" in text
