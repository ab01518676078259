"""Run the property sections for a teacher and a student, side by side.

Each section is a module (``eos``, ``elastic``, ...) with three functions:

- ``compute(calc, system, ground, config) -> dict``: the section's numbers for ONE calculator
  (JSON-able; the teacher's are cached), ``ground`` being that calculator's own relaxed ground state;
- ``compare(teacher, student, tolerances) -> list[PropertyRecord]``: the scored rows;
- ``figures(teacher, student, labels) -> dict[str, bytes]``: PNG figures (``report.figure_png``).

A molecular system (``System.is_molecular``) runs the molecular sections (``geometry``,
``vibrations``, ``torsions``, ``conformers``) instead: their "ground" is each calculator's
minimum of every molecule (``molecules.compute``, cached as the section ``molecules``), passed
to ``compute`` as that JSON dict (molecule name -> relaxed structure and energy). The section
``molecular_crystal`` runs on a molecular system's ``molecular_crystals`` (alongside the
molecules, or alone) and starts from each file's structure; the minima are computed only when a
gas-phase section runs.

Data flows one way: structures -> per-calculator results -> records and figures -> report.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from md_validation.properties.cache import ResultCache, cache_key
from md_validation.properties.config import MOLECULAR_CRYSTAL_SECTIONS, MOLECULAR_SECTIONS, PropertiesConfig
from md_validation.properties.records import PropertyRecord
from md_validation.properties.relax import relax
from md_validation.properties.system import System, atoms_from_dict, atoms_to_dict


@dataclass(frozen=True)
class Side:
    """One calculator of the comparison: the calculator, its cache identity (``None``: not
    cached, e.g. the student under test) and its label in reports."""

    calc: Calculator
    label: str
    cache_id: str | None = None


@dataclass
class PropertiesResult:
    """Everything a report shows: scored rows, each section's figures (section -> name -> PNG
    bytes) and raw numbers."""

    records: list[PropertyRecord]
    figures: dict[str, dict[str, bytes]]
    raw: dict[str, dict[str, Any]]
    labels: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> list[PropertyRecord]:
        return [r for r in self.records if r.passed is not None]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.scored)


def section_module(name: str) -> ModuleType:
    return importlib.import_module(f"md_validation.properties.{name}")


def ground_state(side: Side, system: System, config: PropertiesConfig, cache: ResultCache | None) -> dict[str, Any]:
    """``side``'s relaxed ground state as JSON: structure, energy per atom, convergence."""

    def compute() -> dict[str, Any]:
        r = relax(system.ground_atoms, side.calc, fmax=config.fmax, steps=config.relax_steps)
        return {"atoms": atoms_to_dict(r.atoms), "energy_per_atom": r.energy_per_atom, "converged": r.converged,
                "error": r.error, "min_distance": r.min_distance}

    return _cached(side, "ground", system, config, cache, compute)


def molecule_minima(side: Side, system: System, config: PropertiesConfig, cache: ResultCache | None,
                    progress: bool = True) -> dict[str, Any]:
    """``side``'s minimum of every molecule of a molecular ``system`` (JSON, cached)."""
    module = section_module("molecules")
    return _cached(side, "molecules", system, config, cache, lambda: module.compute(side.calc, system, config, progress))


def check_sections(system: System, config: PropertiesConfig) -> None:
    """ValueError naming the sections that do not apply: molecular sections on crystals or crystal
    sections on molecules, gas-phase sections without molecules, ``molecular_crystal`` without
    molecular crystals."""
    gas = [s for s in config.sections if s in MOLECULAR_SECTIONS]
    packed = [s for s in config.sections if s in MOLECULAR_CRYSTAL_SECTIONS]
    crystal = [s for s in config.sections if s not in gas + packed]
    if system.is_molecular and crystal:
        raise ValueError(f"section(s) {', '.join(crystal)} need a periodic crystal; molecules take "
                         f"{', '.join(MOLECULAR_SECTIONS + MOLECULAR_CRYSTAL_SECTIONS)}")
    if not system.is_molecular and (gas or packed):
        raise ValueError(f"section(s) {', '.join(gas + packed)} need molecules (SMILES) or molecular crystals; "
                         "crystals take the others")
    if gas and not system.molecules:
        raise ValueError(f"section(s) {', '.join(gas)} need gas-phase molecules (SMILES)")
    if packed and not system.molecular_crystals:
        raise ValueError(f"section(s) {', '.join(packed)} need a molecular crystal (a periodic structure of molecules)")


def code_version(section: str) -> str:
    """sha256 of the source a section's numbers come from (its module, the shared relaxations,
    recipes and prototypes, the sections' shared ``common`` helpers, and the modules it names in
    ``DEPENDS``), so that a cached teacher result is never reused after that code changed."""
    modules = [section_module(name) for name in ["relax", "recipes"]]
    modules.append(importlib.import_module("mlffd.prototypes"))  # the recipes' structures and constants
    modules += [section_module(name) for name in ([] if section == "ground" else ["common", section])]
    # code outside the package a section's numbers depend on (MD helpers, RDF analysis)
    modules += [importlib.import_module(name) for name in getattr(modules[-1], "DEPENDS", ())]
    h = hashlib.sha256()
    for module in modules:
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def _cached(side: Side, section: str, system: System, config: PropertiesConfig, cache: ResultCache | None, compute):
    if side.cache_id is None or cache is None:
        return compute()
    key = cache_key(side.cache_id, section, config.settings(section) | {"code": code_version(section)}, system.hashes())
    return cache.get_or_compute(key, compute)


def run_properties(teacher: Side, student: Side, system: System, config: PropertiesConfig,
                   cache: ResultCache | None = None, progress: bool = True) -> PropertiesResult:
    """Every section of ``config`` for ``teacher`` and ``student``; see the module docstring."""
    check_sections(system, config)
    records: list[PropertyRecord] = []
    figures: dict[str, dict[str, bytes]] = {}
    raw: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    labels = {"teacher": teacher.label, "student": student.label}
    units = [("ground", side) for side in (teacher, student)] + [(s, side) for s in config.sections for side in (teacher, student)]
    grounds: dict[str, Any] = {}
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with tqdm(total=len(units), desc="properties", unit="step", disable=not progress, leave=False) as bar:
        for section, side in units:
            role = "teacher" if side is teacher else "student"
            bar.set_postfix_str(f"{section} / {role}")
            t0 = time.perf_counter()
            if section == "ground":
                if not system.is_molecular:
                    grounds[role] = ground_state(side, system, config, cache)
                elif any(s in MOLECULAR_SECTIONS for s in config.sections):
                    grounds[role] = molecule_minima(side, system, config, cache, progress)
                else:  # molecular crystals alone start from their files: no minima to relax
                    grounds[role] = {}
            else:
                module = section_module(section)
                ground = grounds[role] if system.is_molecular else atoms_from_dict(grounds[role]["atoms"])
                results[(section, role)] = _cached(side, section, system, config, cache,
                                                   lambda m=module, g=ground, c=side.calc: m.compute(c, system, g, config))
            timings[f"{section}/{role}"] = time.perf_counter() - t0
            bar.update(1)
    raw["ground"] = grounds
    for section in config.sections:
        module = section_module(section)
        t, s = results[(section, "teacher")], results[(section, "student")]
        raw[section] = {"teacher": t, "student": s}
        records.extend(module.compare(t, s, config.tolerances))
        figures[section] = module.figures(t, s, labels)
    counts = {"hits": cache.hits, "misses": cache.misses} if cache is not None else {}
    return PropertiesResult(records, figures, raw, labels, timings, counts)
