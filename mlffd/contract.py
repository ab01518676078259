"""The contract shared by Python, the fused kernels and the LAMMPS plugin (``contract.json``).

One file holds the values both languages need (the artifact's format marker and version, the
metadata file name, the geometry limits). Python reads it here; the C++ builds generate a
header from the same file, and ``tests/runtime/test_contract.py`` checks that every side agrees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

_RAW: dict[str, Any] = json.loads(resources.files("mlffd").joinpath("contract.json").read_text())


@dataclass(frozen=True)
class GeometryLimits:
    """Limits on the structures every engine accepts (docs/calculator.md, "Geometry limits").

    Attributes:
        max_abs_coordinate_A: largest |coordinate| (Å) before periodic wrapping; float64 keeps
            ~1e-8 Å of precision there.
        min_pair_distance_A: two atoms (or an atom and an image) closer than this are overlapping.
        max_neighbors_per_atom: most neighbours within the cutoff an atom may have (estimated from
            the density before any list is built, counted after).
        max_periodic_images: most periodic images of the cell a pair search may have to visit.
        max_edges: most edges (directed pairs) one structure's graph may hold.
    """

    max_abs_coordinate_A: float
    min_pair_distance_A: float
    max_neighbors_per_atom: int
    max_periodic_images: int
    max_edges: int


FORMAT: str = _RAW["artifact"]["format"]
FORMAT_VERSION: int = int(_RAW["artifact"]["format_version"])
METADATA_FILE: str = _RAW["artifact"]["metadata_file"]
REGISTRY_FILE: str = _RAW["artifact"]["registry_file"]
#: metadata field -> JSON type ("string", "integer", "number", "array", "object"); all required
METADATA_FIELDS: dict[str, str] = dict(_RAW["artifact"]["metadata_fields"])
#: the floating-point dtypes an artifact may declare
DTYPES: tuple[str, ...] = tuple(_RAW["artifact"]["dtypes"])
#: the keys of the dictionary every artifact's forward returns
OUTPUTS: tuple[str, ...] = tuple(_RAW["artifact"]["outputs"])
GEOMETRY = GeometryLimits(**_RAW["geometry"])


def as_dict() -> dict[str, Any]:
    """The contract as read from ``contract.json`` (a copy)."""
    return json.loads(json.dumps(_RAW))
