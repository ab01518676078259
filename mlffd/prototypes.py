"""The standard crystal prototypes of an element, built with ASE's space-group machinery (no
hand-written Wyckoff expansion) and scaled to a sensible starting density, plus the element data
that goes with them (bond lengths, melting temperatures).

The sampler (``mlffd.sampling``) draws seeds from here and the property instrument
(``md_validation.properties``) judges students on the same structures; they live in the library
because data flows teacher -> data -> student -> validation, never back. Every structure is a
starting point: the sampler and the property sections relax it with their calculator.
"""

from __future__ import annotations

import math
from typing import Callable

from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, covalent_radii, reference_states
from ase.spacegroup import crystal


def _diamond(s: str) -> Atoms:
    return bulk(s, "diamond", a=1.0, cubic=True)


def _hex_diamond(s: str) -> Atoms:  # lonsdaleite, P6_3/mmc, 4f (1/3, 2/3, 1/16)
    return crystal(s, [(1 / 3, 2 / 3, 1 / 16)], spacegroup=194, cellpar=[1.0, 1.0, math.sqrt(8 / 3), 90, 90, 120])


def _beta_sn(s: str) -> Atoms:  # I4_1/amd, 4a, c/a of silicon's beta-tin phase
    return crystal(s, [(0, 0, 0)], spacegroup=141, cellpar=[1.0, 1.0, 0.552, 90, 90, 90])


def _simple_hexagonal(s: str) -> Atoms:  # P6/mmm, 1a
    return crystal(s, [(0, 0, 0)], spacegroup=191, cellpar=[1.0, 1.0, 0.94, 90, 90, 120])


def _bc8(s: str) -> Atoms:  # Ia-3, 16c (x, x, x)
    return crystal(s, [(0.1003, 0.1003, 0.1003)], spacegroup=206, cellpar=[1.0, 1.0, 1.0, 90, 90, 90])


def _st12(s: str) -> Atoms:  # P4_3 2_1 2, 4a (x, x, 0) and 8b (x, y, z)
    return crystal([s, s], [(0.0912, 0.0912, 0.0), (0.1730, 0.3784, 0.2486)], spacegroup=96,
                   cellpar=[1.0, 1.0, 1.177, 90, 90, 90])


def _fcc(s: str) -> Atoms:
    return bulk(s, "fcc", a=1.0, cubic=True)


def _bcc(s: str) -> Atoms:
    return bulk(s, "bcc", a=1.0, cubic=True)


def _hcp(s: str) -> Atoms:
    return bulk(s, "hcp", a=1.0, c=math.sqrt(8 / 3))


def _sc(s: str) -> Atoms:
    return bulk(s, "sc", a=1.0)


#: name -> builder of a unit-scale cell (rescaled by :func:`prototype`)
PROTOTYPES: dict[str, Callable[[str], Atoms]] = {
    "diamond": _diamond,
    "hex_diamond": _hex_diamond,
    "beta_sn": _beta_sn,
    "simple_hexagonal": _simple_hexagonal,
    "bc8": _bc8,
    "st12": _st12,
    "fcc": _fcc,
    "bcc": _bcc,
    "hcp": _hcp,
    "sc": _sc,
}

#: melting temperatures (K): the liquid of the property instrument and of the sampler's coverage recipe
MELTING_K: dict[str, float] = {
    "Si": 1687.0, "Ge": 1211.0, "C": 4000.0, "Al": 933.5, "Cu": 1357.8, "Ag": 1234.9, "Au": 1337.3,
    "Ni": 1728.0, "Pd": 1828.0, "Pt": 2041.4, "Fe": 1811.0, "W": 3695.0, "Mo": 2896.0, "Ta": 3290.0,
    "Ti": 1941.0, "Mg": 923.0, "Pb": 600.6, "Sn": 505.1, "Li": 453.7, "Na": 371.0,
}


def nearest_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance, periodic images included (Å)."""
    from ase.neighborlist import neighbor_list

    cut = 1.5 * max(atoms.cell.lengths().max(), 1.0)
    d = neighbor_list("d", atoms, cut)
    return float(d.min()) if len(d) else math.inf


def bond_length(symbol: str) -> float:
    """A starting nearest-neighbour distance for ``symbol``: its ASE reference crystal's, else
    twice its covalent radius."""
    z = atomic_numbers[symbol]
    ref = reference_states[z]
    if ref and ref.get("symmetry") in ("diamond", "fcc", "bcc", "sc", "hcp") and "a" in ref:
        kind, a = ref["symmetry"], ref["a"]
        return {"diamond": a * math.sqrt(3) / 4, "fcc": a / math.sqrt(2), "bcc": a * math.sqrt(3) / 2,
                "sc": a, "hcp": a}[kind]
    return 2.0 * float(covalent_radii[z])


def prototype(name: str, symbol: str) -> Atoms:
    """Prototype ``name`` of element ``symbol``, scaled so its shortest bond is the element's
    bond length (denser prototypes start a little longer: coordination lengthens bonds)."""
    if name not in PROTOTYPES:
        raise ValueError(f"unknown prototype {name!r}; built-in: {', '.join(PROTOTYPES)}")
    atoms = PROTOTYPES[name](symbol)
    coordination_stretch = {"diamond": 1.0, "hex_diamond": 1.0, "bc8": 1.0, "st12": 1.0}.get(name, 1.06)
    scale = bond_length(symbol) * coordination_stretch / nearest_distance(atoms)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    atoms.info["phase"] = name
    return atoms


def melting_temperature(symbols: list[str]) -> float | None:
    """The tabulated melting temperature of a one-element system, else ``None``."""
    return MELTING_K.get(symbols[0]) if len(set(symbols)) == 1 else None


__all__ = ["PROTOTYPES", "MELTING_K", "prototype", "nearest_distance", "bond_length", "melting_temperature"]
