"""The coverage recipe: what an element's crystal MD never visits, sampled by default.

Students trained only on a crystal's own MD (plus strain, defects, surfaces and a fast
melt-quench) are unphysical just outside it: false minima at compressed volumes, competing phases
tens of meV/atom off, collapse when atoms are pushed together. :func:`coverage_tasks` returns, for
one element, seeds and tasks that cover those regions (docs/sampling.md lists them with their cost):

- the ten prototypes of :mod:`mlffd.prototypes`, each relaxed by the teacher, then NVT MD at 300 K
  and 0.6 Tm with the volume laid out over 70-125 % of the teacher's equilibrium and a random
  shear (``<el>_<phase>`` config types by phase name);
- close contacts: dimers and trimers (``dimer``, ``trimer``) and pairs pushed together inside the
  crystal and in liquid and amorphous frames (``contact``);
- random structure search: random cells at about the crystal's density relaxed a few steps (``random``);
- (100), (110) and (111) slabs annealed at 0.7 Tm (``surfaceHKL``);
- liquid at 1.1, 1.5 and 2 Tm and an amorphous solid from a slow (1 ps) quench (``liquid``, ``amorphous``).

:func:`expand_coverage` appends the recipe to a config (``coverage: true``, the default) for every
element that a crystal seed (``symbol`` of one element) names.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, reference_states
from ase.symbols import string2symbols

from mlffd.prototypes import MELTING_K, PROTOTYPES, prototype
from mlffd.sampling.config import SampleConfig, SeedConfig, TaskConfig

#: ASE reference-state symmetries that name a prototype (the element's ground state)
_GROUND = ("diamond", "fcc", "bcc", "hcp", "sc")
#: the teacher's relaxation of every coverage seed: a prototype cell converges in tens of steps; 100 bounds a stuck one
_RELAX = dict(relax=True, relax_steps=100, relax_fmax=0.01)
#: frame selection and perturbed copies shared by the MD tasks
_SELECT = dict(min_distance=0.1, copies=1, copy_rattle=0.03, copy_strain=0.03)


def ground_prototype(symbol: str) -> str:
    """The prototype of ``symbol``'s ground state (ASE's reference state), ``fcc`` when it is none of them."""
    ref = reference_states[atomic_numbers[symbol]] or {}
    return ref.get("symmetry") if ref.get("symmetry") in _GROUND else "fcc"


def _heights(atoms: Atoms) -> np.ndarray:
    """The cell's height across each face (Å)."""
    a = atoms.cell.array
    return abs(atoms.cell.volume) / np.linalg.norm(np.cross(a[[1, 2, 0]], a[[2, 0, 1]]), axis=1)


def supercell(atoms: Atoms, at_least: int) -> tuple[int, int, int]:
    """Repeats of ``atoms``' cell with at least ``at_least`` atoms, grown along the thinnest direction."""
    reps = [1, 1, 1]
    h = _heights(atoms)
    while len(atoms) * reps[0] * reps[1] * reps[2] < at_least:
        k = min(range(3), key=lambda i: h[i] * reps[i])
        reps[k] += 1
    return tuple(reps)  # type: ignore[return-value]


def _slab_size(cell: Atoms, hkl: tuple[int, int, int], thickness: float = 8.0, width: float = 10.0) -> tuple[int, tuple[int, int]]:
    """Layers and in-plane repeats of a slab of ``cell`` at least ``thickness`` Å thick and about ``width`` Å wide."""
    from ase.build import surface

    one = surface(cell, hkl, 1, vacuum=None, periodic=True)
    layers = max(1, math.ceil(thickness / one.cell.lengths()[2]))
    n1, n2 = (max(1, round(width / length)) for length in one.cell.lengths()[:2])
    return layers, (n1, n2)


@functools.lru_cache(maxsize=64)  # frozen results; a config is expanded on every validate, plan and hash
def coverage_tasks(symbol: str, melting_K: float | None = None, ground: str | None = None,
                   prefix: str | None = None) -> tuple[tuple[SeedConfig, ...], tuple[TaskConfig, ...]]:
    """Seeds and tasks of the coverage recipe for element ``symbol`` (see the module docstring).

    ``melting_K`` defaults to :data:`mlffd.prototypes.MELTING_K`; without one, the liquid, amorphous
    and hot tasks are left out (phases and slabs at 300 K only). ``ground`` (a prototype name,
    default :func:`ground_prototype`) is the crystal that is melted, cut into slabs and pushed
    together. Names start with ``prefix`` (default ``coverage_<symbol>``).
    """
    if symbol not in atomic_numbers:
        raise ValueError(f"coverage: unknown element {symbol!r}")
    ground = ground or ground_prototype(symbol)
    if ground not in PROTOTYPES:
        raise ValueError(f"coverage: ground must be one of {', '.join(PROTOTYPES)}, got {ground!r}")
    tm = melting_K if melting_K is not None else MELTING_K.get(symbol)
    p = prefix or f"coverage_{symbol}"
    unit = prototype(ground, symbol)
    seeds = [SeedConfig(name=f"{p}_{name}", symbol=symbol, prototype=name, supercell=supercell(prototype(name, symbol), 12))
             for name in PROTOTYPES]
    seeds += [SeedConfig(name=f"{p}_bulk", symbol=symbol, prototype=ground, supercell=supercell(unit, 64)),
              SeedConfig(name=f"{p}_cell", symbol=symbol, prototype=ground)]
    hot = (300.0, float(round(0.6 * tm))) if tm else (300.0,)
    tasks = [
        TaskConfig(name=f"{p}_{name}", seed=f"{p}_{name}", config_type=f"{symbol}_{name}", **_RELAX,
                   volume_range=(0.70, 1.25), strain=0.03, temperatures=hot, repeats=2, test_repeats=1,
                   equilibrate=20, steps=40, sample_every=4, max_frames=6, timestep_fs=1.5, **_SELECT)
        for name in PROTOTYPES
    ]
    tasks += [
        TaskConfig(name=f"{p}_cluster", seed=f"{p}_cell", kind="cluster", steps=40, repeats=1, test_repeats=1),
        TaskConfig(name=f"{p}_push_crystal", seed=f"{p}_bulk", kind="single", **_RELAX, push_pairs=1, steps=40,
                   repeats=1, test_repeats=1, copy_rattle=0.05, copy_strain=0.02),
        TaskConfig(name=f"{p}_random", seed=f"{p}_{ground}", kind="random_search", **_RELAX, volume_range=(0.85, 1.25),
                   repeats=12, test_repeats=2, steps=30, sample_every=3, max_frames=6, **_SELECT),
    ]
    for hkl in ((1, 0, 0), (1, 1, 0), (1, 1, 1)):
        layers, repeat = _slab_size(unit, hkl)
        tasks.append(TaskConfig(name=f"{p}_surface{''.join(map(str, hkl))}", seed=f"{p}_cell", **_RELAX, surface=hkl,
                                surface_layers=layers, surface_repeat=repeat, vacuum=8.0,
                                temperatures=(float(round(0.7 * tm)) if tm else 300.0,), equilibrate=150, steps=100,
                                sample_every=5, max_frames=10, timestep_fs=1.5, **{**_SELECT, "copy_strain": 0.02}))
    if tm:
        melt = dict(seed=f"{p}_bulk", kind="melt_quench", **_RELAX, rattle=0.1, melt_temperature=float(round(2 * tm)),
                    melt_steps=150, equilibrate=40, timestep_fs=1.0, push_pairs=1, **{**_SELECT, "copy_strain": 0.02})
        tasks += [
            TaskConfig(name=f"{p}_liquid", temperatures=tuple(float(round(f * tm)) for f in (1.1, 1.5, 2.0)),
                       steps=120, sample_every=4, quench_steps=0, anneal_steps=0, max_frames=12, **melt),
            TaskConfig(name=f"{p}_amorphous", temperatures=(float(round(1.1 * tm)),), steps=40, sample_every=10,
                       quench_temperature=300.0, quench_steps=1000, anneal_steps=100, max_frames=24, **melt),
        ]
    return tuple(seeds), tuple(tasks)


def coverage_elements(config: SampleConfig) -> list[str]:
    """Elements that get the recipe: those of the one-element crystal seeds (``symbol``), in order."""
    out: list[str] = []
    for seed in config.seeds:
        if seed.symbol is not None:
            elements = list(dict.fromkeys(string2symbols(seed.symbol)))
            if len(elements) == 1 and elements[0] not in out:
                out.append(elements[0])
    return out


def expand_coverage(config: SampleConfig) -> SampleConfig:
    """``config`` with the recipe's seeds and tasks appended for each of :func:`coverage_elements`
    (ground state: the element's first seed's ``prototype`` or ``crystal`` if that is a prototype)
    and ``coverage`` off; ValueError if a name is already taken."""
    seeds, tasks = list(config.seeds), list(config.tasks)
    for element in coverage_elements(config):
        first = next(s for s in config.seeds if s.symbol is not None and set(string2symbols(s.symbol)) == {element})
        ground = first.prototype or (first.crystal if first.crystal in PROTOTYPES else None)
        more_seeds, more_tasks = coverage_tasks(element, ground=ground)
        taken = {s.name for s in seeds} & {s.name for s in more_seeds} | {t.name for t in tasks} & {t.name for t in more_tasks}
        if taken:
            raise ValueError(f"names {sorted(taken)} are taken by the coverage recipe; rename them or set coverage: false")
        seeds += more_seeds
        tasks += more_tasks
    return dataclasses.replace(config, seeds=tuple(seeds), tasks=tuple(tasks), coverage=False)


__all__ = ["coverage_tasks", "coverage_elements", "expand_coverage", "ground_prototype", "supercell"]
