"""Teacher adapters: Orb (random-weight checkpoint through the real loader), SevenNet, EMT, specs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import Calculator

from mlffd.teachers import KNOWN_PREFIXES, load_teacher, parse_spec, teacher_info
from mlffd.registry import sha256_file
from mlffd.testing import random_orb_checkpoint


def _si(n: int = 1, rattle: float = 0.03, seed: int = 0):
    atoms = bulk("Si", "diamond", a=5.43) * (n, n, n)
    atoms.rattle(rattle, seed=seed)
    return atoms


# -- spec handling ------------------------------------------------------------------------------


def test_parse_spec():
    s = parse_spec("orb:orb-v3-conservative-inf-omat@/tmp/x.ckpt")
    assert (s.prefix, s.name, s.path) == ("orb", "orb-v3-conservative-inf-omat", "/tmp/x.ckpt")
    assert parse_spec("emt").prefix == "emt" and parse_spec("emt").name is None


@pytest.mark.parametrize("spec", ["foo:bar", "", "gap:si"])
def test_unknown_spec_lists_prefixes(spec):
    with pytest.raises(ValueError) as err:
        load_teacher(spec)
    if spec:
        for prefix in KNOWN_PREFIXES:
            assert prefix in str(err.value)


def test_calculator_object_passes_through():
    from ase.calculators.emt import EMT

    calc = EMT()
    assert load_teacher(calc) is calc
    info = teacher_info(calc)
    assert info["spec"].startswith("ase-calculator:") and "EMT" in info["spec"]
    assert info["versions"]["ase"]


def test_bad_type():
    with pytest.raises(TypeError):
        load_teacher(42)  # type: ignore[arg-type]


# -- EMT ----------------------------------------------------------------------------------------


def test_emt():
    from mlffd.testing import check_forces_fd

    calc = load_teacher("emt")
    assert isinstance(calc, Calculator)
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    assert atoms.get_forces().shape == (8, 3)
    check_forces_fd(atoms, calc, eps=1e-4, atol=1e-5)
    assert teacher_info("emt") == {**teacher_info("emt"), "spec": "emt", "checkpoint_sha256": None}
    with pytest.raises(ValueError):
        teacher_info("emt:something")


# -- SevenNet -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sevennet():
    pytest.importorskip("sevenn")
    return load_teacher("sevennet:7net-0")


def test_sevennet_energy_forces(sevennet):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)  # 8 atoms
    atoms.rattle(0.03, seed=2)
    atoms.calc = sevennet
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert f.shape == (8, 3) and np.isfinite(f).all()
    assert -6.0 < e / len(atoms) < -5.0  # eV/atom, about -5.4 for diamond Si (PBE-level)
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-4)
    d = 1e-3
    for i in (0, 5):  # central differences on two atoms (48 evaluations for all would be slow)
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += d
            minus.positions[i, k] -= d
            plus.calc = minus.calc = sevennet
            num = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * d)
            assert abs(num - f[i, k]) < 5e-3, (i, k, num, f[i, k])  # float32 model


def test_sevennet_stress_sign(sevennet):
    """ASE sign: compressing the crystal gives a negative (compressive) ASE stress; matches dE/dstrain."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.02, seed=3)
    atoms.calc = sevennet
    s = atoms.get_stress(voigt=True)
    num = sevennet.calculate_numerical_stress(atoms, d=1e-4, voigt=True)
    np.testing.assert_allclose(s, num, atol=2e-3)
    small = bulk("Si", "diamond", a=5.2, cubic=True)
    small.calc = sevennet
    assert (small.get_stress()[:3] < 0).all()


def test_sevennet_info():
    pytest.importorskip("sevenn")
    info = teacher_info("sevennet:7net-0")
    assert info["spec"] == "sevennet:7net-0"
    assert info["versions"]["sevenn"] and info["versions"]["torch"]
    assert len(info["checkpoint_sha256"]) == 64 and sha256_file(info["checkpoint"]) == info["checkpoint_sha256"]
    with pytest.raises(ValueError, match="not a SevenNet pretrained name"):
        teacher_info("sevennet:no-such-model")
    with pytest.raises(FileNotFoundError):
        teacher_info("sevennet:x@/no/such/file.pth")


# -- CHGNet (optional) --------------------------------------------------------------------------


def test_chgnet_missing_is_clear():
    try:
        import chgnet  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install chgnet"):
            load_teacher("chgnet")
    else:  # pragma: no cover - only where chgnet is installed
        calc = load_teacher("chgnet")
        atoms = _si(1)
        atoms.calc = calc
        assert atoms.get_forces().shape == (2, 3)


# -- Orb (random weights, real loader) ----------------------------------------------------------


@pytest.fixture(scope="module")
def orb_checkpoint(tmp_path_factory):
    pytest.importorskip("orb_models")
    dtype = torch.get_default_dtype()
    path = random_orb_checkpoint(tmp_path_factory.mktemp("orb") / "orb-v3-conservative-inf-omat.ckpt", "conservative", seed=0)
    assert torch.get_default_dtype() == dtype
    return path


def test_orb_local_checkpoint_conservative(orb_checkpoint):
    before = torch.get_default_dtype()
    matmul = torch.get_float32_matmul_precision()
    spec = f"orb:orb-v3-conservative-inf-omat@{orb_checkpoint}"
    calc = load_teacher(spec, precision="float64")
    assert torch.get_default_dtype() == before, "orb loader's default dtype change leaked"
    assert torch.get_float32_matmul_precision() == matmul

    atoms = _si(1, rattle=0.05)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress(voigt=True)
    assert isinstance(e, float) and np.isfinite(e)
    assert f.shape == (2, 3) and s.shape == (6,)
    # units: forces are -dE/dr in eV/Å, stress dE/dε / V in eV/Å^3 (finite differences of the same calculator)
    np.testing.assert_allclose(f, calc.calculate_numerical_forces(atoms, d=1e-4), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s, calc.calculate_numerical_stress(atoms, d=1e-5, voigt=True), rtol=1e-4, atol=1e-6)

    info = teacher_info(calc)
    assert info["spec"] == spec
    assert info["checkpoint_sha256"] == sha256_file(orb_checkpoint)
    assert info["versions"]["orb-models"]
    assert teacher_info(spec)["checkpoint_sha256"] == info["checkpoint_sha256"]


def test_orb_float32_restores_dtype_and_env_dir(orb_checkpoint, monkeypatch):
    monkeypatch.setenv("MLFFD_ORB_CHECKPOINT_DIR", str(orb_checkpoint.parent))
    torch.set_default_dtype(torch.float64)  # a user's non-default choice must survive too
    try:
        calc = load_teacher("orb:orb-v3-conservative-inf-omat")
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    atoms = _si(1)
    atoms.calc = calc
    assert atoms.get_forces().shape == (2, 3) and np.isfinite(atoms.get_forces()).all()
    assert torch.get_default_dtype() == torch.float32  # restored after the calculation too
    assert teacher_info("orb:orb-v3-conservative-inf-omat")["checkpoint"] == str(orb_checkpoint.resolve())


def test_orb_direct_variant(tmp_path):
    pytest.importorskip("orb_models")
    path = random_orb_checkpoint(tmp_path / "direct.ckpt", "direct", max_num_neighbors=20, seed=1)
    calc = load_teacher(f"orb:orb-v3-direct-20-omat@{path}")
    assert torch.get_default_dtype() == torch.float32
    atoms = _si(1)
    atoms.calc = calc
    assert atoms.get_forces().shape == (2, 3) and atoms.get_stress().shape == (6,)
    assert np.isfinite(atoms.get_potential_energy())


def test_orb_errors(tmp_path, monkeypatch):
    pytest.importorskip("orb_models")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(f"orb:orb-v3-conservative-inf-omat@{tmp_path / 'missing.ckpt'}")
    with pytest.raises(ValueError, match="known Orb v3 names"):
        load_teacher("orb:orb-v9-imaginary")


def test_orb_download_failure_is_explained(monkeypatch):
    pytest.importorskip("orb_models")
    import cached_path as cp

    def offline(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(cp, "cached_path", offline)
    monkeypatch.delenv("MLFFD_ORB_CHECKPOINT_DIR", raising=False)
    with pytest.raises(RuntimeError, match="needs internet") as err:
        load_teacher("orb:orb-v3-direct-20-omat")
    assert "@/path/to/" in str(err.value) and "MLFFD_ORB_CHECKPOINT_DIR" in str(err.value)


def test_orb_v06_layout_by_inspection(tmp_path, monkeypatch):
    """orb-models >= 0.6: loaders return (model, adapter); ORBCalculator lives in forcefield.inference.calculator."""
    import sys
    import types

    from ase.calculators.calculator import Calculator as AseCalculator

    seen: dict = {}

    def fake_loader(weights_path="https://example.invalid/x.ckpt", device=None, precision="float32-high", compile=None, train=False):
        seen.update(weights_path=weights_path, device=device, precision=precision, compile=compile)
        torch.set_default_dtype(torch.float64)  # what the real loader does
        return "MODEL", "ADAPTER"

    class FakeORBCalculator(AseCalculator):
        implemented_properties = ["energy", "forces"]

        def __init__(self, model, atoms_adapter, *, device=None):
            super().__init__()
            self.model, self.adapter, self.device = model, atoms_adapter, device

        def calculate(self, atoms=None, properties=None, system_changes=None):
            super().calculate(atoms)
            seen["dtype_during_call"] = torch.get_default_dtype()
            self.results = {"energy": 1.0, "forces": np.zeros((len(atoms), 3))}

    pretrained = types.ModuleType("orb_models.forcefield.pretrained")
    pretrained.ORB_PRETRAINED_MODELS = {"orb-v3-fake": fake_loader}
    inference = types.ModuleType("orb_models.forcefield.inference")
    calcmod = types.ModuleType("orb_models.forcefield.inference.calculator")
    calcmod.ORBCalculator = FakeORBCalculator
    monkeypatch.setitem(sys.modules, "orb_models.forcefield.pretrained", pretrained)
    monkeypatch.setitem(sys.modules, "orb_models.forcefield.inference", inference)
    monkeypatch.setitem(sys.modules, "orb_models.forcefield.inference.calculator", calcmod)

    ckpt = tmp_path / "orb-v3-fake.ckpt"
    ckpt.write_bytes(b"weights")
    calc = load_teacher(f"orb:orb-v3-fake@{ckpt}", device="cpu")
    assert torch.get_default_dtype() == torch.float32
    assert (calc.model, calc.adapter, calc.device) == ("MODEL", "ADAPTER", "cpu")
    assert seen["weights_path"] == str(ckpt) and seen["compile"] is False
    atoms = _si(1)
    atoms.calc = calc
    assert atoms.get_potential_energy() == 1.0
    assert seen["dtype_during_call"] == torch.float32
    assert teacher_info(calc)["checkpoint_sha256"] == sha256_file(ckpt)


def test_ase_class_spec_builds_the_named_calculator_with_literal_arguments():
    """``ase:MODULE:CLASS?k=v``: the same numbers as the class built directly; arguments are
    JSON literals; the spec's provenance has one spelling."""
    from ase.calculators.lj import LennardJones

    from mlffd.teachers import canonical_spec

    spec = "ase:ase.calculators.lj:LennardJones?sigma=2.1&epsilon=0.0103&rc=6.0&smooth=true"
    atoms = _si(1, rattle=0.1)
    ours, direct = atoms.copy(), atoms.copy()
    ours.calc = load_teacher(spec)
    direct.calc = LennardJones(sigma=2.1, epsilon=0.0103, rc=6.0, smooth=True)
    assert ours.get_potential_energy() == direct.get_potential_energy()
    np.testing.assert_array_equal(ours.get_forces(), direct.get_forces())
    assert canonical_spec(spec) == canonical_spec("ase:ase.calculators.lj:LennardJones?rc=6&smooth=true&epsilon=0.0103&sigma=2.1")
    assert teacher_info(spec)["spec"] == canonical_spec(spec)


@pytest.mark.parametrize("spec, message", [
    ("ase:/tmp/evil.py:Calc", "expected 'ase:package.module:CalculatorClass'"),
    ("ase:os:system", "is not an ASE calculator class"),
    ("ase:no_such_module_here:Calc", "cannot import 'no_such_module_here'"),
    ("ase:ase.calculators.lj:LennardJones?sigma", "is not 'name=value'"),
    ("ase:ase.calculators.lj:LennardJones?__import__('os')=1", "is not 'name=value'"),
    ("ase:ase.calculators.emt:EMT?nonsense=1", "does not take these arguments"),
    ("xtb:GFN9-xTB", "unknown xTB method 'GFN9-xTB'"),
])
def test_bad_teacher_specs_are_refused_naming_the_problem(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_teacher(spec)


def test_xtb_teacher_is_gfn2_xtb_with_consistent_forces():
    """``xtb`` is tblite's GFN2-xTB: the energy of water equals tblite's own, and the forces are
    the finite-difference derivative of the energy (for a molecule in vacuum)."""
    pytest.importorskip("tblite", reason="the xtb extra (make setup installs it)")
    from ase.build import molecule
    from ase.calculators.fd import calculate_numerical_forces
    from tblite.ase import TBLite

    water = molecule("H2O")
    water.positions[0] += [0.05, -0.03, 0.02]
    ours, direct = water.copy(), water.copy()
    ours.calc = load_teacher("xtb")
    direct.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert ours.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(ours.get_forces(), calculate_numerical_forces(ours, eps=1e-4), atol=1e-4)
    assert teacher_info("xtb")["spec"] == "xtb:GFN2-xTB" and teacher_info("xtb")["versions"]["tblite"]
