"""Active distillation settings: one frozen dataclass, the ``active:`` mapping of a distill config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from mlffd.fieldcheck import check_types, coerce_numbers

DEFECTS = ("vacancy", "interstitial", "pushed_pair")
#: every defect a round can start from: the defaults, and an interstitial at any open site of a
#: periodic cell (``interstitial`` takes the emptiest point; in diamond silicon the tetrahedral site)
DEFECT_KINDS = (*DEFECTS, "interstitial_open")

#: a run's ``start`` for a relaxation from a crystal prototype: this prefix and the prototype's name
PHASE_START = "phase:"


def phase_of(start: str) -> str | None:
    """The prototype a run's ``start`` names (``phase:NAME``), or None for any other start."""
    return start[len(PHASE_START):] if start.startswith(PHASE_START) else None


#: options that may change between a run and its resumption: they decide only when the loop
#: stops, never what a finished round did (so a loop may be continued with more rounds or calls)
RESUMABLE = frozenset({"max_rounds", "min_new_failures", "teacher_calls_total", "progress"})

#: options added after loops were run, left out of :meth:`ActiveConfig.identity` at these values
#: (a loop run before them, with them at these values, resumes)
ADDED_KEYS = {"minima_calls_per_round": 0, "false_minimum_force": 0.1, "false_minimum_drop": 0.05, "descent_steps": 30,
              "relax_phases": 0, "phase_volume_range": 0.1, "finetune_active_repeat": 1}


@dataclass(frozen=True)
class ActiveConfig:
    """What one active-distillation loop does (docs/training.md, "Active distillation").

    Units: temperatures K, pressures GPa, times fs, distances Å, energies eV (per atom where
    named so), forces eV/Å.
    """

    # -- committee and rounds
    committee: int = 4  #: students in the committee (member 0 is the distilled student itself)
    max_rounds: int = 5  #: rounds at most
    min_new_failures: int = 5  #: stop when a round flags fewer failed frames than this and finds no false minimum
    teacher_calls_per_round: int = 100  #: teacher single points per round at most
    teacher_calls_total: int = 400  #: teacher single points over all rounds at most
    audit_frames: int = 4  #: per round, frames not flagged labelled too (inside the budget): the error of the confident ones
    # -- exploration with the student: MD on a ladder
    temperatures: tuple[float, ...] = (300.0, 900.0, 1500.0)  #: one Langevin NVT run at each
    pressures: tuple[float, ...] = ()  #: one NPT run at each temperature and each of these pressures
    md_steps: int = 500
    sample_every: int = 20  #: MD and optimizer steps between recorded frames
    timestep_fs: float = 1.0
    friction_per_fs: float = 0.02  #: Langevin friction
    taut_fs: float = 100.0  #: NPT thermostat time
    taup_fs: float = 500.0  #: NPT barostat time
    bulk_modulus_gpa: float = 100.0  #: NPT barostat compressibility = 1 / bulk modulus
    min_atoms: int = 32  #: the start structure (the training data's representative cell, mlffd.representative.pick_structure) repeated to at least this many atoms
    # -- exploration: relaxations (BFGS, positions and cell)
    relax_random: int = 4  #: relaxations from random cells
    relax_defected: int = 3  #: relaxations from defected start structures (cycling through ``defects``)
    defects: tuple[str, ...] = DEFECTS  #: of :data:`DEFECT_KINDS`
    relax_phases: int = 0  #: relaxations from the element's crystal prototypes (one-element crystals; mlffd.prototypes, cycled over the rounds), each at a random volume with its shape relaxed there
    phase_volume_range: float = 0.1  #: those volumes: between the prototype's and the data's, widened by this fraction each way
    relax_steps: int = 200  #: optimizer steps at most
    relax_fmax: float = 0.05  #: converged below this force (eV/Å)
    relax_cell: bool = True  #: relax the cell too (FrechetCellFilter), periodic structures only
    density_range: float = 0.15  #: random cells at the start structure's density times 1 ± this
    random_min_distance: float = 0.9  #: random cells: no pair closer than this × the data's median first-neighbour distance
    push_fraction: float = 0.9  #: pushed pair: two neighbours set to this fraction of the pair's shortest training distance
    # -- flags: committee trust levels (DP-GEN's max_devi_f) and physics sanity
    force_lo: float = 0.1  #: max per-atom force deviation below this: accurate
    force_hi: float = 0.4  #: above this: failed; in between: candidate
    min_distance_fraction: float = 0.75  #: failed: a pair closer than this fraction of its shortest training distance
    min_distance_A: float | None = None  #: failed: a pair closer than this (Å); set, it replaces the fraction
    energy_margin: float = 0.5  #: failed: energy per atom (less per-element references) below the training minimum minus this (eV/atom)
    max_force: float = 25.0  #: failed: a student force component above this (eV/Å)
    label_max_force: float = 50.0  #: teacher labels with a force component above this are dropped (unphysical), as the sampler drops them
    # -- teacher checks of the student's minima (mlffd.active.minima)
    minima_calls_per_round: int = 40  #: teacher calls per round (inside its budget) checking relaxations' ends and descending; 0: none
    false_minimum_force: float = 0.1  #: the teacher descends from a student minimum where its largest force is above this (eV/Å)
    false_minimum_drop: float = 0.05  #: that minimum is false if the descent gets this much lower (eV), else shifted
    descent_steps: int = 30  #: teacher calls (each a labelled frame) per descent at most, kicks included
    # -- fine-tuning every member after each round
    finetune_steps: int = 200
    finetune_lr: float = 1.0e-3
    finetune_warmup_steps: int = 20
    finetune_active_repeat: int = 1  #: times per epoch each fine-tune uses the loop's labelled frames (a few among thousands hardly move a student otherwise)
    finetune_val_fraction: float = 0.1  #: share of the active frames each member holds out (its own draw) for validation
    # -- misc
    descriptor_cutoff: float = 5.0  #: of the sampler's structural descriptor (diversity of the chosen frames)
    seed: int = 0  #: exploration and selection random numbers
    progress: bool = True  #: tqdm bars for exploration and labelling

    def __post_init__(self) -> None:
        for name in ("temperatures", "pressures", "defects"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                value = (value,)
            if isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)
        check_types(self, "active: ")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        object.__setattr__(self, "pressures", tuple(float(p) for p in self.pressures))
        positive = ("timestep_fs", "friction_per_fs", "taut_fs", "taup_fs", "bulk_modulus_gpa", "relax_fmax", "force_lo",
                    "force_hi", "max_force", "label_max_force", "finetune_lr", "descriptor_cutoff", "false_minimum_force",
                    "false_minimum_drop")
        at_least_one = ("max_rounds", "teacher_calls_per_round", "teacher_calls_total", "md_steps", "sample_every", "relax_steps",
                        "finetune_steps", "finetune_active_repeat")
        not_negative = ("min_new_failures", "audit_frames", "relax_random", "relax_defected", "relax_phases", "min_atoms", "finetune_warmup_steps",
                        "seed", "energy_margin", "minima_calls_per_round", "descent_steps")
        checks = [(self.committee >= 2, "committee", f"must be >= 2 students (a deviation needs two), got {self.committee}")]
        checks += [(getattr(self, k) > 0, k, f"must be > 0, got {getattr(self, k)}") for k in positive]
        checks += [(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}") for k in at_least_one]
        checks += [(getattr(self, k) >= 0, k, f"must be >= 0, got {getattr(self, k)}") for k in not_negative]
        checks += [
            (self.force_hi > self.force_lo, "force_hi", f"must be above force_lo ({self.force_lo}), got {self.force_hi}"),
            (all(t > 0 for t in self.temperatures), "temperatures", f"must be > 0 K, got {list(self.temperatures)}"),
            (not self.pressures or self.temperatures, "pressures", "need temperatures (one NPT run per temperature and pressure)"),
            (all(d in DEFECT_KINDS for d in self.defects), "defects", f"must be some of {list(DEFECT_KINDS)}, got {list(self.defects)}"),
            (self.defects or self.relax_defected == 0, "defects", "is empty but relax_defected > 0"),
            (self.temperatures or self.relax_random or self.relax_defected or self.relax_phases, "temperatures",
             "no exploration: give temperatures or relax_random / relax_defected / relax_phases > 0"),
            (self.audit_frames < self.teacher_calls_per_round, "audit_frames",
             f"must be below teacher_calls_per_round ({self.teacher_calls_per_round}), got {self.audit_frames}"),
            (self.minima_calls_per_round + self.audit_frames < self.teacher_calls_per_round, "minima_calls_per_round",
             f"plus audit_frames ({self.audit_frames}) must be below teacher_calls_per_round ({self.teacher_calls_per_round}): "
             f"the committee's frames need the rest; got {self.minima_calls_per_round}"),
            (0.0 < self.density_range < 1.0, "density_range", f"must be in (0, 1), got {self.density_range}"),
            (0.0 < self.phase_volume_range < 1.0, "phase_volume_range", f"must be in (0, 1), got {self.phase_volume_range}"),
            (0.0 < self.random_min_distance <= 1.5, "random_min_distance", f"must be in (0, 1.5], got {self.random_min_distance}"),
            (0.0 < self.push_fraction <= 1.0, "push_fraction", f"must be in (0, 1], got {self.push_fraction}"),
            (0.0 < self.min_distance_fraction < 1.0, "min_distance_fraction", f"must be in (0, 1), got {self.min_distance_fraction}"),
            (self.min_distance_A is None or self.min_distance_A > 0, "min_distance_A", f"must be > 0 Å or null, got {self.min_distance_A}"),
            (0.0 < self.finetune_val_fraction < 1.0, "finetune_val_fraction", f"must be in (0, 1), got {self.finetune_val_fraction}"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ValueError(f"active: {key}: {message}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ActiveConfig":
        """Strict mapping: unknown keys are errors naming them; YAML's ``1e-3`` strings are numbers."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"active: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**coerce_numbers(cls, d))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def identity(self) -> str:
        """sha256 of the options that decide what the rounds do (all but :data:`RESUMABLE`)."""
        d = {k: v for k, v in self.to_dict().items() if k not in RESUMABLE and not (k in ADDED_KEYS and v == ADDED_KEYS[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


__all__ = ["ADDED_KEYS", "ActiveConfig", "DEFECTS", "DEFECT_KINDS", "PHASE_START", "RESUMABLE", "phase_of"]
