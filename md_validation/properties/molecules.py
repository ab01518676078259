"""Gas-phase molecules: each calculator's own minimum of every molecule (the "ground" of the
molecular sections ``geometry``, ``vibrations``, ``torsions`` and ``conformers``), and the
geometry helpers they share (alignment, bonds, angles, dihedrals).

A molecule starts from its RDKit conformer (:func:`md_validation.properties.system.molecule_system`,
built with the sampler's own :mod:`mlffd.sampling.molecules`) and each calculator relaxes it
with ASE's BFGS (no cell, no symmetry) to ``config.molecule_fmax``. A relaxation that fails
(a student leaving its domain) gives NaN energies and an error string, never an exception that
ends the report. Default molecules for a model of drug-like chemistry: :data:`DEFAULT_MOLECULES`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from md_validation.properties.config import PropertiesConfig
from md_validation.properties.relax import relax
from md_validation.properties.system import System, atoms_from_dict, atoms_to_dict

SECTION = "molecules"
#: code outside this package that a minimum depends on (cache keys)
DEPENDS = ("mlffd.sampling.molecules",)

#: default test molecules (name -> SMILES): the held-out set of the drug-like family
#: (examples/druglike/sample-heldout.yaml), none of them in its training list; used for a molecular
#: model when no molecules are given and the model has every element they need
DEFAULT_MOLECULES: dict[str, str] = {
    "ketorolac": "OC(=O)C1CCn2c1ccc2C(=O)c1ccccc1",
    "phenacetin": "CCOc1ccc(NC(C)=O)cc1",
    "procainamide": "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "chlorzoxazone": "O=c1[nH]c2cc(Cl)ccc2o1",
    "flurbiprofen": "CC(C(=O)O)c1ccc(-c2ccccc2)c(F)c1",
    "sulfanilamide": "Nc1ccc(cc1)S(N)(=O)=O",
    "mirtazapine": "CN1CCN2C(C1)c1ccccc1Cc1cccnc21",
    "clonidine": "Clc1cccc(Cl)c1NC1=NCCN1",
}


def default_molecules(elements: Sequence[str]) -> dict[str, str]:
    """The :data:`DEFAULT_MOLECULES` made only of ``elements``."""
    from mlffd.sampling.molecules import parse_smiles

    allowed = set(elements)
    return {name: smiles for name, smiles in DEFAULT_MOLECULES.items()
            if {a.GetSymbol() for a in parse_smiles(smiles).GetAtoms()} <= allowed}


def relax_molecule(atoms: Atoms, calc: Calculator, config: PropertiesConfig) -> dict[str, Any]:
    """``atoms`` relaxed by ``calc`` (positions only; constraints of ``atoms`` kept): JSON with
    the structure, energy (eV, NaN on failure), convergence, steps and error."""
    start = atoms.copy()
    start.info = {}
    r = relax(start, calc, fmax=config.molecule_fmax, steps=config.molecule_steps, cell=False, symmetry=False)
    return {"atoms": atoms_to_dict(r.atoms), "energy": r.energy, "converged": r.converged, "steps": r.steps,
            "error": r.error}


def compute(calc: Calculator, system: System, config: PropertiesConfig, progress: bool = True) -> dict[str, Any]:
    """Each molecule of ``system`` relaxed by ``calc`` from its start: ``{name: relax_molecule(...)}``."""
    out: dict[str, Any] = {}
    for name, atoms in tqdm(system.molecules.items(), desc="minima", unit="molecule", leave=False, disable=not progress):
        out[name] = relax_molecule(atoms, calc, config)
    return out


def minimum(ground: dict[str, Any], name: str) -> Atoms:
    """A calculator's minimum of molecule ``name`` from its ground JSON."""
    return atoms_from_dict(ground[name]["atoms"])


def heavy_mask(numbers: np.ndarray) -> np.ndarray:
    numbers = np.asarray(numbers)
    mask = numbers > 1
    return mask if mask.sum() >= 2 else np.ones(len(numbers), bool)


def aligned_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (Å) of two point sets with the same atom order after the best proper rotation and
    translation (Kabsch)."""
    a = np.asarray(a, float) - np.mean(a, axis=0)
    b = np.asarray(b, float) - np.mean(b, axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((a @ rot - b) ** 2, axis=1))))


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    bonds = np.asarray(bonds, int).reshape(-1, 2)
    return np.linalg.norm(positions[bonds[:, 1]] - positions[bonds[:, 0]], axis=1)


def angle_triples(n_atoms: int, bonds: np.ndarray) -> np.ndarray:
    """Every bonded angle (i, j, k), j the vertex, i < k."""
    from mlffd.sampling.torsions import adjacency

    adj = adjacency(n_atoms, bonds)
    out = [(i, j, k) for j in range(n_atoms) for i in adj[j] for k in adj[j] if i < k]
    return np.asarray(out, int).reshape(-1, 3)


def angles_deg(positions: np.ndarray, triples: np.ndarray) -> np.ndarray:
    if not len(triples):
        return np.zeros(0)
    u = positions[triples[:, 0]] - positions[triples[:, 1]]
    v = positions[triples[:, 2]] - positions[triples[:, 1]]
    cos = np.sum(u * v, axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def same_bonds(atoms: Atoms, bonds: np.ndarray) -> bool:
    """Whether RDKit's connectivity perception of ``atoms`` finds exactly the molecule's ``bonds``
    (False: a bond broke or a new one formed during the relaxation)."""
    from mlffd.sampling.molecules import perceive_bonds

    try:
        found = perceive_bonds(atoms)
    except ValueError:
        return False
    key = lambda pairs: {tuple(sorted(map(int, p))) for p in np.asarray(pairs, int).reshape(-1, 2)}  # noqa: E731
    return key(found) == key(bonds)


def num(x: Any) -> float:
    """A JSON number (None, NaN) as float."""
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
