"""Issue 22's red-team matrix, ASE side: bad geometry, planted and damaged artifacts, non-finite outputs.

Each case failed before the geometry guards (mlffd/geometry.py), the module checks and CRC
verification at load (mlffd/artifact.py) and the output checks of the calculator.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from mlffd import DistilledCalculator
from mlffd.artifact import METADATA_FILE, ArtifactError
from mlffd.contract import GEOMETRY
from mlffd.geometry import GeometryError
from mlffd.registry import resolve


@pytest.fixture(scope="module")
def calc():
    return DistilledCalculator("ultra-tiny")


@pytest.fixture()
def si():
    return bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)


def energy(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy()


# -- case 1: overlapping atoms ---------------------------------------------------------------

@pytest.mark.parametrize("gap", [0.0, 0.5 * GEOMETRY.min_pair_distance_A])
def test_overlapping_atoms_are_an_error_naming_them(calc, si, gap):
    si.positions[5] = si.positions[2] + [gap, 0, 0]
    with pytest.raises(GeometryError, match=r"atom [25] is .* Å from atom [25]: overlapping atoms"):
        energy(calc, si)
    with pytest.raises(GeometryError, match=r"structure 1 of 2: atom [25] is .* from atom [25]"):
        calc.calculate_batch([bulk("Si", cubic=True), si])


def test_atom_on_its_own_image_is_an_error():
    atoms = Atoms("Si", cell=[GEOMETRY.min_pair_distance_A / 2, 5, 5], pbc=[True, False, False])
    with pytest.raises(GeometryError):
        energy(DistilledCalculator("ultra-tiny"), atoms)


# -- case 2: extreme but finite geometry -------------------------------------------------------

@pytest.mark.parametrize("value", [1e300, -1e12, 1.5 * GEOMETRY.max_abs_coordinate_A])
def test_coordinates_beyond_the_limit_are_an_error(calc, si, value):
    si.positions[3, 1] = value
    with pytest.raises(GeometryError, match=r"atom\(s\) \[3\] have coordinates up to .*max_abs_coordinate_A"):
        energy(calc, si)


@pytest.mark.parametrize("lattice_steps", [1, 7, 9_206_077])
def test_atom_displaced_by_lattice_vectors_gives_the_same_result(calc, si, lattice_steps):
    """Up to 1e8 Å along a periodic direction is legal: the same crystal, the same numbers
    (float32 model: the far atom is brought back before the model sees differences of large numbers)."""
    ref = si.copy()
    ref.calc = calc
    e0, f0, s0 = ref.get_potential_energy(), ref.get_forces(), ref.get_stress()
    moved = si.copy()
    moved.positions[1] += lattice_steps * si.cell[0]
    moved.calc = DistilledCalculator("ultra-tiny")
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-4)
    np.testing.assert_allclose(moved.get_forces(), f0, atol=1e-4)
    np.testing.assert_allclose(moved.get_stress(), s0, atol=1e-6)
    batch = calc.calculate_batch([moved])[0]
    assert batch["energy"] == pytest.approx(e0, abs=1e-4)


def test_far_atom_in_an_open_direction_is_isolated_not_nan(calc):
    dimer = Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]])
    far = dimer + Atoms("Si", positions=[[0, 0, 1e7]])
    lone = Atoms("Si", positions=[[0, 0, 0]])
    assert energy(calc, far) == pytest.approx(energy(calc, dimer) + energy(calc, lone), abs=1e-4)


@pytest.mark.parametrize("length", [1e-6, 1e-3])
def test_degenerate_cell_vector_is_an_error_before_any_allocation(calc, si, length):
    si.set_cell([si.cell[0], si.cell[1], [0, 0, length]], scale_atoms=False)
    with pytest.raises(GeometryError, match=r"cell too thin for the cutoff|neighbours per atom"):
        energy(calc, si)


def test_collapsed_cell_is_an_error(calc, si):
    si.set_cell([si.cell[0], si.cell[1], [0, 0, 0.1]], scale_atoms=True)
    with pytest.raises(GeometryError, match=r"neighbours per atom"):
        energy(calc, si)


def test_singular_periodic_cell_is_an_error(calc, si):
    si.set_cell([si.cell[0], si.cell[0] * 2, si.cell[2]], scale_atoms=False)
    with pytest.raises(GeometryError, match=r"singular"):
        energy(calc, si)


# -- case 5: metadata that does not describe the module ------------------------------------------

def planted(tmp_path, name="planted.mlffd.pt", edit=None, module=None, source="ultra-tiny"):
    """A copy of a shipped artifact with its metadata changed by ``edit`` (and/or another module)."""
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(resolve(source)), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    if edit:
        edit(meta)
    path = tmp_path / name
    torch.jit.save(module if module is not None else loaded, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
    return path


@pytest.mark.parametrize(
    "field,value,message",
    [("cutoff", 3.0, r"metadata 'cutoff' is 3.0 but the module's cutoff is 5.0"),
     ("num_interactions", 1, r"metadata 'num_interactions' is 1 but the module has 2 interaction layers"),
     ("elements", ["Si", "C"], r"metadata 'elements' lists 2 element\(s\) but the module has 1"),
     ("dtype", "float64", r"metadata 'dtype' is 'float64' but the module's parameters are float32")],
)
def test_metadata_is_checked_against_the_module(tmp_path, field, value, message):
    def edit(meta: dict) -> None:
        meta[field] = value
        if field == "elements" and "masses" in meta:  # one mass per element, so only the count is wrong
            meta["masses"] = [28.085] * len(value)

    path = planted(tmp_path, edit=edit)
    with pytest.raises(ArtifactError, match=f"{path.name}: {message}"):
        DistilledCalculator(path)


class _NotAStudent(torch.nn.Module):
    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor, shifts: torch.Tensor,
                mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"energy": positions.sum()}


class _WrongOutputs(_NotAStudent):
    def __init__(self) -> None:
        super().__init__()
        self.cutoff = 5.0


def test_random_module_with_valid_metadata_is_rejected_naming_the_file(tmp_path):
    path = planted(tmp_path, module=torch.jit.script(_NotAStudent()))
    with pytest.raises(ArtifactError, match=f"{path.name}: the TorchScript module has no 'cutoff' attribute"):
        DistilledCalculator(path)
    path = planted(tmp_path, name="outputs.mlffd.pt", module=torch.jit.script(_WrongOutputs()))
    atoms = bulk("Si")
    atoms.calc = DistilledCalculator(path)
    with pytest.raises(ArtifactError, match=f"{path.name}: the model returned no atom_energies, forces"):
        atoms.get_potential_energy()


# -- case 6: damaged files and non-finite outputs -------------------------------------------------

def test_flipped_byte_in_the_weights_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "damaged.mlffd.pt"
    shutil.copy(resolve("ultra-tiny"), path)
    with zipfile.ZipFile(path) as zf:
        member = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 1000)
    raw = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra field, then the stored bytes
    start = member.header_offset + 30 + int.from_bytes(raw[member.header_offset + 26:member.header_offset + 28], "little") \
        + int.from_bytes(raw[member.header_offset + 28:member.header_offset + 30], "little")
    raw[start + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=f"{path.name}: damaged file: archive member .*{member.filename.split('/')[-1]} fails"):
        DistilledCalculator(path)


def test_non_finite_outputs_are_an_error_naming_the_atoms(tmp_path, si):
    module = torch.jit.load(str(resolve("ultra-tiny")))
    with torch.no_grad():
        next(iter(module.parameters())).fill_(float("nan"))
    path = planted(tmp_path, name="nan.mlffd.pt", module=module)
    calc = DistilledCalculator(path)
    with pytest.raises(FloatingPointError, match=r"nan.mlffd.pt: non-finite energy, forces or virial on atom\(s\) \[0, 1, 2"):
        energy(calc, si)
    with pytest.raises(FloatingPointError, match=r"non-finite"):
        calc.calculate_batch([si, si])


# -- case 10: one calculator per thread ----------------------------------------------------------

def test_thread_safety_is_documented():
    assert "one calculator per thread" in " ".join(DistilledCalculator.__doc__.split())
