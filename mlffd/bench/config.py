"""Settings of ``mlffd bench``: what is measured and the classical potentials it is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA = "mlffd-bench/2"  #: 2: "headline" (numbers only) replaced "targets" (numbers held to limits)
RESULT_MARKER = "MLFFD-BENCH-RESULT "
LATTICE_SI = 5.43

#: teacher name -> how to load it (see :func:`_load_teacher_for_bench`)
TEACHERS: dict[str, dict[str, Any]] = {
    "sevennet-7net-0": {"spec": "sevennet:7net-0", "weights": "shipped"},
    "orb-v3-conservative": {"spec": "orb:orb-v3-conservative-inf-omat", "weights": "random", "max_num_neighbors": 120},
    "orb-v3-direct": {"spec": "orb:orb-v3-direct-20-omat", "weights": "random", "max_num_neighbors": 20},
}

CLASSICAL = ("sw", "tersoff")

#: LAMMPS potential files (metal units), the standard published parameters as shipped with LAMMPS
SI_SW = """\
# Stillinger-Weber silicon: F. H. Stillinger and T. A. Weber, Phys. Rev. B 31, 5262 (1985)
# (as LAMMPS' potentials/Si.sw) -- written by mlffd bench
# element1 element2 element3 epsilon sigma a lambda gamma costheta0 A B p q tol
Si Si Si 2.1683 2.0951 1.80 21.0 1.20 -0.333333333333
         7.049556277 0.6022245584 4.0 0.0 0.0
"""
SI_TERSOFF = """\
# Tersoff silicon: J. Tersoff, Phys. Rev. B 37, 6991 (1988) (as LAMMPS' potentials/Si.tersoff)
# -- written by mlffd bench
# element1 element2 element3 m gamma lambda3 c d costheta0 n beta lambda2 B R D lambda1 A
Si Si Si 3.0 1.0 1.3258 4.8381 2.0417 0.0000 22.956
         0.33675 1.3258 95.373 3.0 0.2 3.2394 3264.7
"""

# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What ``mlffd bench`` measures. :meth:`quick` gives the small set used by tests."""

    sizes: tuple[int, ...] = (64, 512, 4096, 32768)
    models: tuple[str, ...] = ("ultra-tiny", "tiny", "original")
    threads: int = 2
    repeats: int = 5
    rounds: int = 1  #: the main measurements repeated in this many rounds; ratios: median over rounds of the ratio within each round
    warmup: int = 3  #: untimed calls first (TorchScript's profiling executor optimises over ~3 calls)
    min_time: float = 0.5  #: seconds per timed block (k calls)
    students: bool = True  #: artifact + calculator paths
    teachers: bool = True
    teacher_names: tuple[str, ...] = tuple(TEACHERS)
    teacher_sizes: tuple[int, ...] = (64, 512)
    lammps: bool = True
    lammps_students: bool = True  #: pair_style mlffd (else only the classical floor)
    ranks: tuple[int, ...] = (1, 2)
    classical: tuple[str, ...] = CLASSICAL
    side_by_side: bool = True  #: flatness and plugin overhead also measured side by side in one process (alternating)
    side_by_side_pairs: int = 5  #: alternations per side-by-side measurement
    batch: bool = True
    batch_count: int = 64
    batch_cell: int = 2  #: batch cells are n x n x n conventional cells (2 -> 64 atoms)
    allocator: bool = True
    allocator_model: str = "tiny"
    allocator_sizes: tuple[int, ...] = (512, 4096)
    allocator_methods: tuple[str, ...] = ("artifact",)
    allocator_rounds: int = 1  #: interleaved default/mlffd pairs per size (order alternates between rounds)
    dtype: str = "float32"  #: dtype of random-weight students
    device: str = "cpu"  #: where students and teachers run (``cpu``, ``cuda``, ``cuda:N``); LAMMPS: ``pair_style mlffd device D``
    compiled: bool = False  #: also DistilledCalculator(compile=True) (torch.compile; method "calculator-compiled")
    block_atoms: int = 0  #: centre atoms per evaluation block of the students; 0: the product's default for the device
    timeout: float = 3600.0  #: seconds per worker
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchConfig":
        """A run of a few seconds per measurement (64 atoms), for tests and smoke checks."""
        base = dict(
            sizes=(64,),
            models=("ultra-tiny",),
            repeats=2,
            warmup=3,
            min_time=0.02,
            teacher_sizes=(64,),
            batch_count=8,
            allocator_model="ultra-tiny",
            allocator_sizes=(64,),
            side_by_side_pairs=2,
            timeout=600.0,
            quick=True,
        )
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if not (self.device == "cpu" or self.device == "cuda" or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.block_atoms < 0:
            raise ValueError(f"block_atoms must be >= 0 (0: the default), got {self.block_atoms}")
        if self.threads < 1 or self.repeats < 1 or self.rounds < 1 or self.warmup < 0 or self.allocator_rounds < 1 or self.side_by_side_pairs < 1:
            raise ValueError("threads, repeats, rounds, allocator_rounds and side_by_side_pairs must be >= 1, warmup >= 0")
        for name in ("sizes", "teacher_sizes", "allocator_sizes"):
            if any(int(n) < 8 for n in getattr(self, name)):
                raise ValueError(f"{name}: atom counts must be >= 8 (diamond-Si supercells of 8 n^3 atoms)")
        unknown = set(self.teacher_names) - set(TEACHERS)
        if unknown:
            raise ValueError(f"unknown teachers {sorted(unknown)}; known: {', '.join(TEACHERS)}")
        if set(self.allocator_methods) - {"artifact", "calculator", "lammps"}:
            raise ValueError(f"allocator_methods must be among artifact, calculator, lammps; got {list(self.allocator_methods)}")
        unknown = set(self.classical) - set(CLASSICAL)
        if unknown:
            raise ValueError(f"unknown classical potentials {sorted(unknown)}; known: {', '.join(CLASSICAL)}")



RESULT_FIELDS = ("schema", "created", "duration_s", "host", "config", "models", "teachers", "measurements", "ratios", "headline")
MEASUREMENT_FIELDS = (
    "id", "section", "method", "model", "kind", "weights", "atoms", "atoms_requested", "parallel", "ranks", "threads", "repeats",
    "warmup", "error", "us_per_atom_step", "atom_steps_per_s", "samples_us", "peak_rss_mb", "rss_before_mb", "peak_increment_mb",
    "device", "peak_device_mb",
)
