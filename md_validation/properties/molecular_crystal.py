"""Molecular crystals: the relaxed cell and the lattice energy, each calculator on its own.

The molecules of a crystal are found by connectivity: two atoms are bonded when closer than
:data:`BOND_FACTOR` x the sum of their covalent radii (ASE's ``natural_cutoffs``), periodic images
included; a molecule is a connected component of that graph, and it is made whole by walking
its bonds across the cell faces (:func:`whole_molecules`). A component bonded to its own periodic
image (a polymer, a network solid, a salt) is not a molecule: a ValueError.

Per calculator and crystal: positions and cell relaxed together from the file's structure,
repeated to a supercell at least ``config.crystal_min_width`` wide (ASE's ``FrechetCellFilter``
and BFGS, ``config.fmax`` and ``config.relax_steps`` as the crystal ground state, no symmetry
constraint so that the relaxed crystal is a true minimum of that calculator), then one molecule
of each distinct composition is cut out of the relaxed crystal (whole, no cell, not periodic)
and relaxed the way the ``molecules`` section relaxes a molecule.
The lattice energy per formula unit (for one kind of molecule: per molecule) is

    E_latt = (E_crystal - sum_k c_k E_k) / g,

c_k the number of molecules of kind k in the cell, E_k its relaxed gas-phase energy and g the
greatest common divisor of the c_k; negative is bound. A failed calculation is a result with
``None`` numbers and the reason in ``error``, never a NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.neighborlist import natural_cutoffs, neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from md_validation.properties.common import FAILURES, error_text
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.molecules import relax_molecule
from md_validation.properties.records import PropertyRecord, absolute, errors_note, flag, relative, unavailable
from md_validation.properties.relax import relax
from md_validation.properties.system import System, atoms_from_dict, atoms_to_dict

SECTION = "molecular_crystal"
DEPENDS = ("md_validation.properties.molecules",)
#: bonded when closer than this x (covalent radius i + covalent radius j)
BOND_FACTOR = 1.2
#: more kinds of molecule than this in one cell means the bond detection went wrong (missing
#: hydrogens, a bond longer than the criterion), not a co-crystal
MAX_KINDS = 4
#: 1 eV per molecule in kJ/mol
KJ_MOL_PER_EV = units.mol / units.kJ
#: amu / Å^3 in g / cm^3
G_CM3_PER_AMU_A3 = units._amu * 1e3 / 1e-24


def bond_graph(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bonds ``(i, j, D)`` of ``atoms``, both directions, ``D`` the bond vector from i to j
    (periodic images included where ``atoms`` is periodic)."""
    cutoffs = natural_cutoffs(atoms, mult=BOND_FACTOR)
    return neighbor_list("ijD", atoms, cutoffs, self_interaction=False)


def molecule_groups(atoms: Atoms) -> list[np.ndarray]:
    """The atom indices of every molecule (connected component of the bond graph), in the order
    of each molecule's first atom."""
    i, j, _ = bond_graph(atoms)
    return _components(len(atoms), i, j)


def _components(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """The connected components of the graph of ``n`` atoms with edges ``(i, j)``."""
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return [np.asarray(g, int) for g in groups.values()]


def whole_molecules(atoms: Atoms) -> tuple[list[np.ndarray], np.ndarray]:
    """The molecules (index arrays) and positions in which every molecule is whole: each atom
    placed at its bonded neighbour's position plus the bond vector, walking the bonds from the
    molecule's first atom. ValueError when a molecule is bonded to its own periodic image."""
    i, j, d = bond_graph(atoms)
    groups = _components(len(atoms), i, j)
    neighbours: dict[int, list[tuple[int, np.ndarray]]] = {}
    for a, b, v in zip(i, j, d):
        neighbours.setdefault(int(a), []).append((int(b), v))
    pos = atoms.positions.copy()
    for group in groups:
        placed = {int(group[0])}
        queue = [int(group[0])]
        while queue:
            a = queue.pop()
            for b, v in neighbours.get(a, []):
                if b not in placed:
                    pos[b] = pos[a] + v
                    placed.add(b)
                    queue.append(b)
    # every bond, not only those walked, must agree with the placed atoms: one that does not
    # closes a loop through a periodic image, an extended network rather than a molecule
    if len(i) and np.max(np.linalg.norm(pos[j] - pos[i] - d, axis=1)) > 1e-6:
        raise ValueError("a molecule is bonded to its own periodic image (a polymer, network solid or salt, "
                         "not a molecular crystal)")
    return groups, pos


def formula(numbers: np.ndarray) -> str:
    return Atoms(numbers=numbers).get_chemical_formula()


def composition(atoms: Atoms, groups: list[np.ndarray]) -> Counter:
    """How many molecules of each formula the cell holds."""
    return Counter(formula(atoms.numbers[g]) for g in groups)


def closed_shell_problem(molecule: Atoms) -> str | None:
    """Why RDKit cannot read ``molecule`` (positions only) as a neutral closed-shell molecule, or
    None when it can (or RDKit is not installed): the sign of missing hydrogens, which X-ray
    structure files often leave out, and which would otherwise give a lattice energy of radicals."""
    try:
        from rdkit import Chem
        from rdkit.Chem import rdDetermineBonds
    except ImportError:
        return None
    xyz = f"{len(molecule)}\n\n" + "".join(f"{sym} {x:.6f} {y:.6f} {z:.6f}\n"
                                            for sym, (x, y, z) in zip(molecule.get_chemical_symbols(), molecule.positions))
    mol = Chem.MolFromXYZBlock(xyz)
    if mol is None:
        return "RDKit cannot read it"
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except (ValueError, RuntimeError) as exc:
        return str(exc).splitlines()[0]
    return None


def check_crystal(atoms: Atoms, where: str) -> dict[str, int]:
    """ValueError naming ``where`` unless ``atoms`` is a 3-D periodic, fully occupied crystal of
    whole, finite, neutral closed-shell molecules of at most :data:`MAX_KINDS` kinds; else the
    cell's composition (formula -> count)."""
    if not atoms.pbc.all() or atoms.cell.rank != 3:
        raise ValueError(f"{where}: a molecular crystal must be periodic in 3 directions (pbc {atoms.pbc.tolist()})")
    occupancy = atoms.info.get("occupancy") or {}
    if any(float(v) < 1.0 - 1e-6 for site in occupancy.values() for v in dict(site).values()):
        raise ValueError(f"{where}: partial occupancies (a disordered structure) are not supported; give one ordered structure")
    try:
        groups, positions = whole_molecules(atoms)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    counts = composition(atoms, groups)
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError(f"{where}: no molecules found")
    if len(counts) > MAX_KINDS:
        found = ", ".join(f"{n} {f}" for f, n in counts.items())
        raise ValueError(f"{where}: {len(groups)} molecules of {len(counts)} kinds ({found}); expected a crystal of at "
                         f"most {MAX_KINDS} kinds of molecule: are hydrogens missing or a bond too long?")
    for f in counts:
        group = next(g for g in groups if formula(atoms.numbers[g]) == f)
        problem = closed_shell_problem(isolated(atoms, group, positions))
        if problem:
            raise ValueError(f"{where}: molecule {f} is not a neutral closed-shell molecule ({problem}); "
                             "are hydrogens missing? X-ray structure files often leave them out")
    return dict(counts)


def isolated(atoms: Atoms, group: np.ndarray, positions: np.ndarray) -> Atoms:
    """Molecule ``group`` (whole ``positions``) as a gas-phase molecule: no cell, not periodic."""
    pos = positions[group]
    return Atoms(numbers=atoms.numbers[group], positions=pos - pos.mean(axis=0), pbc=False)


def formula_unit(counts: dict[str, int]) -> dict[str, int]:
    """The smallest whole set of molecules the cell is made of (formula -> molecules): one
    molecule for a one-component crystal, e.g. ``{A: 1, B: 1}`` for a 1:1 co-crystal."""
    g = reduce(math.gcd, counts.values())
    return {f: c // g for f, c in counts.items()}


def lattice_energy(e_crystal: float, counts: dict[str, int], e_molecules: dict[str, float]) -> float:
    """Lattice energy (eV) per :func:`formula_unit` of a cell of energy ``e_crystal`` holding
    ``counts`` molecules of each formula, each with its gas-phase energy ``e_molecules``."""
    g = reduce(math.gcd, counts.values())
    return (e_crystal - sum(c * e_molecules[f] for f, c in counts.items())) / g


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def supercell_repeats(atoms: Atoms, min_width: float) -> tuple[int, int, int]:
    """Repeats of the cell along a, b, c that make each of its widths (distance between opposite
    faces) at least ``min_width`` Å."""
    widths = 1.0 / np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    return tuple(max(1, math.ceil(min_width / w - 1e-9)) for w in widths)


def crystal_result(file_cell: Atoms, calc: Calculator, config: PropertiesConfig) -> dict[str, Any]:
    """One calculator's numbers for one crystal (JSON; ``None`` where a step failed, ``error``
    why). The file's cell is repeated to ``config.crystal_min_width`` first: a Γ-point-only
    teacher (GFN2-xTB in tblite) is far from converged in a 5 Å cell, and a local potential gets
    the same numbers either way; a, b, c are reported for the file's cell."""
    reps = supercell_repeats(file_cell, config.crystal_min_width)
    start = file_cell.repeat(reps)
    groups, _ = whole_molecules(start)
    counts = dict(composition(start, groups))
    cells = int(np.prod(reps))
    out: dict[str, Any] = {"n_mol": len(groups) // cells, "supercell": list(reps),
                           "composition": {f: c // cells for f, c in counts.items()},
                           "converged": False, "steps": 0, "error": "",
                           "molecules_kept": None, "supercell_energy_eV": None, "volume_per_molecule_A3": None,
                           "density_g_cm3": None, "a": None, "b": None, "c": None, "molecules": {},
                           "lattice_energy_eV": None, "lattice_energy_kJ_mol": None, "formula_unit": formula_unit(counts)}
    r = relax(start, calc, fmax=config.fmax, steps=config.relax_steps, cell=True, symmetry=False)
    out.update(converged=r.converged, steps=r.steps, atoms=atoms_to_dict(r.atoms))
    if r.error:
        out["error"] = f"crystal: {r.error}"
        return out
    crystal = r.atoms
    n = len(groups)
    a, b, c = crystal.cell.lengths() / np.asarray(reps)
    out.update(supercell_energy_eV=_finite(r.energy), volume_per_molecule_A3=float(crystal.get_volume() / n),
               density_g_cm3=float(crystal.get_masses().sum() / crystal.get_volume() * G_CM3_PER_AMU_A3),
               a=float(a), b=float(b), c=float(c))
    try:
        relaxed_groups, positions = whole_molecules(crystal)
    except FAILURES as exc:
        out["error"] = f"relaxed crystal: {error_text(exc)}"
        return out
    # a bond that broke or formed in the crystal (a proton moving between molecules) makes the
    # lattice energy of the file's molecules meaningless
    out["molecules_kept"] = sorted(map(tuple, relaxed_groups)) == sorted(map(tuple, groups))
    if not out["molecules_kept"]:
        out["error"] = "the relaxed crystal's molecules are not the file's (a bond broke or formed)"
        return out
    energies: dict[str, float] = {}
    for f in counts:
        group = next(g for g in groups if formula(start.numbers[g]) == f)
        mol = relax_molecule(isolated(crystal, group, positions), calc, config)
        e = _finite(mol["energy"])
        kept = None if e is None else len(molecule_groups(atoms_from_dict(mol["atoms"]))) == 1
        out["molecules"][f] = {"energy_eV": e, "converged": bool(mol["converged"]), "steps": mol["steps"],
                               "error": mol["error"], "whole": kept}
        if e is None:
            out["error"] = f"molecule {f}: {mol['error'] or 'non-finite energy'}"
            return out
        energies[f] = e
    e_latt = lattice_energy(r.energy, counts, energies)
    out.update(lattice_energy_eV=_finite(e_latt), lattice_energy_kJ_mol=_finite(e_latt * KJ_MOL_PER_EV))
    return out


def compute(calc: Calculator, system: System, ground: dict[str, Any], config: PropertiesConfig) -> dict[str, Any]:
    """Every molecular crystal of ``system`` with ``calc`` (``ground`` is not used: each crystal
    starts from its file): ``{name: crystal_result(...)}``."""
    return {name: crystal_result(atoms, calc, config) for name, atoms in system.molecular_crystals.items()}


def _converged(x: dict[str, Any]) -> bool:
    return bool(x.get("converged")) and all(m.get("converged") for m in x.get("molecules", {}).values())


def _changed(x: dict[str, Any]) -> bool:
    """Whether a bond broke or formed (in the crystal, or a molecule fell apart in the gas phase);
    not known (``None``) after an earlier failure counts as no."""
    return x.get("molecules_kept") is False or any(m.get("whole") is False for m in x.get("molecules", {}).values())


def _notes(t: dict[str, Any], s: dict[str, Any]) -> str:
    parts = [errors_note(t, s)]
    parts += [f"{who}: not converged" for who, x in (("teacher", t), ("student", s)) if not _converged(x) and not x.get("error")]
    return "; ".join(filter(None, parts))


def _unit_text(x: dict[str, Any]) -> str:
    unit = x.get("formula_unit") or {}
    return " + ".join(f"{c} {f}" if c > 1 else f for f, c in unit.items())


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    rows: list[PropertyRecord] = []
    for name in dict.fromkeys([*teacher, *student]):
        t, s = teacher.get(name) or {}, student.get(name) or {}
        if not t or not s:
            rows.append(unavailable(SECTION, f"{name}_crystal", f"missing for the {'teacher' if not t else 'student'}", unit=""))
            continue
        note = _notes(t, s)
        per = f"per {_unit_text(t) or _unit_text(s) or 'formula unit'}"
        rows.append(absolute(SECTION, f"{name}_lattice_energy_kJ_mol", "kJ/mol", t.get("lattice_energy_kJ_mol"),
                             s.get("lattice_energy_kJ_mol"), tolerances.lattice_energy_kJ_mol,
                             "; ".join(filter(None, [per, note]))))
        rows.append(absolute(SECTION, f"{name}_lattice_energy_eV", "eV", t.get("lattice_energy_eV"),
                             s.get("lattice_energy_eV"), None, per))
        rows.append(relative(SECTION, f"{name}_volume_per_molecule_A3", "Å^3", t.get("volume_per_molecule_A3"),
                             s.get("volume_per_molecule_A3"), tolerances.molecular_volume_pct, note))
        rows.append(relative(SECTION, f"{name}_density_g_cm3", "g/cm^3", t.get("density_g_cm3"), s.get("density_g_cm3"),
                             None, note))
        for axis in "abc":
            rows.append(relative(SECTION, f"{name}_{axis}_A", "Å", t.get(axis), s.get(axis), tolerances.cell_length_pct, note))
        # a relaxation that stopped at the step limit is not a minimum: neither side's numbers
        # can be trusted, so this fails whichever side it is
        t_ok, s_ok = _converged(t), _converged(s)
        rows.append(PropertyRecord(SECTION, f"{name}_not_converged", "flag", float(not t_ok), float(not s_ok), None, None,
                                   "flag", t_ok and s_ok, note or "every relaxation converged"))
        rows.append(flag(SECTION, f"{name}_molecules_changed", _changed(t), _changed(s),
                         "a bond broke or formed in the relaxed crystal or an isolated molecule"))
    return rows


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """No figures: the rows say it all."""
    return {}
