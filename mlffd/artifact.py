"""Export and load ``NAME.mlffd.pt`` artifacts (TorchScript + JSON metadata).

The format is documented in ``docs/artifact.md``. The ASE calculator and the LAMMPS plugin
read only this file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from ase.data import atomic_masses, atomic_numbers

from mlffd.contract import FORMAT, FORMAT_VERSION, METADATA_FIELDS, METADATA_FILE  # one definition, shared with C++

_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (float, int), "array": (list,),
                                            "object": (dict,)}

#: field -> accepted Python types (from the contract's JSON types)
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {field: _JSON_TYPES[kind] for field, kind in METADATA_FIELDS.items()}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ArtifactError(ValueError):
    """An artifact file is missing, corrupt, of the wrong version or incomplete."""


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact: the scripted module and its metadata."""

    path: Path
    module: torch.jit.ScriptModule
    metadata: dict[str, Any]

    @property
    def elements(self) -> list[str]:
        return list(self.metadata["elements"])

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    @property
    def interaction_range(self) -> float:
        return float(self.metadata["interaction_range"])

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.metadata["dtype"]]


@contextlib.contextmanager
def _quiet_jit():
    """TorchScript is deprecated upstream but is our C++-loadable format: hide the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*deprecated")
        yield


def _mlffd_version() -> str:
    from mlffd import __version__

    return __version__


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (only the two supported dtypes)."""
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"unsupported dtype {dtype}; expected float32 or float64")


#: metadata fields that :func:`build_metadata` derives itself (the rest are the caller's)
GENERATED_METADATA = frozenset(
    {"format", "format_version", "mlffd_version", "torch_version", "elements", "cutoff", "num_interactions",
     "interaction_range", "dtype", "num_parameters", "model", "created", "kernels"}
)


def build_metadata(
    *,
    elements: list[str],
    cutoff: float,
    num_interactions: int,
    dtype: torch.dtype,
    num_parameters: int,
    model: Mapping[str, Any],
    teacher: str = "none",
    dataset_sha256: str = "",
    metrics: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a complete metadata dictionary for :func:`export`."""
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlffd_version": _mlffd_version(),
        "torch_version": torch.__version__,
        "elements": list(elements),
        # standard atomic masses (amu) of the elements: LAMMPS checks a data file's type masses against them
        "masses": [float(atomic_masses[atomic_numbers[e]]) for e in elements],
        "cutoff": float(cutoff),
        "num_interactions": int(num_interactions),
        "interaction_range": float(num_interactions * cutoff),
        "dtype": dtype_name(dtype),
        "num_parameters": int(num_parameters),
        "model": dict(model),
        "teacher": teacher,
        "dataset_sha256": dataset_sha256,
        "metrics": dict(metrics or {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


def validate_metadata(meta: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ArtifactError` (naming ``source``) unless ``meta`` is a valid v1 record."""
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{source}: not an mlffd artifact (metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{source}: metadata 'format_version' is {version!r}, expected an integer")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format_version {version} is newer than this mlffd supports ({FORMAT_VERSION}); "
            "upgrade mlffd to load it"
        )
    if version < 1:
        raise ArtifactError(f"{source}: format_version {version} is invalid (expected 1..{FORMAT_VERSION})")
    for field, types in REQUIRED_FIELDS.items():
        if field not in meta:
            raise ArtifactError(f"{source}: metadata lacks the field {field!r}")
        value = meta[field]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ArtifactError(f"{source}: metadata field {field!r} is {value!r}, expected {names}")
    if not meta["elements"] or not all(isinstance(e, str) for e in meta["elements"]):
        raise ArtifactError(f"{source}: metadata 'elements' must be a non-empty list of symbols, got {meta['elements']!r}")
    masses = meta.get("masses")
    if masses is not None and (not isinstance(masses, list) or len(masses) != len(meta["elements"])
                               or not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in masses)):
        raise ArtifactError(f"{source}: metadata 'masses' is {masses!r}, expected one positive number (amu) per element")
    if meta["dtype"] not in _DTYPES:
        raise ArtifactError(f"{source}: metadata 'dtype' is {meta['dtype']!r}, expected one of {sorted(_DTYPES)}")
    if not meta["cutoff"] > 0:
        raise ArtifactError(f"{source}: metadata 'cutoff' is {meta['cutoff']!r}, expected a positive number (Å)")


def export(module: torch.nn.Module, path: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Script ``module`` (unless already scripted) and write it with ``metadata`` to ``path``.

    ``metadata`` is checked with :func:`validate_metadata` before anything is written; the file
    is written to a temporary name and moved into place, so a failed export leaves no half file.
    """
    path = Path(path)
    validate_metadata(metadata, str(path))
    with _quiet_jit():
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        scripted = scripted.eval()
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(dict(metadata), sort_keys=True)})
    tmp.replace(path)
    return path


def with_metadata(src: str | Path, dst: str | Path, **changes: Any) -> Path:
    """Write ``src`` to ``dst`` with user metadata fields replaced by ``changes``: the TorchScript
    module is saved as loaded (its code and weights untouched, so its numbers are the same), the
    fields export generates cannot be changed, and the result is validated before it is written."""
    generated = sorted(set(changes) & GENERATED_METADATA)
    if generated:
        raise ValueError(f"{', '.join(generated)}: generated by export, not replaceable")
    artifact = load(src)  # dst may be src: the module is in memory and export writes through a temporary file
    return export(artifact.module, dst, {**artifact.metadata, **changes})


def read_metadata(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Read and validate only the metadata of an artifact (no TorchScript load); with ``verify``,
    first check every member of the archive against its CRC-32 (a damaged file is an error
    naming the member, not a model that returns NaN)."""
    path = Path(path)
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if verify:
                damaged = zf.testzip()
                if damaged is not None:
                    raise ArtifactError(f"{path}: damaged file: archive member {damaged} fails its CRC-32 check")
            names = [n for n in zf.namelist() if n.endswith("/extra/" + METADATA_FILE)]
            if not names:
                raise ArtifactError(f"{path}: a TorchScript file without mlffd metadata ({METADATA_FILE}); not an mlffd artifact")
            raw = zf.read(names[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: corrupt or not a TorchScript archive ({exc})") from exc
    return _parse_metadata(raw, path)


def check_module(module: torch.jit.ScriptModule, meta: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ArtifactError` (naming ``source`` and the field) unless the metadata
    describes ``module``: its ``cutoff`` (required), ``num_elements`` (number of elements),
    the length of ``interactions`` (``num_interactions``) where the module has them, and the
    dtype of its floating-point parameters and buffers. The LAMMPS plugin applies the same rules."""
    if not hasattr(module, "cutoff"):
        raise ArtifactError(f"{source}: the TorchScript module has no 'cutoff' attribute: not an mlffd model")
    found = float(module.cutoff)
    if abs(found - float(meta["cutoff"])) > 1e-9 * max(1.0, abs(found)):
        raise ArtifactError(f"{source}: metadata 'cutoff' is {meta['cutoff']} but the module's cutoff is {found}")
    if hasattr(module, "num_elements") and int(module.num_elements) != len(meta["elements"]):
        raise ArtifactError(f"{source}: metadata 'elements' lists {len(meta['elements'])} element(s) "
                            f"but the module has {int(module.num_elements)}")
    if hasattr(module, "interactions"):
        layers = len(list(module.interactions.children()))
        if layers != meta["num_interactions"]:
            raise ArtifactError(f"{source}: metadata 'num_interactions' is {meta['num_interactions']} "
                                f"but the module has {layers} interaction layers")
    dtypes = {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}
    if dtypes and dtypes != {_DTYPES[meta["dtype"]]}:
        names = ", ".join(sorted(dtype_name(d) if d in _DTYPES.values() else str(d) for d in dtypes))
        raise ArtifactError(f"{source}: metadata 'dtype' is {meta['dtype']!r} but the module's parameters are {names}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact file")
    if not path.is_file():
        raise ArtifactError(f"{path}: not a file")


def _parse_metadata(raw: bytes | str, path: Path) -> dict[str, Any]:
    if not raw:
        raise ArtifactError(f"{path}: a TorchScript file without mlffd metadata ({METADATA_FILE}); not an mlffd artifact")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: metadata {METADATA_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: metadata {METADATA_FILE} is not a JSON object")
    validate_metadata(meta, str(path))
    return meta


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a clear error when it names a GPU this torch cannot use."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {str(device)!r} requested, but torch {torch.__version__} ({build}) sees no CUDA GPU; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {str(device)!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return dev


def require_kernels(meta: Mapping[str, Any], source: str) -> None:
    """Load the fused CPU kernels when ``meta`` says the artifact calls them (``"kernels": N``);
    :class:`ArtifactError` naming ``source`` when they are missing or older than needed."""
    needed = meta.get("kernels")
    if needed is None:
        return
    from mlffd import kernels

    if isinstance(needed, bool) or not isinstance(needed, int) or needed < 1:
        raise ArtifactError(f"{source}: metadata 'kernels' is {needed!r}, expected a positive integer (operator-set version)")
    if needed > kernels.VERSION:
        raise ArtifactError(
            f"{source}: needs mlffd's fused kernels operator set {needed}, this mlffd has {kernels.VERSION}; upgrade mlffd"
        )
    try:
        kernels.load()
    except kernels.KernelsMissingError as exc:
        raise ArtifactError(f"{source}: exported with mlffd's fused CPU kernels (operator set {needed}), but {exc}") from exc


def load(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load an artifact, validating its metadata; errors name the file and the problem."""
    path = Path(path)
    _check_file(path)
    check_device(device)
    meta = read_metadata(path, verify=True)  # validated before TorchScript: it says which kernels to load first
    require_kernels(meta, str(path))
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for bad archives
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        if "mlffd_kernels::" in str(exc):  # compiled against another version of an operator's schema
            raise ArtifactError(f"{path}: its code calls mlffd's fused kernels with a signature the installed mlffd-kernels "
                                f"does not have ({next((ln for ln in lines if 'mlffd_kernels::' in ln), '')}); "
                                f"re-export it with this mlffd or install the kernels it was exported with") from exc
        raise ArtifactError(f"{path}: corrupt or not a TorchScript archive ({type(exc).__name__}: {lines[0] if lines else ''})") from exc
    check_module(module, meta, str(path))
    module.eval()
    for p in module.parameters():  # evaluation only (artifacts are exported so): no weight gradients in backward passes
        p.requires_grad_(False)
    return Artifact(path=path, module=module, metadata=meta)


#: centre atoms per evaluation block on a GPU: large blocks keep the device busy (one kernel per
#: layer over many atoms) while bounding memory (docs/performance.md)
CUDA_BLOCK_ATOMS = 65536

#: on the CPU, graphs of up to this many edges are evaluated whole, not in blocks: one graph
#: skips the per-block fixed work and the repeated edge geometry, which pays while the graph
#: still fits the caches (up to ~8,192 silicon atoms at a 5 A cutoff) at a bounded memory cost;
#: beyond, blocks are as fast and use less memory (docs/performance.md). Edges, not atoms,
#: because memory and cache use follow the edges: denser systems switch to blocks at fewer atoms.
ONE_GRAPH_EDGES = 262144


def block_atoms(metadata: Mapping[str, Any], device: str | torch.device = "cpu", threads: int | None = None,
                n_atoms: int | None = None, n_edges: int | None = None) -> int | None:
    """Centre atoms per block of the blocked (bounded-memory) evaluation on ``device``, for a
    graph of ``n_atoms`` nodes and ``n_edges`` edges when given.

    CPU: the artifact's ``chunk_atoms`` PER torch thread (2 threads get blocks of 1,024 for a
    model exported with 512: each block carries a fixed cost, so larger blocks spread it over
    more atoms, for a little more peak memory; docs/performance.md), and ``n_atoms`` itself
    (one graph) for graphs of up to
    :data:`ONE_GRAPH_EDGES` edges. CUDA: :data:`CUDA_BLOCK_ATOMS`. ``None`` for artifacts
    without blocked evaluation (e.g. the Stillinger-Weber reference).
    """
    per_thread = metadata.get("model", {}).get("chunk_atoms")
    if per_thread is None:
        return None
    if torch.device(device).type == "cuda":
        return max(int(per_thread), CUDA_BLOCK_ATOMS)
    block = int(per_thread) * max(1, torch.get_num_threads() if threads is None else int(threads))
    if n_atoms is not None and n_edges is not None and n_edges <= ONE_GRAPH_EDGES:
        return max(block, int(n_atoms))
    return block


def configure_blocks(module: torch.jit.ScriptModule, metadata: Mapping[str, Any], device: str | torch.device = "cpu",
                     atoms: int | None = None, n_atoms: int | None = None, n_edges: int | None = None) -> int | None:
    """Set ``module.chunk_atoms`` to ``atoms`` (or :func:`block_atoms` for ``device`` and a graph
    of ``n_atoms`` nodes and ``n_edges`` edges); returns it.

    No-op (``None``) for modules without blocked evaluation.
    """
    if not hasattr(module, "chunk_atoms"):
        return None
    wanted = int(atoms) if atoms else block_atoms(metadata, device, n_atoms=n_atoms, n_edges=n_edges)
    if wanted is None:
        return None
    if wanted < 1:
        raise ValueError(f"block size must be >= 1 centre atom, got {wanted}")
    if module.chunk_atoms != wanted:
        module.chunk_atoms = wanted
    return wanted
