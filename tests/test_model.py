"""The student architecture: sizes, TorchScript, dtypes, conservative outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlffd.models import PRESETS, ModelConfig, StudentPotential, build, num_parameters, preset
from mlffd.models.potential import polynomial_envelope
from mlffd.neighbors import neighbor_list
from mlffd.testing import random_student, silicon

TARGETS = {"original": 427_000, "tiny": 77_000, "ultra-tiny": 21_000}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_budgets(name):
    n = num_parameters(StudentPotential(preset(name)))
    assert abs(n - TARGETS[name]) <= 0.10 * TARGETS[name], f"{name}: {n} parameters"


def _inputs(atoms, dtype, cutoff=5.0):
    e = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return (
        torch.tensor(atoms.positions, dtype=dtype),
        torch.zeros(len(atoms), dtype=torch.long),
        torch.tensor(np.stack([e.i, e.j])),
        torch.tensor(e.shifts(atoms.cell.array), dtype=dtype),
        torch.ones(len(atoms), dtype=torch.bool),
    )


def test_eager_equals_torchscript():
    model, _ = random_student("tiny", dtype=torch.float64)
    model.eval()
    scripted = torch.jit.script(model)
    args = _inputs(silicon(2, rattle=0.1), torch.float64)
    eager, script = model(*args), scripted(*args)
    for key in ("energy", "atom_energies", "forces", "virial", "atom_virial"):
        torch.testing.assert_close(script[key], eager[key], rtol=1e-12, atol=1e-12)


def test_float32_agrees_with_float64():
    model64, _ = random_student("tiny", dtype=torch.float64)
    model32, _ = random_student("tiny", dtype=torch.float32)
    atoms = silicon(2, rattle=0.1)
    out64 = model64.eval()(*_inputs(atoms, torch.float64))
    out32 = model32.eval()(*_inputs(atoms, torch.float32))
    assert abs(float(out32["energy"]) - float(out64["energy"])) / len(atoms) < 1e-5
    np.testing.assert_allclose(out32["forces"].detach().numpy(), out64["forces"].detach().numpy(), atol=1e-4)


def test_energy_mask_and_sums():
    model, _ = random_student("ultra-tiny", dtype=torch.float64)
    args = list(_inputs(silicon(1, rattle=0.1), torch.float64))
    args[4] = torch.tensor([True, False] * 4)
    out = model.eval()(*args)
    assert torch.all(out["atom_energies"][~args[4]] == 0)
    torch.testing.assert_close(out["atom_energies"].sum(), out["energy"])
    torch.testing.assert_close(out["atom_virial"].sum(0), out["virial"])
    # forces on all atoms still sum to zero (Newton's third law holds edge by edge)
    torch.testing.assert_close(out["forces"].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_envelope_is_smooth_at_one():
    x = torch.tensor([1.0 - 1e-6, 1.0, 1.0 + 1e-6], dtype=torch.float64, requires_grad=True)
    env = polynomial_envelope(x, 6)
    (grad,) = torch.autograd.grad(env.sum(), x, create_graph=True)
    (grad2,) = torch.autograd.grad(grad.sum(), x)
    assert float(env[0]) < 1e-12 and float(env[1]) == 0.0 and float(env[2]) == 0.0
    assert abs(float(grad[0])) < 1e-8 and abs(float(grad2[0])) < 1e-3


def test_build_does_not_change_default_dtype():
    before = torch.get_default_dtype()
    build(preset("ultra-tiny"), torch.float64)
    random_student("ultra-tiny", dtype=torch.float64)
    assert torch.get_default_dtype() == before


def test_config_validation():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match="cutoff must be positive"):
        ModelConfig(cutoff=0.0)
    with pytest.raises(ValueError, match="unknown model hyper-parameters"):
        ModelConfig.from_dict({"features": 8, "colour": "red"})
    cfg = preset("tiny", cutoff=4.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.interaction_range == pytest.approx(9.0)
