"""Sampling settings: seeds, tasks and the run config (frozen dataclasses, YAML/TOML)."""


from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlffd.fieldcheck import check_types, coerce_numbers


FORMAT_VERSION = 1
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
CONFIG_TYPES_BY_SURFACE = {(1, 0, 0): "surface100", (1, 1, 0): "surface110", (1, 1, 1): "surface111"}


# ---------------------------------------------------------------------------------------------
# configuration (frozen dataclasses, mapped 1:1 from YAML/TOML)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedConfig:
    """A seed structure: a file readable by ``ase.io.read``, a bulk crystal from ``ase.build.bulk``
    or one of the prototypes of :mod:`mlffd.prototypes` (``prototype``)."""

    name: str
    file: str | None = None  #: path, read with ase.io.read; relative to the config file's folder (``SampleConfig.base_dir``)
    symbol: str | None = None  #: element(s) for ase.build.bulk, e.g. "Si"
    crystal: str = "diamond"  #: crystalstructure for ase.build.bulk
    a: float | None = None  #: lattice constant (Å); None uses ASE's reference value (a prototype: its bond-length scale)
    cubic: bool = True
    supercell: tuple[int, int, int] = (1, 1, 1)
    #: a name of mlffd.prototypes.PROTOTYPES (beta_sn, bc8, ...) built for the one element ``symbol``
    #: instead of ase.build.bulk (``crystal`` and ``cubic`` are then unused; ``a`` is the first cell vector's length)
    prototype: str | None = None
    # molecules (the ``molecules`` extra: RDKit)
    smiles: str | None = None  #: a gas-phase molecule (no cell, pbc False), conformers by RDKit ETKDG + MMFF
    conformers: int = 1  #: distinct conformers of a ``smiles`` seed; trajectories start from them in turn
    molecules: tuple[str, ...] | None = None  #: SMILES of the molecules of a periodic box (with ``counts``, ``density``)
    counts: tuple[int, ...] | None = None  #: how many of each of ``molecules``
    density: float | None = None  #: g/cm³ of the box
    packing_distance: float = 2.0  #: Å; no two atoms of different molecules closer in the packed box

    @property
    def kind(self) -> str:
        """``file``, ``smiles``, ``box`` (``molecules``) or ``crystal`` (``symbol``)."""
        if self.file is not None:
            return "file"
        if self.smiles is not None:
            return "smiles"
        if self.molecules is not None:
            return "box"
        return "crystal"


@dataclass(frozen=True)
class TaskConfig:
    """One kind of teacher run; it expands to ``len(temperatures) * (repeats + test_repeats)`` trajectories.

    kind:
        ``md``: equilibrate, then ``steps`` MD steps sampled every ``sample_every``.
        ``melt_quench``: melt at ``melt_temperature`` (``melt_steps``, not kept), liquid at each of
        ``temperatures`` for ``steps`` (``liquid``), quench linearly to ``quench_temperature`` over
        ``quench_steps`` and anneal ``anneal_steps`` there (both ``amorphous``).
        ``single``: ``steps`` randomly rattled/strained copies of the start structure, no MD.
        ``cluster``: ``steps`` dimers and trimers (alternating) of the seed's elements, ``vacuum``
        Å of empty space around them, distances in ``contact_range`` (``dimer``, ``trimer``).
        ``random_search``: a random cell of the seed's atoms at its density (times a draw from
        ``volume_range``), no two atoms closer than ``min_separation``, relaxed by the teacher
        (positions and cell) for ``steps`` optimizer steps, every ``sample_every``-th kept (``random``).
        ``relax_positions``: the start structure (the seed with the task's modifiers: defects,
        surface, strain, rattle, volume) relaxed by the teacher at fixed cell for ``steps`` optimizer
        steps, every ``sample_every``-th kept: relaxed defects and surfaces, the paths to them.
        ``relax_shape``: as ``relax_positions``, but the cell's shape relaxes too, at the start's
        volume: a phase's constant-volume relaxation on its equation of state, and the paths by
        which a strained or compressed phase keeps its shape or gives way to another.

    See docs/sampling.md for every key, its units and default.
    """

    name: str
    seed: str = ""  #: name of a SeedConfig (or give ``seeds``)
    kind: str = "md"
    #: default: crystal/strained/compressed/expanded/vacancy/interstitial/surfaceHKL/liquid/amorphous/
    #: contact/dimer/trimer/random, from the kind and the modifiers (docs/sampling.md)
    config_type: str | None = None
    ensemble: str = "nvt"  #: nvt (Langevin) | npt (anisotropic Berendsen)
    temperatures: tuple[float, ...] = (300.0,)
    repeats: int = 1  #: training trajectories per temperature
    test_repeats: int = 0  #: extra, independent trajectories per temperature for the test file
    steps: int = 100
    equilibrate: int = 20  #: MD steps before sampling starts (not kept)
    sample_every: int = 5
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.02  #: Langevin friction
    pressure_gpa: float = 0.0  #: npt target pressure
    taut_fs: float = 100.0  #: npt thermostat time
    taup_fs: float = 500.0  #: npt barostat time
    bulk_modulus_gpa: float = 100.0  #: npt barostat compressibility = 1 / bulk modulus
    # start-structure modifiers
    strain: float = 0.0  #: random symmetric strain, components uniform in ±strain, applied to the start cell
    rattle: float = 0.0  #: Gaussian displacement (Å) of the start positions
    vacancies: int = 0
    interstitials: int = 0
    interstitial_site: str = "largest"  #: largest (the emptiest point) | open (a random one of the open sites)
    surface: tuple[int, int, int] | None = None  #: Miller indices; cut a slab from the seed
    surface_layers: int = 2  #: ase.build.surface layers (of the seed cell)
    surface_repeat: tuple[int, int] = (1, 1)
    vacuum: float = 8.0  #: Å on each side of a slab or cluster (the cell stays periodic)
    # melt-quench
    melt_temperature: float = 3000.0
    melt_steps: int = 100
    quench_temperature: float = 300.0
    quench_steps: int = 100
    anneal_steps: int = 50
    # frame selection
    max_frames: int | None = None  #: keep at most this many MD frames per trajectory (farthest-point)
    min_distance: float = 0.0  #: drop frames closer than this (descriptor distance) to a kept one
    # perturbed copies of each kept frame (one teacher evaluation each)
    copies: int = 0
    copy_rattle: float = 0.03  #: Å
    copy_strain: float = 0.03  #: random strain components in ±copy_strain
    copy_config_type: str | None = None  #: default: "strained" for crystal frames with copy_strain > 0, else parent's
    # teacher relaxation of the seed's cell (before its supercell and any modifier; once per cell and settings in a run)
    relax: bool = False  #: relax the seed's positions and cell with the teacher (BFGS, symmetry kept)
    relax_steps: int = 200  #: optimizer steps at most
    relax_fmax: float = 0.01  #: eV/Å; stop when every force (and the cell's generalised force) is below
    #: isotropic volume scales relative to the (relaxed) seed, laid out evenly over the task's trajectories
    #: (kind single: over its points); strains then change only the cell's shape
    volume_range: tuple[float, float] | None = None
    # close contacts
    contact_range: tuple[float, float] | None = None  #: Å; cluster and pushed-pair distances (default from bond lengths)
    push_pairs: int = 0  #: pairs pushed together in every perturbed copy (and kind single's points) -> "contact"
    # random search
    min_separation: float | None = None  #: Å; shortest distance in a random start (default ~0.75 x bond length)
    #: run the task on each of these seeds instead of ``seed`` (``["*"]``: every molecule seed, i.e. every
    #: ``smiles`` seed); it becomes one task per seed, named ``NAME_SEED``
    seeds: tuple[str, ...] = ()
    #: molecules: rotate this many random rotatable bonds of the start molecule by random angles
    #: (torsion coverage; frames ``torsion``)
    twist: int = 0
    #: kinds relax_positions and relax_shape: the teacher's relaxation keeps the start structure's
    #: space group (ASE FixSymmetry), and ``strain`` keeps it too (a random strain averaged over the
    #: point group): a phase's own equation of state, as ``mlffd-validate properties`` computes it
    keep_symmetry: bool = False


@dataclass(frozen=True)
class SampleConfig:
    """A sampling run: teacher, seeds, tasks, outputs."""

    teacher: str
    seeds: tuple[SeedConfig, ...]
    tasks: tuple[TaskConfig, ...]
    output_dir: str = "data"
    base_dir: str = ""  #: relative seed ``file`` paths are read from here (a config file's own folder; not part of the config hash)
    train_file: str = "train.extxyz"
    test_file: str = "test.extxyz"
    device: str = "cpu"
    random_seed: int = 0
    threads: int | None = None  #: torch.set_num_threads for the run (None leaves it)
    order: str = "interleave"  #: interleave tasks round-robin (coverage early) or "listed"
    descriptor_cutoff: float = 5.0  #: Å, for the frame-selection descriptor
    max_force: float = 50.0  #: eV/Å; frames with a larger (or non-finite) force or energy are dropped
    #: append mlffd.sampling.coverage's recipe (prototypes, volumes, close contacts, random search,
    #: slabs, liquid, slow quench) for every one-element crystal seed given by ``symbol``
    coverage: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SampleConfig":
        """Strict mapping from a plain dict (as loaded from YAML/TOML); unknown keys are errors."""
        data = dict(data)
        seeds = tuple(_from_dict(SeedConfig, s, "seeds[]") for s in data.pop("seeds", []) or [])
        tasks = tuple(_from_dict(TaskConfig, t, "tasks[]") for t in data.pop("tasks", []) or [])
        cfg = _from_dict(cls, {**data, "seeds": seeds, "tasks": tasks}, "sample config")
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def expanded(self) -> "SampleConfig":
        """The config that runs: tasks over several ``seeds`` split into one task per seed; with
        ``coverage`` on, the recipe's seeds and tasks appended
        (:func:`mlffd.sampling.coverage.expand_coverage`) and ``coverage`` off."""
        cfg = _expand_seed_lists(self)
        if not cfg.coverage:
            return cfg
        from mlffd.sampling.coverage import expand_coverage

        return expand_coverage(cfg)

    def validate(self) -> None:
        """ValueError on inconsistent settings (names, kinds, counts), of the expanded config."""
        _check_seeds(self.seeds)
        _check_seed_lists(self)
        cfg = self.expanded()
        seed_names = [s.name for s in cfg.seeds]
        if len(set(seed_names)) != len(seed_names):
            raise ValueError(f"seed names must be unique, got {seed_names}")
        _check_seeds(cfg.seeds)
        task_names = [t.name for t in cfg.tasks]
        if len(set(task_names)) != len(task_names):
            raise ValueError(f"task names must be unique, got {task_names}")
        if not cfg.tasks:
            raise ValueError("sample config has no tasks")
        if not cfg.seeds:
            raise ValueError("sample config has no seeds")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for ok, message in (
            (self.random_seed >= 0, f"random_seed must be >= 0, got {self.random_seed}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1 (or absent), got {self.threads}"),
            (self.descriptor_cutoff > 0, f"descriptor_cutoff must be > 0 Å, got {self.descriptor_cutoff}"),
            (self.max_force > 0, f"max_force must be > 0 eV/Å, got {self.max_force}"),
        ):
            if not ok:
                raise ValueError(message)
        if self.order not in ("interleave", "listed"):
            raise ValueError(f"order must be 'interleave' or 'listed', got {self.order!r}")
        if Path(self.train_file).name == Path(self.test_file).name:
            raise ValueError("train_file and test_file must differ")
        seeds = {s.name: s for s in cfg.seeds}
        for t in cfg.tasks:
            _check_task(t, seed_names)
            _check_molecule_task(t, seeds[t.seed])


#: task kinds; each builds its structures and spends its teacher evaluations its own way
KINDS = ("md", "melt_quench", "single", "cluster", "random_search", "relax_positions", "relax_shape")
#: where a task's interstitials go: the emptiest point, or any open site (sampling.structures.interstitial_point)
INTERSTITIAL_SITES = ("largest", "open")
#: kinds in which the teacher relaxes one structure and frames are taken along the path
PATH_KINDS = ("random_search", "relax_positions", "relax_shape")

#: keys added after the first release: at their defaults they are left out of the config hash, so a
#: config written before they existed keeps its hash and a started run of it resumes
ADDED_KEYS = {
    "seeds": {"prototype": None, "smiles": None, "conformers": 1, "molecules": None, "counts": None, "density": None,
              "packing_distance": 2.0},
    "tasks": {"relax": False, "relax_steps": 200, "relax_fmax": 0.01, "volume_range": None, "contact_range": None,
              "push_pairs": 0, "min_separation": None, "seeds": (), "twist": 0, "keep_symmetry": False,
              "interstitial_site": "largest"},
}

#: what a seed of each kind may not be combined with: (task key, why)
_NOT_FOR_MOLECULES = (
    ("surface", "a molecule has no crystal to cut"),
    ("vacancies", "removing atoms changes the molecule"),
    ("interstitials", "adding atoms changes the molecule"),
    ("strain", "a molecule has no cell to strain"),
    ("volume_range", "a molecule has no cell volume"),
    ("relax", "molecules from SMILES are MMFF pre-optimised; relax acts on periodic cells"),
)


def _expand_seed_lists(config: "SampleConfig") -> "SampleConfig":
    """Each task with ``seeds`` as one task per seed (``NAME_SEED``), in the listed order."""
    if not any(t.seeds for t in config.tasks):
        return config
    molecules = [s.name for s in config.seeds if s.smiles is not None]
    tasks: list[TaskConfig] = []
    for t in config.tasks:
        if not t.seeds:
            tasks.append(t)
            continue
        names = molecules if tuple(t.seeds) == ("*",) else list(t.seeds)
        tasks += [dataclasses.replace(t, name=f"{t.name}_{n}", seed=n, seeds=()) for n in names]
    return dataclasses.replace(config, tasks=tuple(tasks))


def _check_seed_lists(config: "SampleConfig") -> None:
    names = [s.name for s in config.seeds]
    for t in config.tasks:
        where = f"task {t.name!r}"
        if bool(t.seed) == bool(t.seeds):
            raise ValueError(f"{where}: give exactly one of 'seed' or 'seeds'")
        if t.seeds and tuple(t.seeds) != ("*",):
            unknown = [n for n in t.seeds if n not in names]
            if unknown or len(set(t.seeds)) != len(t.seeds):
                raise ValueError(f"{where}: seeds must be distinct seed names (or ['*']), got {list(t.seeds)}; seeds are {names}")
        if tuple(t.seeds) == ("*",) and not any(s.smiles is not None for s in config.seeds):
            raise ValueError(f"{where}: seeds ['*'] means every 'smiles' seed, and there is none")


def _check_molecule_task(t: TaskConfig, seed: SeedConfig) -> None:
    where = f"task {t.name!r}"
    if t.twist < 0:
        raise ValueError(f"{where}: twist must be >= 0, got {t.twist}")
    if seed.kind == "smiles":
        for key, why in _NOT_FOR_MOLECULES:
            if getattr(t, key):
                raise ValueError(f"{where}: {key} does not apply to the molecule seed {seed.name!r} ({why})")
        if t.kind not in ("md", "single"):
            raise ValueError(f"{where}: kind {t.kind} does not apply to the molecule seed {seed.name!r}; use md or single")
        if t.ensemble != "nvt":
            raise ValueError(f"{where}: a gas-phase molecule has no pressure; use ensemble nvt")
    if t.twist and seed.kind in ("box", "crystal"):
        raise ValueError(f"{where}: twist rotates bonds of one molecule; seed {seed.name!r} is a {seed.kind}")
    if seed.kind == "box" and t.relax:
        raise ValueError(f"{where}: relax does not apply to the box seed {seed.name!r} (its molecules are MMFF pre-optimised)")


def _check_seeds(seeds: tuple[SeedConfig, ...]) -> None:
    from ase.data import chemical_symbols
    from ase.symbols import string2symbols

    from mlffd.prototypes import PROTOTYPES

    for s in seeds:
        where = f"seed {s.name!r}"
        given = [k for k in ("file", "symbol", "smiles", "molecules") if getattr(s, k) is not None]
        if len(given) != 1:
            raise ValueError(f"{where}: give exactly one of 'file', 'symbol', 'smiles' or 'molecules', got {given or 'none'}")
        _check_molecule_seed(s, where)
        if s.a is not None and s.a <= 0:
            raise ValueError(f"{where}: a must be > 0 Å, got {s.a}")
        if len(s.supercell) != 3 or min(s.supercell) < 1:
            raise ValueError(f"{where}: supercell entries must be >= 1, got {list(s.supercell)}")
        if s.symbol is not None:
            try:
                elements = set(string2symbols(s.symbol))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{where}: symbol {s.symbol!r} is not a chemical formula") from exc
            unknown = sorted(elements - set(chemical_symbols[1:]))
            if unknown or not elements:
                raise ValueError(f"{where}: symbol {s.symbol!r} names no element {unknown or ''}".rstrip())
        if s.prototype is not None:
            if s.prototype not in PROTOTYPES:
                raise ValueError(f"{where}: prototype must be one of {', '.join(PROTOTYPES)}, got {s.prototype!r}")
            if s.symbol is None or len(elements) != 1:
                raise ValueError(f"{where}: prototype needs 'symbol' to be one element, got {s.symbol!r}")


def _check_molecule_seed(s: SeedConfig, where: str) -> None:
    if s.conformers < 1:
        raise ValueError(f"{where}: conformers must be >= 1, got {s.conformers}")
    if s.conformers != 1 and s.smiles is None:
        raise ValueError(f"{where}: conformers is for a 'smiles' seed")
    if s.packing_distance <= 0:
        raise ValueError(f"{where}: packing_distance must be > 0 Å, got {s.packing_distance}")
    box_keys = [k for k in ("counts", "density") if getattr(s, k) is not None]
    if s.molecules is None:
        if box_keys:
            raise ValueError(f"{where}: {', '.join(box_keys)} belong(s) to a box seed ('molecules')")
    else:
        if not s.molecules:
            raise ValueError(f"{where}: molecules is empty")
        if s.counts is None or len(s.counts) != len(s.molecules) or min(s.counts) < 0 or sum(s.counts) < 1:
            raise ValueError(f"{where}: counts must give a number >= 0 for each of the {len(s.molecules)} molecules "
                             f"(at least one molecule in all), got {None if s.counts is None else list(s.counts)}")
        if s.density is None or s.density <= 0:
            raise ValueError(f"{where}: density must be > 0 g/cm³ for a box of molecules, got {s.density}")
    if s.smiles is not None or s.molecules is not None:
        for key in ("prototype", "a"):
            if getattr(s, key) is not None:
                raise ValueError(f"{where}: {key} is for crystal seeds ('symbol')")
        if tuple(s.supercell) != (1, 1, 1):
            raise ValueError(f"{where}: supercell is for crystal and file seeds")
        from mlffd.sampling.molecules import parse_smiles

        for k, smi in enumerate([s.smiles] if s.smiles is not None else list(s.molecules)):
            parse_smiles(smi, where + ("" if s.smiles is not None else f": molecules[{k}]"))


def _check_range(t: TaskConfig, key: str) -> None:
    value = getattr(t, key)
    if value is not None and (len(value) != 2 or not 0 < value[0] <= value[1]):
        raise ValueError(f"task {t.name!r}: {key} must be [low, high] with 0 < low <= high, got {list(value)}")


def _check_task(t: TaskConfig, seed_names: list[str]) -> None:
    where = f"task {t.name!r}"
    if t.seed not in seed_names:
        raise ValueError(f"{where}: unknown seed {t.seed!r}; seeds are {seed_names}")
    if t.kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {t.kind!r}")
    if t.ensemble not in ("nvt", "npt"):
        raise ValueError(f"{where}: ensemble must be nvt or npt, got {t.ensemble!r}")
    if t.kind == "melt_quench" and t.ensemble != "nvt":
        raise ValueError(f"{where}: melt_quench runs NVT")
    if t.sample_every < 1 or t.steps < 0 or t.equilibrate < 0 or t.repeats < 0 or t.test_repeats < 0:
        raise ValueError(f"{where}: sample_every >= 1 and steps, equilibrate, repeats, test_repeats >= 0")
    if not t.temperatures:
        raise ValueError(f"{where}: temperatures is empty")
    if t.timestep_fs <= 0:
        raise ValueError(f"{where}: timestep_fs must be > 0")
    if min(t.temperatures) < 0 or t.melt_temperature < 0 or t.quench_temperature < 0:
        raise ValueError(f"{where}: temperatures must be >= 0 K")
    for name in ("friction_per_fs", "strain", "rattle", "vacuum", "min_distance", "copy_rattle", "copy_strain",
                 "vacancies", "interstitials", "melt_steps", "quench_steps", "anneal_steps", "copies", "push_pairs"):
        if getattr(t, name) < 0:
            raise ValueError(f"{where}: {name} must be >= 0, got {getattr(t, name)}")
    for name in ("taut_fs", "taup_fs", "bulk_modulus_gpa", "surface_layers", "relax_steps", "relax_fmax"):
        if getattr(t, name) <= 0:
            raise ValueError(f"{where}: {name} must be > 0, got {getattr(t, name)}")
    if t.interstitial_site not in INTERSTITIAL_SITES:
        raise ValueError(f"{where}: interstitial_site must be one of {', '.join(INTERSTITIAL_SITES)}, got {t.interstitial_site!r}")
    if t.interstitial_site != "largest" and not t.interstitials:
        raise ValueError(f"{where}: interstitial_site places interstitials; give interstitials >= 1")
    if len(t.surface_repeat) != 2 or min(t.surface_repeat) < 1:
        raise ValueError(f"{where}: surface_repeat entries must be >= 1, got {list(t.surface_repeat)}")
    if t.max_frames is not None and t.max_frames < 1:
        raise ValueError(f"{where}: max_frames must be >= 1 (or absent), got {t.max_frames}")
    if t.surface is not None and len(t.surface) != 3:
        raise ValueError(f"{where}: surface must be three Miller indices")
    _check_range(t, "volume_range")
    _check_range(t, "contact_range")
    if t.min_separation is not None and t.min_separation <= 0:
        raise ValueError(f"{where}: min_separation must be > 0 Å, got {t.min_separation}")
    # combinations that have no meaning are refused, not ignored
    if t.volume_range is not None and t.surface is not None:
        raise ValueError(f"{where}: volume_range scales a bulk cell; a slab (surface) has vacuum in it")
    if t.volume_range is not None and t.ensemble == "npt":
        raise ValueError(f"{where}: volume_range fixes the volume, npt lets it relax; give pressure_gpa instead")
    if t.push_pairs and t.kind in ("md", "melt_quench", *PATH_KINDS) and not t.copies:
        raise ValueError(f"{where}: push_pairs acts on the perturbed copies of the kept frames; give copies >= 1")
    if t.min_separation is not None and t.kind != "random_search":
        raise ValueError(f"{where}: min_separation is for kind random_search")
    if t.contact_range is not None and t.kind != "cluster" and not t.push_pairs:
        raise ValueError(f"{where}: contact_range is for kind cluster or push_pairs")
    if t.kind in ("cluster", "random_search"):
        builds = "clusters of the seed's elements" if t.kind == "cluster" else "random cells of the seed's atoms"
        unused = ["surface", "vacancies", "interstitials", "strain", "rattle"]
        unused += ["volume_range", "relax", "push_pairs", "copies"] if t.kind == "cluster" else []
        for name in unused:
            if getattr(t, name):
                raise ValueError(f"{where}: kind {t.kind} builds {builds}; {name} does not apply")
    if t.keep_symmetry and t.kind not in ("relax_positions", "relax_shape"):
        raise ValueError(f"{where}: keep_symmetry is for kinds relax_positions and relax_shape")
    if t.keep_symmetry and (t.rattle or t.copies):
        raise ValueError(f"{where}: keep_symmetry keeps the start's space group; rattle and copies would break it")
    if t.kind == "relax_shape" and t.surface is not None:
        raise ValueError(f"{where}: kind relax_shape relaxes a bulk cell's shape; a slab (surface) would fold its vacuum in")
    if t.kind in ("cluster", *PATH_KINDS) and t.ensemble != "nvt":
        raise ValueError(f"{where}: kind {t.kind} runs no MD; remove ensemble")


def _from_dict(cls, data: Any, where: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        obj = cls(**coerce_numbers(cls, kwargs))
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    name = kwargs.get("name")
    item = {"tasks[]": "task", "seeds[]": "seed"}.get(where)
    # the type of every value before any range check compares it
    check_types(obj, f"{item} {name!r}: " if item and isinstance(name, str) else f"{where}: ")
    return obj


def load_config(path: str | Path) -> SampleConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sampling config; every problem is a
    ValueError naming the file (and the key)."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # tomllib and yaml errors are ValueErrors or YAMLError
        raise ValueError(f"{path}: cannot read the config ({' '.join(str(exc).split())})") from exc
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and its kin
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    data = data.get("sample", data)  # allow a [sample] section inside a larger config
    try:
        return SampleConfig.from_dict({"base_dir": str(path.resolve().parent), **data})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# planning: tasks -> trajectories
# ---------------------------------------------------------------------------------------------
