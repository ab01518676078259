"""Training configuration: one frozen dataclass, mapped 1:1 from a YAML or TOML file."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ase.data import chemical_symbols

from mlffd.fieldcheck import check_types, coerce_numbers

SCHEDULES = ("cosine", "plateau", "constant")
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("mse", "huber")
DTYPES = ("float32", "float64")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_SYMBOLS = frozenset(chemical_symbols[1:])


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (see ``docs/training.md``).

    Paths are relative to the current directory (or, when loaded with :func:`load_config`, to
    the config file's directory).
    """

    # -- data
    train: tuple[str, ...] = ()  #: labelled extxyz files (compressed or not)
    val: tuple[str, ...] = ()  #: validation files; empty: hold out whole trajectories of ``train``
    test: tuple[str, ...] = ()  #: held-out test files for the exported metrics; empty: use val
    val_fraction: float = 0.1  #: share of training frames held out (by trajectory) when ``val`` is empty
    val_from: tuple[str, ...] = ()  #: hold out validation trajectories only from these ``train`` files (fine-tuning: the new data); empty: from all
    repeat: Mapping[str, int] = field(default_factory=dict)  #: oversampling: ``train`` file -> times its training frames are used per epoch
    output: str = "runs/student"  #: run directory: checkpoints, log, metrics, artifact
    name: str = "student"  #: artifact name: ``output/NAME.mlffd.pt``
    teacher: str = "unknown"  #: teacher spec written into the artifact metadata
    # -- model
    model: str = "tiny"  #: size preset (``ultra-tiny``, ``tiny``, ``original``)
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  #: ModelConfig fields over the preset
    elements: tuple[str, ...] = ()  #: model elements; empty: those in the training data, sorted by Z
    init_from: str = ""  #: fine-tune: start from this artifact's weights (same architecture); empty: random init
    # -- loss (units: energy per atom eV, forces eV/Å, stress as virial per atom eV)
    energy_weight: float = 10.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    loss: str = "mse"  #: ``mse`` or ``huber``
    huber_delta: float = 0.1
    # -- optimisation
    optimizer: str = "adam"  #: ``adam`` or ``adamw``
    lr: float = 5e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    schedule: str = "cosine"  #: ``cosine`` (warm-up + cosine to min_lr), ``plateau`` or ``constant``
    warmup_steps: int = 100
    plateau_factor: float = 0.5  #: ReduceLROnPlateau factor (``schedule: plateau``)
    plateau_patience: int = 5  #: evaluations without improvement before the LR drops
    grad_clip: float = 10.0  #: max gradient norm; 0 disables
    batch_size: int = 4  #: structures per (global) batch
    max_epochs: int = 100
    max_steps: int = 0  #: 0: max_epochs * steps per epoch
    ema_decay: float = 0.99  #: 0 disables the EMA
    eval_every: int = 0  #: validate every N steps; 0: once per epoch
    patience: int = 0  #: early stopping after N evaluations without improvement; 0 disables
    checkpoint_every: int = 200  #: steps between checkpoints (and one at the end)
    # -- runtime
    seed: int = 0
    dtype: str = "float32"
    threads: int = 0  #: torch.set_num_threads; 0 leaves torch's default
    device: str = "cpu"  #: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun: cuda:LOCAL_RANK)
    ddp: str = "wrapper"  #: under torchrun: ``wrapper`` (DistributedDataParallel) or ``allreduce`` (one manual all_reduce per step)
    progress: bool = True  #: tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        for name in ("train", "val", "val_from", "test", "elements"):
            value = getattr(self, name)
            if isinstance(value, (str, Path)):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in value):
                raise ValueError(f"{name}: expected a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.model_overrides is None:
            object.__setattr__(self, "model_overrides", {})
        if not isinstance(self.model_overrides, Mapping):
            raise ValueError(f"model_overrides: expected a mapping of ModelConfig fields, got {self.model_overrides!r}")
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        if self.repeat is None:
            object.__setattr__(self, "repeat", {})
        if not isinstance(self.repeat, Mapping):
            raise ValueError(f"repeat: expected a mapping of training file -> times, got {self.repeat!r}")
        object.__setattr__(self, "repeat", {str(k): v for k, v in self.repeat.items()})
        # types first: every range check below may then compare numbers
        check_types(self)
        unknown = [f for f in self.val_from if f not in self.train]
        if unknown:
            raise ValueError(f"val_from: {unknown} are not among the training files {list(self.train)}")
        unknown = [f for f in self.repeat if f not in self.train]
        if unknown:
            raise ValueError(f"repeat: {unknown} are not among the training files {list(self.train)}")
        bad = {f: n for f, n in self.repeat.items() if isinstance(n, bool) or not isinstance(n, int) or n < 1}
        if bad:
            raise ValueError(f"repeat: times must be whole numbers >= 1, got {bad}")
        checks = [
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}"),
            (self.ddp in ("wrapper", "allreduce"), f"ddp must be 'wrapper' or 'allreduce', got {self.ddp!r}"),
            (_DEVICE_RE.match(self.device) is not None, f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"),
            (0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.huber_delta > 0, f"huber_delta must be positive, got {self.huber_delta}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (0.0 < self.plateau_factor < 1.0, f"plateau_factor must be in (0, 1), got {self.plateau_factor}"),
            (self.plateau_patience >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}"),
            (self.max_epochs >= 0, f"max_epochs must be >= 0, got {self.max_epochs}"),
            (self.max_steps >= 0, f"max_steps must be >= 0 (0: max_epochs decides), got {self.max_steps}"),
            (self.max_steps > 0 or self.max_epochs > 0, "max_steps and max_epochs are both 0: the run would take no step"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.eval_every >= 0, f"eval_every must be >= 0 (0: every epoch), got {self.eval_every}"),
            (self.patience >= 0, f"patience must be >= 0 (0 disables early stopping), got {self.patience}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}"),
            (min(self.energy_weight, self.forces_weight, self.stress_weight) >= 0, "loss weights must be >= 0"),
            (max(self.energy_weight, self.forces_weight, self.stress_weight) > 0, "loss weights are all 0: nothing to learn"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        bad = [e for e in self.elements if e not in _SYMBOLS]
        if bad:
            raise ValueError(f"elements: {bad} are not chemical symbols (expected e.g. ['Si', 'O'])")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements: {list(self.elements)} lists an element twice")
        from mlffd.models.config import PRESETS

        if self.model not in PRESETS:
            raise ValueError(f"model: unknown size preset {self.model!r}; expected one of {sorted(PRESETS)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        d["model_overrides"] = dict(self.model_overrides)
        d["repeat"] = dict(self.repeat)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Strict mapping (unknown keys are errors); numeric strings such as YAML's ``1e-3``
        become numbers for number fields."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**coerce_numbers(cls, d))

    def replace(self, **changes: Any) -> "TrainConfig":
        return type(self).from_dict({**self.to_dict(), **changes})

    def hash(self) -> str:
        """sha256 of the canonical JSON of the options (run identity, for stage markers)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or TOML (``.toml``) file as a dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config file {path}: expected a .yaml, .yml or .toml file")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path}: cannot read it ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - tomllib.TOMLDecodeError, yaml.YAMLError: a syntax error in the file
        raise ValueError(f"config file {path}: not valid {path.suffix.lstrip('.').upper()} ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def resolve_paths(d: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Make the relative paths of a training mapping (data, output, ``init_from``) relative to ``base``."""
    out = dict(d)
    for key in ("train", "val", "val_from", "test"):
        value = out.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[key] = [str(base / v) if not Path(v).is_absolute() else v for v in value]
        # anything else is left for TrainConfig to refuse with the key's name
    if isinstance(out.get("repeat"), Mapping):
        out["repeat"] = {str(base / k) if isinstance(k, str) and not Path(k).is_absolute() else k: n
                         for k, n in out["repeat"].items()}
    for key in ("output", "init_from"):
        if isinstance(out.get(key), str) and out[key] and not Path(out[key]).is_absolute():
            out[key] = str(base / out[key])
    return out


def load_config(path: str | Path) -> TrainConfig:
    """Load a :class:`TrainConfig` from YAML or TOML; relative paths are relative to the file.

    Every problem with the file's contents is a ValueError that names the file and the key.
    """
    path = Path(path)
    data = read_mapping(path)
    try:
        return TrainConfig.from_dict(resolve_paths(data, path.resolve().parent))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training config {path}: {exc}") from exc


def check_runnable(config: TrainConfig) -> None:
    """What a run needs before its first step, checked up front: the training, validation and
    test files and ``init_from`` exist, and ``device`` is one this torch can use. ValueError
    naming the key otherwise."""
    if not config.train:
        raise ValueError("train: no training files given")
    for key in ("train", "val", "test"):
        for f in getattr(config, key):
            p = Path(f)
            if not p.is_file():
                raise ValueError(f"{key}: {f} {'is not a file' if p.exists() else 'does not exist'}")
    if config.init_from and not Path(config.init_from).is_file():
        raise ValueError(f"init_from: {config.init_from} does not exist")
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device: {config.device!r}, but torch {torch.__version__} sees no CUDA GPU; use device: cpu")
        index = int(config.device.split(":")[1]) if ":" in config.device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device: {config.device!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
