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
    """A seed structure: a file readable by ``ase.io.read`` or a bulk crystal from ``ase.build.bulk``."""

    name: str
    file: str | None = None  #: path (relative to the current directory), read with ase.io.read
    symbol: str | None = None  #: element(s) for ase.build.bulk, e.g. "Si"
    crystal: str = "diamond"  #: crystalstructure for ase.build.bulk
    a: float | None = None  #: lattice constant (Å); None uses ASE's reference value
    cubic: bool = True
    supercell: tuple[int, int, int] = (1, 1, 1)


@dataclass(frozen=True)
class TaskConfig:
    """One kind of teacher run; it expands to ``len(temperatures) * (repeats + test_repeats)`` trajectories.

    kind:
        ``md``: equilibrate, then ``steps`` MD steps sampled every ``sample_every``.
        ``melt_quench``: melt at ``melt_temperature`` (``melt_steps``, not kept), liquid at each of
        ``temperatures`` for ``steps`` (``liquid``), quench linearly to ``quench_temperature`` over
        ``quench_steps`` and anneal ``anneal_steps`` there (both ``amorphous``).
        ``single``: ``steps`` randomly rattled/strained copies of the start structure, no MD.
    """

    name: str
    seed: str  #: name of a SeedConfig
    kind: str = "md"
    config_type: str | None = None  #: default: crystal/strained/vacancy/interstitial/surfaceHKL/liquid/amorphous
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
    surface: tuple[int, int, int] | None = None  #: Miller indices; cut a slab from the seed
    surface_layers: int = 2  #: ase.build.surface layers (of the seed cell)
    surface_repeat: tuple[int, int] = (1, 1)
    vacuum: float = 8.0  #: Å on each side of the slab (the cell stays periodic)
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


@dataclass(frozen=True)
class SampleConfig:
    """A sampling run: teacher, seeds, tasks, outputs."""

    teacher: str
    seeds: tuple[SeedConfig, ...]
    tasks: tuple[TaskConfig, ...]
    output_dir: str = "data"
    train_file: str = "train.extxyz"
    test_file: str = "test.extxyz"
    device: str = "cpu"
    random_seed: int = 0
    threads: int | None = None  #: torch.set_num_threads for the run (None leaves it)
    order: str = "interleave"  #: interleave tasks round-robin (coverage early) or "listed"
    descriptor_cutoff: float = 5.0  #: Å, for the frame-selection descriptor
    max_force: float = 50.0  #: eV/Å; frames with a larger (or non-finite) force or energy are dropped

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

    def validate(self) -> None:
        """ValueError on inconsistent settings (names, kinds, counts)."""
        seed_names = [s.name for s in self.seeds]
        if len(set(seed_names)) != len(seed_names):
            raise ValueError(f"seed names must be unique, got {seed_names}")
        for s in self.seeds:
            if (s.file is None) == (s.symbol is None):
                raise ValueError(f"seed {s.name!r}: give exactly one of 'file' or 'symbol'")
        task_names = [t.name for t in self.tasks]
        if len(set(task_names)) != len(task_names):
            raise ValueError(f"task names must be unique, got {task_names}")
        if not self.tasks:
            raise ValueError("sample config has no tasks")
        if not self.seeds:
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
        for s in self.seeds:
            if s.a is not None and s.a <= 0:
                raise ValueError(f"seed {s.name!r}: a must be > 0 Å, got {s.a}")
            if min(s.supercell) < 1:
                raise ValueError(f"seed {s.name!r}: supercell entries must be >= 1, got {list(s.supercell)}")
        if self.order not in ("interleave", "listed"):
            raise ValueError(f"order must be 'interleave' or 'listed', got {self.order!r}")
        if Path(self.train_file).name == Path(self.test_file).name:
            raise ValueError("train_file and test_file must differ")
        for t in self.tasks:
            where = f"task {t.name!r}"
            if t.seed not in seed_names:
                raise ValueError(f"{where}: unknown seed {t.seed!r}; seeds are {seed_names}")
            if t.kind not in ("md", "melt_quench", "single"):
                raise ValueError(f"{where}: kind must be md, melt_quench or single, got {t.kind!r}")
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
                         "vacancies", "interstitials", "melt_steps", "quench_steps", "anneal_steps", "copies"):
                if getattr(t, name) < 0:
                    raise ValueError(f"{where}: {name} must be >= 0, got {getattr(t, name)}")
            for name in ("taut_fs", "taup_fs", "bulk_modulus_gpa", "surface_layers"):
                if getattr(t, name) <= 0:
                    raise ValueError(f"{where}: {name} must be > 0, got {getattr(t, name)}")
            if min(t.surface_repeat) < 1:
                raise ValueError(f"{where}: surface_repeat entries must be >= 1, got {list(t.surface_repeat)}")
            if t.max_frames is not None and t.max_frames < 1:
                raise ValueError(f"{where}: max_frames must be >= 1 (or absent), got {t.max_frames}")
            if t.surface is not None and len(t.surface) != 3:
                raise ValueError(f"{where}: surface must be three Miller indices")


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
        return SampleConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# planning: tasks -> trajectories
# ---------------------------------------------------------------------------------------------
