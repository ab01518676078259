"""Settings of ``mlffd-validate properties``: what to compute and the default tolerances.

Tolerances are floors for a student that is fit to replace its teacher in MD: they follow what
the field accepts between a machine-learned potential and its reference (docs/validation.md,
"Properties", explains each one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

#: the sections of a crystal (one element's phases or the user's periodic structures), in the
#: order they run (later ones use the ground state relaxed first); the default for a crystal
CRYSTAL_SECTIONS: tuple[str, ...] = ("eos", "elastic", "phonons", "defects", "surfaces", "short_range", "liquid")
#: the sections of gas-phase molecules (each calculator's own minimum of every molecule first);
#: the default for a molecular system
MOLECULAR_SECTIONS: tuple[str, ...] = ("geometry", "vibrations", "torsions", "conformers")
#: the sections of molecular crystals (``--molecular-crystal FILE``): they run alongside the
#: molecular sections (a molecular system), or alone
MOLECULAR_CRYSTAL_SECTIONS: tuple[str, ...] = ("molecular_crystal",)
#: every section
SECTIONS: tuple[str, ...] = CRYSTAL_SECTIONS + MOLECULAR_SECTIONS + MOLECULAR_CRYSTAL_SECTIONS


@dataclass(frozen=True)
class Tolerances:
    """Default pass/fail tolerances (student against teacher)."""

    a0_pct: float = 0.2  #: lattice constant / equilibrium volume^(1/3), relative %
    volume_pct: float = 0.6  #: equilibrium volume per atom (non-cubic ground state, competing phases), relative %
    bulk_modulus_pct: float = 3.0  #: B, relative %
    bulk_modulus_derivative: float = 0.5  #: B', absolute
    phase_energy_meV: float = 15.0  #: energy of a phase relative to the ground state, meV/atom
    eos_curve_meV: float = 20.0  #: largest E-V deviation over 70-120 % of V0, meV/atom (after aligning minima)
    below_ground_meV: float = 1.0  #: a phase lower than the ground state by more than this (meV/atom) is flagged; phases degenerate with it (lonsdaleite in SW) must not flip on noise
    spurious_minimum_volume_pct: float = 5.0  #: a student E-V minimum farther than this (% of V0) from every teacher minimum is spurious
    elastic_pct: float = 5.0  #: each Cij, relative %
    elastic_abs_GPa: float = 3.0  #: ... or absolute GPa, whichever is looser (constants near zero)
    phonon_pct: float = 3.0  #: frequencies at high-symmetry points, relative %
    phonon_abs_THz: float = 0.2  #: ... or absolute THz, whichever is looser (near-zero acoustic modes)
    defect_eV: float = 0.1  #: formation energies, eV
    defect_structure_A: float = 0.15  #: a relaxed defect's atom environments (distances to 8 neighbours, Å) at most this far from the teacher's
    collapse_fraction: float = 0.85  #: a relaxation ending with atoms closer than this x the teacher's shortest bond collapsed
    surface_pct: float = 5.0  #: surface energies, relative %
    surface_abs_J_m2: float = 0.05  #: ... or absolute J/m^2, whichever is looser
    rdf_peak_A: float = 0.05  #: liquid first-peak position, Å (or twice the combined standard error over seeds, if larger)
    rdf_height_pct: float = 10.0  #: liquid first-peak height, relative % (or noise)
    coordination: float = 0.3  #: liquid coordination number (or noise)
    diffusion_pct: float = 30.0  #: liquid self-diffusion, relative % (or noise)
    hot_collapse_fraction: float = 0.6  #: a hot-solid run reaching atoms closer than this x the teacher's shortest bond is unstable
    rmsd_A: float = 0.1  #: molecule minimum: heavy-atom RMSD after alignment, Å
    bond_A: float = 0.01  #: molecule minimum: mean absolute bond-length error, Å
    angle_deg: float = 1.0  #: molecule minimum: mean absolute bond-angle error, degrees
    frequency_cm: float = 30.0  #: harmonic frequencies: mean absolute error of the real modes, cm^-1
    frequency_pct: float = 10.0  #: harmonic frequencies: largest relative error of the modes above 100 cm^-1, %
    imaginary_cm: float = 20.0  #: a mode below -this (cm^-1, imaginary) at a calculator's own minimum is flagged
    torsion_meV: float = 43.4  #: torsion profile: largest |error| after aligning minima, meV (1 kcal/mol)
    barrier_meV: float = 43.4  #: torsion barrier (highest - lowest point of the scan), meV
    conformer_meV: float = 43.4  #: conformer energies relative to the lowest: mean absolute error, meV
    conformer_rank: float = 0.4  #: conformer ranking: passes when Spearman rho >= 1 - this
    lattice_energy_kJ_mol: float = 4.0  #: molecular crystal: lattice energy per molecule (formula unit), kJ/mol
    molecular_volume_pct: float = 3.0  #: molecular crystal: relaxed volume per molecule, relative %
    cell_length_pct: float = 2.0  #: molecular crystal: relaxed cell lengths a, b, c, relative %

    def with_overrides(self, overrides: Mapping[str, float]) -> "Tolerances":
        """A copy with ``overrides`` (field -> value); unknown names are a ValueError naming them."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown tolerance(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, value in overrides.items():
            if not (isinstance(value, (int, float)) and value >= 0 and value == value and value != float("inf")):
                raise ValueError(f"tolerance {name}={value!r}: expected a finite number >= 0")
        return replace(self, **{k: float(v) for k, v in overrides.items()})


@dataclass(frozen=True)
class PropertiesConfig:
    """What ``mlffd-validate properties`` computes.

    Attributes:
        sections: the sections to run (a subset of :data:`SECTIONS`).
        phases: built-in prototypes to compare for an element (``recipes.PROTOTYPES``); the
            lowest in the teacher's energy is the ground state unless structures are given.
        eos_points: E-V points from ``eos_range[0]`` to ``eos_range[1]`` times V0.
        fmax: force threshold of every relaxation (eV/Å).
        relax_steps: most optimiser steps per relaxation.
        seeds: MD runs per liquid / hot-solid property (averaged, with their spread).
        liquid_time_fs, hot_time_fs: length of each liquid and hot-solid run.
        timestep_fs: MD timestep.
        melting_K: melting temperature of the system (liquid at ``liquid_factor`` x, hot solid
            stability at ``hot_factor`` x); ``None``: from the element (``recipes``).
        supercell_atoms: approximate size of defect and phonon supercells.
        molecule_fmax, molecule_steps: force threshold (eV/Å) and most steps of a molecule's
            relaxation (its minimum, conformers, constrained torsion points).
        displacement: finite-difference step of the harmonic frequencies (Å, central differences).
        torsion_points: points of the 360° dihedral scan; ``torsion_mode`` ``relaxed`` (every
            other coordinate relaxed at a fixed dihedral) or ``rigid``.
        conformers: RDKit conformers per molecule for the conformer energies.
        crystal_min_width: a molecular crystal's cell is repeated until every width (between
            opposite faces) is at least this (Å): Γ-point-only teachers need it.
    """

    sections: tuple[str, ...] = CRYSTAL_SECTIONS
    phases: tuple[str, ...] = ()
    eos_points: int = 11
    eos_range: tuple[float, float] = (0.70, 1.20)
    fmax: float = 0.005
    relax_steps: int = 300
    seeds: int = 3
    liquid_time_fs: float = 2000.0
    hot_time_fs: float = 2000.0
    timestep_fs: float = 1.0
    melting_K: float | None = None
    liquid_factor: float = 1.1
    hot_factor: float = 2.0
    supercell_atoms: int = 64
    molecule_fmax: float = 0.01
    molecule_steps: int = 1000
    displacement: float = 0.01
    torsion_points: int = 12
    torsion_mode: str = "relaxed"
    conformers: int = 4
    crystal_min_width: float = 9.0
    tolerances: Tolerances = field(default_factory=Tolerances)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ValueError(f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SECTIONS)}")
        for name in ("eos_points", "relax_steps", "seeds", "supercell_atoms", "molecule_steps", "torsion_points", "conformers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if self.eos_points < 5:
            raise ValueError(f"eos_points={self.eos_points}: an equation-of-state fit needs at least 5 points")
        lo, hi = self.eos_range
        if not (0.3 <= lo < 1.0 < hi <= 2.0):
            raise ValueError(f"eos_range={self.eos_range}: expected (low, high) with 0.3 <= low < 1 < high <= 2")
        for name in ("fmax", "liquid_time_fs", "hot_time_fs", "timestep_fs", "liquid_factor", "hot_factor", "molecule_fmax",
                     "displacement"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name}={value!r}: expected a finite positive number")
        if self.torsion_mode not in ("relaxed", "rigid"):
            raise ValueError(f"torsion_mode={self.torsion_mode!r}: expected 'relaxed' or 'rigid'")
        if self.torsion_points < 4:
            raise ValueError(f"torsion_points={self.torsion_points}: a barrier needs at least 4 points")
        if not (isinstance(self.crystal_min_width, (int, float)) and 0 <= self.crystal_min_width <= 100):
            raise ValueError(f"crystal_min_width={self.crystal_min_width!r}: expected a width in Å, 0 to 100")
        if self.melting_K is not None and not (0 < self.melting_K < 1e5):
            raise ValueError(f"melting_K={self.melting_K!r}: expected a temperature in K")

    def settings(self, section: str) -> dict[str, Any]:
        """The settings a section's numbers depend on (part of its cache key): changing the
        liquid's length does not recompute the teacher's equation of state."""
        if section not in _SETTINGS:
            raise ValueError(f"unknown section {section!r}")
        return {name: getattr(self, name) for name in _SETTINGS[section]} | {"section": section}


_RELAX = ("fmax", "relax_steps")
#: the settings each section (and the ground-state relaxation) reads
_SETTINGS: dict[str, tuple[str, ...]] = {
    "ground": _RELAX,
    "eos": _RELAX + ("phases", "eos_points", "eos_range"),
    "elastic": _RELAX,
    "phonons": _RELAX + ("supercell_atoms",),
    "defects": _RELAX + ("supercell_atoms",),
    "surfaces": _RELAX,
    "short_range": (),
    "liquid": ("seeds", "liquid_time_fs", "hot_time_fs", "timestep_fs", "melting_K", "liquid_factor", "hot_factor",
               "supercell_atoms"),
    # molecules: each calculator's minimum of every molecule (the molecular sections' "ground")
    "molecules": ("molecule_fmax", "molecule_steps"),
    "geometry": ("molecule_fmax", "molecule_steps"),
    "vibrations": ("molecule_fmax", "molecule_steps", "displacement"),
    "torsions": ("molecule_fmax", "molecule_steps", "torsion_points", "torsion_mode"),
    "conformers": ("molecule_fmax", "molecule_steps", "conformers"),
    # the crystal relaxed like a crystal ground state, its molecules like the gas-phase minima
    "molecular_crystal": _RELAX + ("molecule_fmax", "molecule_steps", "crystal_min_width"),
}
