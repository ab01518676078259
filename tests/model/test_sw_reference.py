"""Stillinger-Weber silicon written to the artifact contract vs LAMMPS' own ``pair_style sw``.

An independent reference: LAMMPS' sw code (not ours) must agree with the SW artifact evaluated
by ``pair_style mlffd`` (on 1, 2 and 4 MPI ranks, sub-domains thinner than the cutoff) and by
``DistilledCalculator`` - energy, forces and the full virial to 1e-8 relative in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlffd.calculator import DistilledCalculator
from mlffd.reference.sw import SILICON, StillingerWeber, export_sw
from mlffd.testing import check_forces_fd, check_stress_fd, silicon, triclinic_silicon
from mlffd.testing import max_relative_error as rel

RTOL = 1e-8


@pytest.fixture(scope="module")
def sw_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sw")
    (d / "Si.sw").write_text(SILICON.lammps_file())
    return export_sw(d / "sw.mlffd.pt"), d / "Si.sw"


def strained_silicon():
    """64 rattled atoms in a sheared (triclinic) box."""
    atoms = silicon(2, rattle=0.1, seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.04, 0.0], [0.0, 1.0, 0.03], [0.02, 0.0, 0.98]]), scale_atoms=True)
    return atoms


def test_sw_cohesive_energy_and_finite_differences(sw_files):
    artifact, _ = sw_files
    atoms = silicon(1, rattle=0.0)
    atoms.calc = DistilledCalculator(artifact)
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.3366, abs=1e-4)  # SW's E_coh
    check_forces_fd(silicon(2, rattle=0.1), DistilledCalculator(artifact), indices=[0, 7, 33])
    check_stress_fd(triclinic_silicon(rattle=0.1), DistilledCalculator(artifact))


def test_sw_scripted_equals_eager(sw_files):
    import torch

    from mlffd.artifact import load

    artifact, _ = sw_files
    atoms = strained_silicon()
    calc = DistilledCalculator(artifact)
    inputs, _ = calc._inputs([atoms], cache=False)
    args = (inputs.positions, inputs.species, inputs.edge_index, inputs.shifts, inputs.energy_mask)
    scripted = load(artifact).module(*args)
    eager = StillingerWeber()(*args)
    for key in ("energy", "forces", "virial", "atom_virial", "atom_energies"):
        torch.testing.assert_close(scripted[key], eager[key], rtol=1e-12, atol=1e-12)


@pytest.mark.lammps
def test_sw_ase_matches_lammps_sw(sw_files):
    from mlffd.lammps import run_lammps

    artifact, sw_file = sw_files
    atoms = strained_silicon()
    ref = run_lammps(atoms, ["pair_style sw", f"pair_coeff * * {sw_file} Si"], ["Si"])
    atoms.calc = DistilledCalculator(artifact)
    assert rel(atoms.get_potential_energy(), ref.energy) < RTOL
    assert rel(atoms.get_forces(), ref.forces) < RTOL
    assert rel(atoms.get_stress(), ref.stress) < RTOL
    # per-atom values only through their sums (LAMMPS splits three-body terms its own way)
    assert rel(atoms.get_potential_energies().sum(), ref.energies.sum()) < RTOL
    assert rel(atoms.get_stresses().sum(0), ref.stress) < RTOL


@pytest.mark.lammps
@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_sw_pair_mlffd_matches_lammps_sw(sw_files, nprocs):
    from mlffd.lammps import mlffd_pair, run_lammps

    artifact, sw_file = sw_files
    atoms = strained_silicon()
    # sub-domains along x: 10.9 / nprocs Å, thinner than the 3.77 Å cutoff for 4 ranks
    kw = dict(nprocs=nprocs, processors=f"{nprocs} 1 1")
    ref = run_lammps(atoms, ["pair_style sw", f"pair_coeff * * {sw_file} Si"], ["Si"], **kw)
    got = run_lammps(atoms, mlffd_pair(artifact, ["Si"]), ["Si"], **kw)
    assert rel(got.energy, ref.energy) < RTOL
    assert rel(got.forces, ref.forces) < RTOL
    assert rel(got.virial, ref.virial) < RTOL
    assert rel(got.energies.sum(), ref.energy) < RTOL
    assert rel(got.atom_virial.sum(0), ref.virial) < RTOL


@pytest.mark.lammps
def test_sw_npt_trajectory_matches_lammps_sw(sw_files):
    """NPT uses the virial every step: a wrong sign or component would make the boxes part."""
    from mlffd.lammps import mlffd_pair, random_velocities, run_lammps

    artifact, sw_file = sw_files
    atoms = strained_silicon()
    random_velocities(atoms, 900.0, seed=1)
    md = ["fix 1 all npt temp 900 900 0.05 tri 5000 5000 0.2", "run 200"]
    kw = dict(commands=md, timestep_fs=1.0, thermo_every=20, nprocs=2)
    ref = run_lammps(atoms, ["pair_style sw", f"pair_coeff * * {sw_file} Si"], ["Si"], **kw)
    got = run_lammps(atoms, mlffd_pair(artifact, ["Si"]), ["Si"], **kw)
    assert abs(ref.thermo["Volume"][-1] - ref.thermo["Volume"][0]) > 1e-3  # the box did move
    assert rel(got.thermo["Volume"], ref.thermo["Volume"]) < 1e-7
    assert rel(got.thermo["PotEng"], ref.thermo["PotEng"]) < 1e-7
    assert rel(got.positions, ref.positions) < 1e-7
