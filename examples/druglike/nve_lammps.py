"""NVE of a molecule in vacuum through LAMMPS (``boundary f f f``) with a student: energy drift and
whether any bond broke.

    python examples/druglike/nve_lammps.py MODEL SMILES [--ps 100] [--dt-fs 0.5]

The molecule is one RDKit conformer; velocities are drawn at twice the target temperature, which
equipartition between kinetic and potential energy halves within the first few hundred fs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mlffd.lammps import mlffd_pair, random_velocities, run_lammps
from mlffd.sampling.molecules import molecule_from_smiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("smiles")
    parser.add_argument("--ps", type=float, default=100.0, help="NVE length (ps)")
    parser.add_argument("--dt-fs", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=300.0, help="K, after equipartition")
    args = parser.parse_args()
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model  # LAMMPS runs in a temporary folder

    mol = molecule_from_smiles(args.smiles, 1)
    bonds = mol.info["bonds"]
    atoms = mol.copy()
    atoms.info.clear()
    random_velocities(atoms, 2 * args.temperature, seed=1)
    elements = sorted(set(atoms.get_chemical_symbols()))
    steps = int(round(args.ps * 1000 / args.dt_fs))
    start = time.time()
    res = run_lammps(atoms, mlffd_pair(model, elements), elements, nonperiodic="f", timestep_fs=args.dt_fs,
                     commands=["fix 1 all nve", f"run {steps}"], thermo_every=max(steps // 200, 1), timeout=24 * 3600)
    wall = time.time() - start
    time_ps = np.asarray(res.thermo["Step"]) * args.dt_fs / 1000
    etot = np.asarray(res.thermo["TotEng"])
    n = len(atoms)
    drift = np.polyfit(time_ps, etot, 1)[0] / n * 1000
    before = np.linalg.norm(mol.positions[bonds[:, 0]] - mol.positions[bonds[:, 1]], axis=1)
    after = np.linalg.norm(res.positions[bonds[:, 0]] - res.positions[bonds[:, 1]], axis=1)
    print(f"{n} atoms, {steps} steps ({args.ps:g} ps) in {wall:.0f} s ({wall / steps * 1e3:.2f} ms/step); "
          f"mean T after the first 10 %: {np.mean(res.thermo['Temp'][len(etot) // 10:]):.0f} K")
    print(f"drift {drift:.4f} meV/atom/ps, max |Etot - Etot(0)| {np.abs(etot - etot[0]).max() / n * 1000:.3f} meV/atom")
    print(f"bond lengths at the end / at the start: {np.min(after / before):.3f}-{np.max(after / before):.3f}")


if __name__ == "__main__":
    main()
