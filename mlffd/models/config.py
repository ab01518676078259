"""Model hyper-parameters (a frozen dataclass) and the named size presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`mlffd.models.StudentPotential`."""

    elements: tuple[str, ...] = ("Si",)
    cutoff: float = 5.0  #: radial cutoff (Å)
    features: int = 64  #: atom feature width
    channels: int = 64  #: moment channels per rank
    hidden: int = 64  #: hidden width of the update MLP
    readout_hidden: int = 32  #: hidden width of the energy readout
    num_basis: int = 8  #: Bessel radial functions
    message_dim: int = 4  #: neighbour features carried by messages after the first layer
    num_interactions: int = 2  #: message-passing layers
    envelope_p: int = 6  #: polynomial envelope exponent
    avg_num_neighbors: float = 20.0  #: normalisation of the neighbour sums
    ensemble: int = 0  #: readout heads of a shallow ensemble (0: one head, no uncertainty; >= 2: uncertainties from their spread, ``mlffd.models.uncertainty``)
    repulsion: bool = True  #: the ZBL short-range prior (``mlffd.models.repulsion``), acting only below the training data's shortest distances
    chunk_atoms: int = 512  #: evaluation only, per torch thread: above this many atoms, forces are computed in blocks of this many centres (bounded memory)

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError("ModelConfig.elements must name at least one element")
        if self.cutoff <= 0:
            raise ValueError(f"ModelConfig.cutoff must be positive, got {self.cutoff}")
        for name in ("features", "channels", "hidden", "readout_hidden", "num_basis", "message_dim", "num_interactions", "chunk_atoms"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.ensemble < 0 or self.ensemble == 1:
            raise ValueError(f"ModelConfig.ensemble must be 0 (no ensemble) or >= 2 heads, got {self.ensemble}")
        object.__setattr__(self, "elements", tuple(self.elements))

    @property
    def interaction_range(self) -> float:
        return self.num_interactions * self.cutoff

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elements"] = list(self.elements)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model hyper-parameters {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


#: Size presets matching the parameter budgets of the prior project's students.
PRESETS: dict[str, dict[str, Any]] = {
    "ultra-tiny": dict(features=34, channels=34, hidden=34, readout_hidden=16, message_dim=4),  # ≈21K
    # blocks of 1,024 atoms per thread where memory allows: fewer blocks, less fixed work per
    # atom; ultra-tiny keeps 512, its memory budget being the smallest
    "tiny": dict(features=66, channels=66, hidden=66, readout_hidden=32, message_dim=8, chunk_atoms=1024),  # ≈78K
    "original": dict(features=160, channels=160, hidden=160, readout_hidden=64, message_dim=16, chunk_atoms=1024),  # ≈437K
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` for a named size preset, with optional overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
