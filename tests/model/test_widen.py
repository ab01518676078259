"""Widening a student (mlffd/models/widen.py): the wider student computes the same outputs as the
original, and training can use the new units (the zero weights reading them get gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlffd import DistilledCalculator
from mlffd.models import export_student, preset
from mlffd.models.widen import widen, widen_artifact
from mlffd.testing import model_inputs, random_student, silicon_germanium

ELEMENTS = ("Si", "Ge")


def _student():
    model, config = random_student(preset("ultra-tiny", elements=ELEMENTS, ensemble=4), energy_scale=2.0,
                                   repulsion_outer=2.2)
    with torch.no_grad():  # a fitted novelty reference, so its outputs are compared too
        g = torch.Generator().manual_seed(5)
        model.novelty_mean.copy_(torch.randn(model.novelty_mean.shape, generator=g, dtype=torch.float64))
        model.novelty_whiten.copy_(torch.randn(model.novelty_whiten.shape, generator=g, dtype=torch.float64))
    model.use_novelty = True
    return model.eval(), config


def _atoms():
    atoms = silicon_germanium(2, rattle=0.15, seed=4)
    atoms.positions[1] = atoms.positions[0] + [1.2, 0.8, 0.0]  # a close pair: the prior acts too
    return atoms


def _outputs(model, atoms):
    return model(*model_inputs(atoms, torch.float64, 5.0, ELEMENTS))


def test_widened_student_computes_the_same_outputs():
    model, config = _student()
    wide, wide_config = widen(model, config, features=40, channels=44, hidden=38, message_dim=6)
    assert (wide_config.features, wide_config.channels, wide_config.hidden, wide_config.message_dim) == (40, 44, 38, 6)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in model.parameters())
    atoms = _atoms()
    a, b = _outputs(model, atoms), _outputs(wide, atoms)
    assert {"energy", "forces", "virial", "energy_uncertainty", "novelty"} <= set(a)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(b[key].detach().numpy(), a[key].detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=key)


def test_new_units_get_gradients():
    model, config = _student()
    wide, _ = widen(model, config, features=40, channels=44, hidden=38, message_dim=6)
    f, k, h, d = config.features, config.channels, config.hidden, config.message_dim  # the old widths
    wide.train()
    out = _outputs(wide, _atoms())
    (out["energy"] ** 2 + (out["forces"] ** 2).sum()).backward()
    first = wide.interactions[0].update.net[0].weight.grad
    assert first[:h, 5 * 44 - (44 - k):5 * 44].abs().sum() > 0  # zero columns reading new tr(A2^3) channels
    assert first[:h, 5 * 44 + f:].abs().sum() > 0  # zero columns reading new features
    assert wide.interactions[0].update.net[2].weight.grad[:, h:].abs().sum() > 0  # reading new hidden units
    assert wide.readout.net[0].weight.grad[:, f:].abs().sum() > 0  # the readout reading new features
    moment = wide.interactions[1].w0.grad.view(config.num_basis, 6, 44)  # rows: radial function, message feature
    assert moment[:, d:, :k].abs().sum() > 0  # zero rows reading new message features


def test_narrower_widths_are_rejected():
    model, config = _student()
    with pytest.raises(ValueError, match="at least the old"):
        widen(model, config, features=40, channels=30, hidden=40)


def test_widened_artifact_loads_and_agrees(tmp_path):
    model, config = _student()
    src = export_student(model, config, tmp_path / "narrow.mlffd.pt", teacher="none")
    dst = widen_artifact(src, tmp_path / "wide.mlffd.pt", 38, 38, 38)
    forces = []
    for path in (src, dst):
        atoms = _atoms()
        atoms.calc = DistilledCalculator(str(path))
        forces.append(atoms.get_forces())
    assert DistilledCalculator(str(dst)).metadata["model"]["features"] == 38
    np.testing.assert_allclose(forces[1], forces[0], rtol=1e-9, atol=1e-9)
