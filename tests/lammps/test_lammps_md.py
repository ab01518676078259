"""MD with ``pair_style mlffd``: MPI decompositions agree; NVE drift no worse than ASE's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlffd.calculator import DistilledCalculator
from mlffd.lammps import mlffd_pair, random_velocities, run_lammps
from mlffd.models import ModelConfig
from mlffd.testing import max_relative_error as rel
from mlffd.testing import random_artifact, silicon

pytestmark = pytest.mark.lammps

SIGE = ["Si", "Ge"]
#: small and cheap, but a real 2-layer message-passing model: interaction range 2 x 3.6 Å
SMALL = ModelConfig(elements=("Si", "Ge"), cutoff=3.6, features=16, channels=8, hidden=16, readout_hidden=8, num_basis=6)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return random_artifact(tmp_path_factory.mktemp("md") / "small.mlffd.pt", config=SMALL, dtype=torch.float64)


def test_mpi_ranks_agree_over_100_nve_steps(small_model):
    atoms = silicon(2, rattle=0.05, seed=7)  # 10.86 Å box
    atoms.numbers[::3] = 32
    random_velocities(atoms, 800.0, seed=2)
    md = ["neighbor 1.0 bin", "fix 1 all nve", "run 100"]
    results = {}
    for n in (1, 2, 4):
        # sub-domains 10.86 / n Å thick along x: 2.7 Å for 4 ranks, thinner than the 7.2 Å
        # interaction range (and than the 3.6 Å cutoff): ghosts come from several neighbours away
        results[n] = run_lammps(
            atoms, mlffd_pair(small_model, SIGE), SIGE, nprocs=n, processors=f"{n} 1 1", commands=md, timestep_fs=1.0, thermo_every=10
        )
    assert 10.86 / 4 < SMALL.interaction_range
    ref = results[1]
    assert len(ref.thermo["PotEng"]) == 11
    assert np.ptp(ref.thermo["PotEng"]) > 0.05  # atoms moved
    for n in (2, 4):
        got = results[n]
        assert rel(got.thermo["PotEng"], ref.thermo["PotEng"]) < 1e-8
        assert rel(got.thermo["TotEng"], ref.thermo["TotEng"]) < 1e-8
        assert rel(got.forces, ref.forces) < 1e-8
        assert rel(got.positions, ref.positions) < 1e-8
        assert rel(got.virial, ref.virial) < 1e-8
        assert abs(got.energies.sum() - got.energy) < 1e-9 * len(atoms)
        assert rel(got.atom_virial.sum(0), got.virial) < 1e-10


@pytest.mark.parametrize("nprocs", [1, 2])
def test_graph_reuse_equals_rebuild(small_model, nprocs):
    """'graph reuse' (the r_c + skin graph kept between neighbour-list builds, edges within r_c
    picked each step; the default on a GPU) gives the trajectory of 'graph rebuild', through
    list rebuilds, atoms migrating between ranks and a box that changes every step."""
    import re

    atoms = silicon(2, rattle=0.05, seed=8)
    cell = atoms.cell.array.copy()
    cell[1, 0] = 0.4  # a triclinic box, so that 'fix deform' may tilt it
    atoms.set_cell(cell, scale_atoms=True)
    atoms.numbers[::3] = 32
    random_velocities(atoms, 1200.0, seed=4)
    md = ["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", "fix 1 all nve",
          "fix 2 all deform 1 x scale 1.03 y scale 0.98 xy final 0.3 remap x", "run 100"]
    results = {}
    for mode in ("rebuild", "reuse"):
        results[mode] = run_lammps(atoms, [f"pair_style mlffd graph {mode}", f"pair_coeff * * {small_model} Si Ge"], SIGE,
                                   nprocs=nprocs, processors=f"{nprocs} 1 1" if nprocs > 1 else None, commands=md,
                                   timestep_fs=1.0, thermo_every=10)
    ref, got = results["rebuild"], results["reuse"]
    builds = int(re.search(r"Neighbor list builds\s*=\s*(\d+)", got.log).group(1))
    assert builds >= 3  # the cached graph was replaced along the way
    assert np.ptp(ref.thermo["PotEng"]) > 0.05
    assert rel(got.thermo["PotEng"], ref.thermo["PotEng"]) < 1e-10
    assert rel(got.thermo["Press"], ref.thermo["Press"]) < 1e-9
    assert rel(got.positions, ref.positions) < 1e-10
    assert rel(got.forces, ref.forces) < 1e-10
    assert rel(got.virial, ref.virial) < 1e-10
    assert rel(got.energies, ref.energies) < 1e-10


def test_nve_drift_no_worse_than_ase(small_model):
    """10 ps of NVE (2 fs steps) on 8 atoms: LAMMPS drifts no more than ASE's VelocityVerlet."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = silicon(1, rattle=0.05, seed=11)
    atoms.numbers[::4] = 32
    random_velocities(atoms, 600.0, seed=3)
    steps, dt, every = 5000, 2.0, 50

    md = ["neighbor 1.0 bin", "fix 1 all nve", f"run {steps}"]
    lmp = run_lammps(atoms, mlffd_pair(small_model, SIGE), SIGE, commands=md, timestep_fs=dt, thermo_every=every)
    etot = lmp.thermo["TotEng"]
    assert len(etot) == steps // every + 1

    ase_atoms = atoms.copy()
    ase_atoms.calc = DistilledCalculator(small_model)
    dyn = VelocityVerlet(ase_atoms, timestep=dt * units.fs)
    e_ase = [ase_atoms.get_total_energy()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8 atoms: threads only fight over a shared CPU
    try:
        for _ in range(steps // every):
            dyn.run(every)
            e_ase.append(ase_atoms.get_total_energy())
    finally:
        torch.set_num_threads(threads)
    time_ps = np.arange(len(etot)) * every * dt / 1000.0

    def drift_and_noise(e):
        """|slope| x run length and the residual scatter around the fit, per atom (eV)."""
        slope, intercept = np.polyfit(time_ps, e, 1)
        return abs(slope) * time_ps[-1] / len(atoms), np.std(e - (slope * time_ps + intercept)) / len(atoms)

    drift_lammps, noise_lammps = drift_and_noise(np.asarray(etot))
    drift_ase, noise_ase = drift_and_noise(np.asarray(e_ase))
    # the same integrator and forces: the two chaotic trajectories part after a few ps, but the
    # systematic drift must agree within the O(dt^2) shadow-energy scatter; a force error in
    # LAMMPS (e.g. a missing ghost contribution) would drift far beyond it
    assert drift_lammps <= 1.5 * drift_ase + 3.0 * max(noise_ase, noise_lammps), (drift_lammps, drift_ase, noise_ase)
    assert noise_lammps <= 2.0 * noise_ase + 1e-7, (noise_lammps, noise_ase)
    assert drift_lammps < 1e-4
