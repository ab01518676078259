"""The student architecture: sizes, TorchScript, dtypes, conservative outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlffd.models import PRESETS, ModelConfig, StudentPotential, build, num_parameters, preset
from mlffd.models.outputs import conservative_outputs
from mlffd.models.potential import cubic_invariants, polynomial_envelope
from mlffd.testing import model_inputs, random_student, silicon, silicon_germanium

TARGETS = {"original": 427_000, "tiny": 77_000, "ultra-tiny": 21_000}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_budgets(name):
    n = num_parameters(StudentPotential(preset(name)))
    assert abs(n - TARGETS[name]) <= 0.10 * TARGETS[name], f"{name}: {n} parameters"


def test_eager_equals_torchscript():
    model, _ = random_student("tiny", dtype=torch.float64)
    model.eval()
    scripted = torch.jit.script(model)
    args = model_inputs(silicon(2, rattle=0.1), torch.float64)
    eager, script = model(*args), scripted(*args)
    for key in ("energy", "atom_energies", "forces", "virial", "atom_virial"):
        torch.testing.assert_close(script[key], eager[key], rtol=1e-12, atol=1e-12)


def test_float32_agrees_with_float64():
    model64, _ = random_student("tiny", dtype=torch.float64)
    model32, _ = random_student("tiny", dtype=torch.float32)
    atoms = silicon(2, rattle=0.1)
    out64 = model64.eval()(*model_inputs(atoms, torch.float64))
    out32 = model32.eval()(*model_inputs(atoms, torch.float32))
    assert abs(float(out32["energy"]) - float(out64["energy"])) / len(atoms) < 1e-5
    np.testing.assert_allclose(out32["forces"].detach().numpy(), out64["forces"].detach().numpy(), atol=1e-4)


def test_energy_mask_and_sums():
    model, _ = random_student("ultra-tiny", dtype=torch.float64)
    args = list(model_inputs(silicon(1, rattle=0.1), torch.float64))
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


def test_cubic_invariants_match_full_tensor_contractions():
    gen = torch.Generator().manual_seed(3)
    a1 = torch.randn(5, 3, 7, generator=gen, dtype=torch.float64)
    a2s = torch.randn(5, 6, 7, generator=gen, dtype=torch.float64)
    a2 = a2s[:, [0, 3, 4, 3, 1, 5, 4, 5, 2], :].view(5, 3, 3, 7)
    a1a2a1, tr3 = cubic_invariants(a1.transpose(0, 1), a2s.transpose(0, 1))
    torch.testing.assert_close(a1a2a1, torch.einsum("nak,nabk,nbk->nk", a1, a2, a1))
    torch.testing.assert_close(tr3, torch.einsum("nabk,nbck,ncak->nk", a2, a2, a2))


@pytest.mark.parametrize("name,chunk", [("ultra-tiny", 7), ("tiny", 50), ("original", 63)])
def test_chunked_evaluation_equals_one_graph(name, chunk):
    """Blocked forces/virials (large systems) are the one-graph autograd numbers, ghosts masked."""
    config = preset(name, elements=("Si", "Ge"), chunk_atoms=chunk)
    model, _ = random_student(config, dtype=torch.float64)
    model.eval()
    atoms = silicon_germanium()
    args = list(model_inputs(atoms, torch.float64, elements=config.elements))
    scripted = torch.jit.script(model)
    assert len(atoms) > chunk  # forward() takes the blocked path
    scattered = torch.rand(len(atoms), generator=torch.Generator().manual_seed(0)) > 0.3
    prefix = torch.arange(len(atoms)) < 20  # LAMMPS-like: local atoms first, then ghosts
    for mask in (scattered, prefix):
        args[4] = mask
        blocked = scripted(*args)
        vectors = (args[0][args[2][1]] - args[0][args[2][0]] + args[3]).requires_grad_(True)
        energies = model.atomic_energies(vectors, args[1], args[2])
        reference = conservative_outputs(args[0], vectors, energies, mask, args[2], False)
        for key in ("energy", "atom_energies", "forces", "virial", "atom_virial"):
            torch.testing.assert_close(blocked[key], reference[key].detach(), rtol=1e-11, atol=1e-11)
