"""What a property run is about: the elements, the ground-state structure, the competing
phases and the melting temperature, from built-in recipes or the user's files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, reference_states

from md_validation.properties.recipes import PROTOTYPES, melting_temperature, prototype

#: ASE reference-state symmetries that name a built-in prototype
_GROUND = {"diamond": "diamond", "fcc": "fcc", "bcc": "bcc", "hcp": "hcp", "sc": "sc"}


@dataclass(frozen=True)
class System:
    """The structures of a property run (unrelaxed starts; each calculator relaxes its own).

    ``ground`` is the reference phase (energies of the others are relative to it); ``phases``
    maps every phase name, the ground state's included, to its start; ``prototype`` is the
    ground state's built-in prototype name when it has one (defect and surface recipes need it).

    A molecular system (:func:`molecule_system`) has no phases: ``molecules`` maps each molecule's
    name to its start (non-periodic, RDKit conformer) carrying ``info['smiles']``, ``bonds``
    and ``conformers``; ``ground`` is the first molecule's name. ``molecular_crystals`` maps each
    molecular crystal's name to its start (periodic, :func:`with_molecular_crystals`); a system of
    molecular crystals alone is molecular too, its ``ground`` the first crystal's name.
    """

    elements: tuple[str, ...]
    ground: str
    phases: dict[str, Atoms] = field(hash=False, compare=False)
    prototype: str | None = None
    melting_K: float | None = None
    molecules: dict[str, Atoms] = field(default_factory=dict, hash=False, compare=False)
    molecular_crystals: dict[str, Atoms] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_molecular(self) -> bool:
        return bool(self.molecules) or bool(self.molecular_crystals)

    @property
    def ground_atoms(self) -> Atoms:
        if self.is_molecular:
            return (self.molecules.get(self.ground) or self.molecular_crystals[self.ground]).copy()
        return self.phases[self.ground].copy()

    def hashes(self) -> list[str]:
        """One hash per phase start, or per molecule (start and conformers) (cache keys)."""
        from md_validation.inputs import structure_hash

        out = [f"{name}:{structure_hash(atoms)}" for name, atoms in sorted(self.phases.items())]
        for name, atoms in sorted(self.molecules.items()):
            confs = np.round(np.asarray(atoms.info.get("conformers", atoms.positions[None]), dtype=np.float64), 10)
            out.append(f"molecule:{name}:{atoms.info.get('smiles', '')}:{structure_hash(atoms)}:"
                       f"{hashlib.sha256(confs.tobytes()).hexdigest()}")
        # only where there are crystals, so that the keys of a system of molecules stay as they were
        out += [f"molecular_crystal:{name}:{structure_hash(atoms)}" for name, atoms in sorted(self.molecular_crystals.items())]
        return out


def ground_prototype(symbol: str) -> str:
    """The built-in prototype of an element's ground state (ASE's reference state), diamond if unknown."""
    ref = reference_states[atomic_numbers[symbol]] or {}
    return _GROUND.get(ref.get("symmetry", ""), "diamond")


def element_system(symbol: str, phases: Sequence[str] = (), melting_K: float | None = None) -> System:
    """Built-in recipes for an element: its ground state and the competing ``phases`` (default: every prototype)."""
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element {symbol!r}")
    ground = ground_prototype(symbol)
    names = list(dict.fromkeys([ground, *(phases or PROTOTYPES)]))
    return System((symbol,), ground, {name: prototype(name, symbol) for name in names}, ground,
                  melting_K if melting_K is not None else melting_temperature([symbol]))


def structures_system(structures: Sequence[Atoms], names: Sequence[str] | None = None,
                      melting_K: float | None = None) -> System:
    """User structures: the first is the ground state, the others competing phases."""
    if not structures:
        raise ValueError("no structures given")
    names = list(names or [a.info.get("phase") or f"structure_{k}" for k, a in enumerate(structures)])
    if len(set(names)) != len(names):
        raise ValueError(f"structure names must be unique, got {names}")
    for name, atoms in zip(names, structures):
        if not atoms.pbc.all() or atoms.cell.rank != 3:
            raise ValueError(f"structure {name!r}: properties need a periodic crystal (pbc on in 3 directions)")
    elements = tuple(sorted(set(structures[0].get_chemical_symbols())))
    melting = melting_K if melting_K is not None else melting_temperature(list(elements))
    return System(elements, names[0], {n: a.copy() for n, a in zip(names, structures)}, None, melting)


def molecule_system(molecules: Mapping[str, str], conformers: int = 4) -> System:
    """Gas-phase molecules from SMILES (``name -> smiles``): RDKit conformers built by
    :func:`mlffd.sampling.molecules.molecule_from_smiles` (the sampler's own helper, so a
    molecule is built the same way it was sampled); the first conformer is each molecule's start."""
    from mlffd.sampling.molecules import molecule_from_smiles

    if not molecules:
        raise ValueError("no molecules given")
    built: dict[str, Atoms] = {}
    for name, smiles in molecules.items():
        atoms = molecule_from_smiles(smiles, n_conformers=max(1, int(conformers)), where=f"molecule {name!r}")
        atoms.info["name"] = name
        built[name] = atoms
    elements = tuple(sorted({s for a in built.values() for s in a.get_chemical_symbols()}))
    return System(elements, next(iter(built)), {}, None, None, built)


def with_molecular_crystals(system: System | None, crystals: Mapping[str, Atoms]) -> System:
    """``system`` (molecules, or ``None``) with the molecular ``crystals`` (name -> periodic
    structure, checked by :func:`md_validation.properties.molecular_crystal.check_crystal`)."""
    from md_validation.properties.molecular_crystal import check_crystal

    for name, atoms in crystals.items():
        check_crystal(atoms, f"molecular crystal {name!r}")
    copies = {name: atoms.copy() for name, atoms in crystals.items()}
    for atoms in copies.values():
        atoms.calc = None
    if system is None:
        system = System((), next(iter(copies)), {}, None, None, {})
    elements = tuple(sorted({*system.elements, *(s for a in copies.values() for s in a.get_chemical_symbols())}))
    return replace(system, elements=elements, molecular_crystals=copies)


def model_system(model_elements: Sequence[str], molecular: bool, molecules: Mapping[str, str] | None = None,
                 structures: Sequence[Atoms] = (), element: str | None = None, phases: Sequence[str] = (),
                 melting_K: float | None = None, conformers: int = 4,
                 molecular_crystals: Mapping[str, Atoms] | None = None) -> System:
    """The system a model is tested on: its ``molecules`` (default: the test molecules made of
    the model's elements, unless ``molecular_crystals`` are given) and ``molecular_crystals``
    when ``molecular``, else the crystals ``structures``, else the built-in recipes of
    ``element`` (default: the model's one element). ValueError says what to give."""
    if molecular:
        if not molecules and not molecular_crystals:
            from md_validation.properties.molecules import default_molecules

            molecules = default_molecules(model_elements)
            if not molecules:
                raise ValueError(f"no default test molecule has only the model's elements ({', '.join(model_elements)}): "
                                 "give molecules with --smiles NAME=SMILES or --molecules FILE")
        system = molecule_system(molecules, conformers=conformers) if molecules else None
        if molecular_crystals:
            system = with_molecular_crystals(system, molecular_crystals)
        missing = sorted(set(system.elements) - set(model_elements)) if model_elements else []
        if missing:
            raise ValueError(f"the molecules or crystals have element(s) {', '.join(missing)} that the model does not "
                             f"({', '.join(model_elements)})")
        return system
    if structures:
        return structures_system(structures, melting_K=melting_K)
    symbols = [element] if element else list(model_elements)
    if len(symbols) != 1:
        raise ValueError(f"the built-in recipes are for one element; this model has {', '.join(symbols) or 'none'}: "
                         "give --element or the crystals with --structure")
    return element_system(symbols[0], phases, melting_K)


def atoms_to_dict(atoms: Atoms) -> dict[str, Any]:
    """An Atoms as plain JSON (numbers, positions, cell, pbc)."""
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(), "cell": atoms.cell.array.tolist(),
            "pbc": atoms.pbc.tolist()}


def atoms_from_dict(d: dict[str, Any]) -> Atoms:
    return Atoms(numbers=d["numbers"], positions=np.asarray(d["positions"], float), cell=d["cell"], pbc=d["pbc"])
