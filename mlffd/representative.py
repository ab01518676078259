"""The structure a model stands for: what tools run when the user names none.

Training records one of its own frames (:func:`pick_structure`) in the artifact's metadata
(``structure``: atomic numbers, positions and cell in Å, pbc), so validation, cards and
benchmarks of a Cu-Au or a molecular student start from that chemistry, not from silicon.
Artifacts from before the field fall back to the reference crystal of a one-element model
(ASE's ``reference_states``).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

#: the smallest periodic default: tools repeat the recorded cell up to this many atoms
MIN_ATOMS = 64


def structure_record(atoms: Atoms) -> dict[str, Any]:
    """``atoms`` as a JSON-ready record for the ``structure`` metadata field."""
    return {
        "numbers": [int(z) for z in atoms.numbers],
        "positions": np.asarray(atoms.positions, float).round(6).tolist(),
        "cell": np.asarray(atoms.cell.array, float).round(6).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
    }


def _energy_per_atom(atoms: Atoms) -> float:
    """The frame's labelled energy per atom; +inf where it has none (never preferred)."""
    try:
        energy = float(atoms.get_potential_energy())
    except (RuntimeError, AttributeError, ValueError, PropertyNotImplementedError):  # no calculator, or one without an energy
        return math.inf
    return energy / len(atoms) if math.isfinite(energy) else math.inf


def pick_structure(frames: Sequence[Atoms]) -> Atoms:
    """The frame a model stands for: a cell of its data near equilibrium.

    Among the fully periodic frames (else all: molecules, slabs), those of the most common
    composition and size (the bulk the sampler started from, not the one large defect cell or
    the odd phase a dataset also holds); of these the one with the lowest labelled energy per
    atom (the coolest, least strained), the first on ties or without energies."""
    if not frames:
        raise ValueError("no frames to pick a representative structure from")
    periodic = [a for a in frames if a.pbc.all()] or list(frames)

    def kind(a: Atoms) -> tuple:
        return tuple(sorted(Counter(a.numbers.tolist()).items()))

    common = Counter(map(kind, periodic)).most_common(1)[0][0]
    atoms = min((a for a in periodic if kind(a) == common), key=_energy_per_atom)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def grown(atoms: Atoms, min_atoms: int = MIN_ATOMS) -> Atoms:
    """A periodic ``atoms`` repeated (shortest side first) to at least ``min_atoms`` atoms."""
    if not atoms.pbc.all() or len(atoms) >= min_atoms:
        return atoms.copy()
    lengths = atoms.cell.lengths()
    reps = np.ones(3, dtype=int)
    while len(atoms) * int(np.prod(reps)) < min_atoms:
        reps[int(np.argmin(lengths * reps))] += 1
    return atoms * tuple(int(r) for r in reps)


def default_structure(metadata: Mapping[str, Any], min_atoms: int = MIN_ATOMS) -> Atoms:
    """The structure tools use for a model when the user gives none (see the module docstring).

    ValueError naming the model's elements when it records none and has no reference crystal."""
    record = metadata.get("structure")
    if record:
        atoms = Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"])
        return grown(atoms, min_atoms)
    elements = list(metadata.get("elements", []))
    if len(elements) == 1:
        from ase.build import bulk
        from ase.data import atomic_numbers, reference_states

        state = reference_states[atomic_numbers[elements[0]]] or {}
        if state.get("symmetry") in ("diamond", "fcc", "bcc", "sc", "hcp"):
            cubic = state["symmetry"] != "hcp"
            return grown(bulk(elements[0], cubic=cubic), min_atoms)
    raise ValueError(f"the model ({'-'.join(elements) or 'no elements'}) records no structure and has no reference "
                     "crystal to default to: give one with --structure")
