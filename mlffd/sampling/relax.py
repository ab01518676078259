"""Teacher relaxations: a seed's (so that volumes are the teacher's, not ASE's reference lattice
constant) and random-structure search's (random cells relaxed a few steps, frames along the way)."""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from ase import Atoms
from ase.geometry import cellpar_to_cell

#: failures a teacher relaxation may end in (a structure the teacher cannot handle)
RELAX_ERRORS = (ValueError, FloatingPointError, RuntimeError, np.linalg.LinAlgError)


@contextlib.contextmanager
def cell_filter_quiet() -> Iterator[None]:
    """Settings for ASE's FrechetCellFilter: its 3x3 matrix exponentials and logarithms run in one
    BLAS thread (for 3x3 matrices, starting threads on cores the model keeps busy costs more than
    the work), and scipy's 'logm result may be inaccurate' at 1e-12 is not reported."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not a dependency; without it BLAS keeps its own thread count
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    with limits, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        yield


@dataclass(frozen=True)
class RelaxedSeed:
    """A seed after the teacher's relaxation (or the seed itself, with ``error``, if it failed)."""

    atoms: Atoms
    energy: float
    steps: int
    converged: bool
    error: str = ""

    def to_record(self) -> dict:
        """Plain JSON (floats round-trip exactly), for the run's progress record."""
        a = self.atoms
        return {"numbers": a.numbers.tolist(), "positions": a.positions.tolist(), "cell": a.cell.array.tolist(),
                "pbc": a.pbc.tolist(), "energy": self.energy, "steps": self.steps, "converged": self.converged,
                "error": self.error}

    @classmethod
    def from_record(cls, rec: dict) -> "RelaxedSeed":
        atoms = Atoms(numbers=rec["numbers"], positions=np.asarray(rec["positions"], float), cell=rec["cell"], pbc=rec["pbc"])
        return cls(atoms, float(rec["energy"]), int(rec["steps"]), bool(rec["converged"]), str(rec.get("error", "")))


def fix_symmetry(atoms: Atoms) -> None:
    """Constrain ``atoms`` (in place) to keep its space group (ASE FixSymmetry, spglib at 1e-3 Å)."""
    from ase.constraints import FixSymmetry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's deprecation chatter
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))


def relax_seed(atoms: Atoms, calc, steps: int, fmax: float, on_evaluation: Callable[[int], None] | None = None) -> RelaxedSeed:
    """Relax positions and cell (to zero stress) with BFGS on ASE's FrechetCellFilter, space-group
    symmetry kept (FixSymmetry) so that a prototype stays that phase; at most ``steps`` steps."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calc
    fix_symmetry(work)
    opt = BFGS(FrechetCellFilter(work), logfile=None)
    if on_evaluation is not None:
        opt.attach(lambda: on_evaluation(1), interval=1)
    try:
        with cell_filter_quiet():
            converged = bool(opt.run(fmax=fmax, steps=steps))
        energy = float(work.get_potential_energy())
        if not (math.isfinite(energy) and np.isfinite(work.positions).all()):
            raise FloatingPointError("non-finite energy or positions")
    except RELAX_ERRORS as exc:
        return RelaxedSeed(atoms.copy(), math.nan, opt.nsteps, False, f"{type(exc).__name__}: {exc}")
    work.set_constraint()
    out = Atoms(numbers=work.numbers, positions=work.positions, cell=work.cell, pbc=work.pbc)
    return RelaxedSeed(out, energy, opt.nsteps, converged)


#: what a path relaxation moves besides the positions: the whole cell (to zero stress), its shape
#: at constant volume, or nothing
CELL_MODES = ("full", "shape", "fixed")


def relax_path(atoms: Atoms, calc, steps: int, on_step: Callable[[int], None], cell: str = "full",
               keep_symmetry: bool = False) -> str:
    """Relax ``atoms`` with the teacher for at most ``steps`` BFGS steps (positions; the cell as
    ``cell`` says, one of :data:`CELL_MODES`; the space group kept with ``keep_symmetry``), calling
    ``on_step(step)`` after every evaluation (step 0: the start); returns "" or the error that
    stopped it (a teacher failing on the structure)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    if cell not in CELL_MODES:
        raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
    atoms.calc = calc
    if keep_symmetry:
        fix_symmetry(atoms)
    target = atoms if cell == "fixed" else FrechetCellFilter(atoms, constant_volume=cell == "shape")
    opt = BFGS(target, logfile=None)
    opt.attach(lambda: on_step(opt.nsteps), interval=1)
    try:
        with cell_filter_quiet():
            opt.run(fmax=1e-3, steps=steps)
    except RELAX_ERRORS as exc:
        return f"stopped after {opt.nsteps} steps ({type(exc).__name__}: {exc})"
    finally:
        atoms.set_constraint()
    return ""


def random_cell(volume: float, rng: np.random.Generator) -> np.ndarray:
    """A random, not too oblique cell of ``volume`` Å^3: angles 60-120 degrees, edge ratios within
    about 1:2, a volume at least half that of a box with the same edges."""
    while True:
        angles = rng.uniform(60.0, 120.0, size=3)
        c = np.cos(np.radians(angles))
        squeeze = 1 - (c**2).sum() + 2 * c.prod()
        if squeeze <= 0.25:  # sqrt(squeeze) = volume / (a b c) < 0.5
            continue
        lengths = np.exp(rng.uniform(-0.35, 0.35, size=3))
        cell = cellpar_to_cell(np.concatenate([lengths, angles]))
        return cell * (volume / abs(np.linalg.det(cell))) ** (1.0 / 3.0)


def _too_close(p: np.ndarray, placed: np.ndarray, cell: np.ndarray, inv: np.ndarray, r: float) -> bool:
    """Whether point ``p`` lies within ``r`` of any ``placed`` point or periodic image: exact when
    every cell height is at least ``r`` (then only the 27 nearest images can be that close)."""
    frac = (placed - p) @ inv
    frac -= np.round(frac)
    images = frac[:, None, :] + _SHIFTS[None, :, :]
    return bool((np.linalg.norm(images @ cell, axis=2) < r).any())


_SHIFTS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)


def default_min_separation(symbols: list[str], volume_per_atom: float) -> float:
    """0.75 bond lengths (of the seed's shortest-bonded element), lowered where spheres of that
    diameter would fill more than 25 % of the cell: random placement jams near 38 %, which
    close-packed metals at their density would reach (Cu: 0.75 b fills 37 %)."""
    from mlffd.prototypes import bond_length

    packing_limit = 2.0 * (0.25 * volume_per_atom * 3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    return min(0.75 * min(bond_length(s) for s in set(symbols)), packing_limit)


def random_structure(numbers: np.ndarray, volume: float, min_separation: float, rng: np.random.Generator,
                     cells: int = 50, tries: int = 500) -> Atoms:
    """``numbers`` placed at random in a :func:`random_cell` of ``volume``, no two atoms (periodic
    images included) closer than ``min_separation`` Å; ValueError if ``cells`` cells x ``tries``
    draws per atom found no such arrangement."""
    numbers = rng.permutation(np.asarray(numbers))
    for _ in range(cells):
        cell = random_cell(volume, rng)
        heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        if heights.min() < min_separation:
            continue  # an atom would sit closer than that to its own image
        inv = np.linalg.inv(cell)
        placed = np.zeros((0, 3))
        for _atom in numbers:
            for _ in range(tries):
                p = rng.random(3) @ cell
                if not _too_close(p, placed, cell, inv, min_separation):
                    placed = np.vstack([placed, p])
                    break
            else:
                break
        if len(placed) == len(numbers):
            return Atoms(numbers=numbers, positions=placed, cell=cell, pbc=True)
    raise ValueError(f"cannot place {len(numbers)} atoms {min_separation:.3g} Å apart in {volume:.4g} Å^3; "
                     "lower min_separation or raise volume_range")


__all__ = ["RelaxedSeed", "cell_filter_quiet", "fix_symmetry", "relax_seed", "relax_path", "CELL_MODES", "random_cell", "random_structure", "default_min_separation", "RELAX_ERRORS"]
