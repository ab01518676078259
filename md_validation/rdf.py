"""Partial radial distribution functions with MDAnalysis ``InterRDF`` and the RDF error of Fu et al.

Frames (ASE ``Atoms``) become an in-memory MDAnalysis ``Universe`` with the periodic box of each
frame. ``InterRDF`` uses the minimum-image convention, so it can only see up to half the
shortest cell width; when ``r_max`` is larger the frames are replicated (a periodic supercell has
the same g(r)) until it fits.

Normalisation: g_AB(r) = n_AB(r) / (N_A ρ_B 4πr² dr) with the periodic density ρ_B = N_B / V
(an atom's own periodic images count as partners), so an ideal gas of N atoms gives
(N - 1) / N and the integral of 4πr² ρ_B g(r) is the exact neighbour count.

Molecules in vacuum (no periodic direction, no box): there is no density to normalise by, so
the pair distribution is normalised per pair count instead: g_AB(r) = n_AB(r) / (n_frames
N_pairs dr), N_pairs = N_A N_B (N_A (N_A - 1) for A = A) ordered pairs, the probability density
of a pair distance (1/Å; its integral over all r is 1 when r_max spans the molecule), and the
coordination number is (partners per centre) x its integral up to r_cut. Distances are plain
Euclidean ones (no images); frames periodic in some directions only are refused.

RDF error (Fu et al., "Forces are not Enough", TMLR 2023): the mean absolute difference of two
g(r) on the same fixed grid, ``mean_r |g_A(r) - g_B(r)|``; ``rdf_error_integral`` is the same
difference integrated over r (Å), ``∫ |g_A - g_B| dr``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.cell import Cell

#: default grid: 0 .. 6 Å in 0.05 Å bins
DEFAULT_R_MAX = 6.0
DEFAULT_NBINS = 120
#: largest grid accepted: finer bins hold too few pairs to mean anything
MAX_NBINS = 100_000
#: memory an RDF may take (replicated frames held by MDAnalysis plus the pair search of one
#: frame); a larger r_max is refused before anything is allocated, with the largest that fits
MAX_RDF_MEMORY_BYTES = 2 * 2**30


@dataclass
class RDFResult:
    """g(r) per element pair on a common grid (bin centres ``r``, Å)."""

    r: np.ndarray
    g: dict[str, np.ndarray]
    r_max: float
    nbins: int
    n_frames: int
    #: number density N_B / V of the partners of each pair (1/Å^3), for coordination numbers
    #: (NaN for a molecule in vacuum)
    density: dict[str, float] = field(default_factory=dict)
    #: False: frames without a periodic cell, g normalised per pair count (module docstring)
    periodic: bool = True
    #: partners of each centre per pair (N_B, or N_B - 1 for A = A): coordination of a molecule
    partners: dict[str, float] = field(default_factory=dict)

    def coordination(self, pair: str, r_cut: float) -> float:
        """Mean number of B neighbours of an A atom within ``r_cut`` (integral of 4πr²ρ_B g(r);
        for a molecule in vacuum, partners per centre x the integral of g)."""
        if not self.periodic:
            dr = self.r[1] - self.r[0]
            return float(self.partners[pair] * np.sum(self.g[pair][self.r < r_cut]) * dr)
        return coordination_number(self.r, self.g[pair], self.density[pair], r_cut)

    def to_dict(self) -> dict:
        return {"r": self.r.tolist(), "g": {k: v.tolist() for k, v in self.g.items()}, "r_max": self.r_max,
                "nbins": self.nbins, "n_frames": self.n_frames, "density": self.density, "periodic": self.periodic,
                "partners": self.partners}


def check_same_atoms(frames: Sequence[Atoms], where: str) -> None:
    """ValueError naming ``where`` unless every frame holds the same elements in the same order."""
    numbers = frames[0].numbers
    for k, f in enumerate(frames):
        if len(f) != len(numbers) or (f.numbers != numbers).any():
            raise ValueError(f"{where}: frame {k} holds other atoms than frame 0 (all frames must hold the same atoms "
                             "in the same order)")


def pair_label(a: str, b: str) -> str:
    return f"{a}-{b}"


def element_pairs(symbols: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered element pairs in a stable order (``Si-Si``; ``Cu-Cu, Cu-O, O-O``)."""
    elements = sorted(set(symbols))
    return list(itertools.combinations_with_replacement(elements, 2))


def min_width(cell: np.ndarray) -> float:
    """Shortest perpendicular width of a cell (Å)."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return float(min(widths))


def replication_for(atoms: Atoms, r_max: float) -> tuple[int, int, int]:
    """Repeats per cell vector so that every perpendicular width exceeds ``2 r_max`` (periodic cells)."""
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    reps = []
    for i in range(3):
        width = volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
        reps.append(max(1, math.floor(2.0 * r_max / width) + 1) if atoms.pbc[i] else 1)
    return tuple(reps)  # type: ignore[return-value]


def rdf_memory_bytes(atoms: Atoms, r_max: float, n_frames: int) -> float:
    """Estimated peak memory (bytes) of :func:`partial_rdfs` on ``n_frames`` frames like ``atoms``.

    Counted: the replicated frames in the in-memory Universe (float32 positions) and one
    replicated ASE copy while it is built; the pair search of one frame, which MDAnalysis does by
    brute force (a float64 distance matrix, centres x partners) for small sets and with a grid
    otherwise (int64 pair indices and float64 distances of every pair within ``r_max``, counted
    twice for the copies made on the way).
    """
    reps = replication_for(atoms, r_max)
    n_cell = len(atoms)
    n_total = n_cell * int(np.prod(reps))
    volume = abs(float(np.linalg.det(atoms.cell.array))) * float(np.prod(reps))
    frames = n_frames * n_total * 3 * 4.0
    build = n_total * 200.0  # ASE Atoms arrays (positions, numbers, momenta, ...) of one replicated frame
    pairs = n_cell * (n_total / volume) * 4.0 / 3.0 * math.pi * r_max**3
    search = max(n_cell * n_total * 8.0 if n_cell * n_total < 1e8 else 0.0, pairs * 24.0 * 2)
    return frames + build + search


def max_r_max(atoms: Atoms, n_frames: int, budget: float = MAX_RDF_MEMORY_BYTES) -> float:
    """The largest r_max (Å, to 0.1 Å) whose :func:`rdf_memory_bytes` stays within ``budget``."""
    low, high = 0.0, max(min_width(atoms.cell.array), 1.0)
    while rdf_memory_bytes(atoms, high, n_frames) <= budget and high < 1e4:
        low, high = high, 2.0 * high
    while high - low > 0.05:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if rdf_memory_bytes(atoms, mid, n_frames) <= budget else (low, mid)
    return math.floor(low * 10.0) / 10.0


def check_rdf_grid(atoms: Atoms, r_max: float, nbins: int, n_frames: int = 1, source: str = "frames",
                   budget: float = MAX_RDF_MEMORY_BYTES) -> None:
    """ValueError, before anything is allocated, when ``r_max``/``nbins`` are not usable on
    ``n_frames`` frames like ``atoms``: not finite and positive, or needing more than ``budget``
    bytes (the message gives the estimate and the largest r_max that fits)."""
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float, np.floating)) or not math.isfinite(r_max) or r_max <= 0:
        raise ValueError(f"r_max {r_max!r}: expected a finite distance > 0 Å")
    if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or not 1 <= nbins <= MAX_NBINS:
        raise ValueError(f"nbins {nbins!r}: expected an integer from 1 to {MAX_NBINS}")
    if not atoms.pbc.any():
        return  # a molecule in vacuum: N^2 distances per frame, nothing replicated
    if not atoms.pbc.all() or atoms.cell.rank != 3:
        raise ValueError(f"{source}: RDFs need fully periodic frames with a 3-D cell, or frames periodic in no direction "
                         "(molecules in vacuum)")
    need = rdf_memory_bytes(atoms, r_max, n_frames)
    if need > budget:
        reps = replication_for(atoms, r_max)
        raise ValueError(
            f"r_max {r_max:g} Å is too large for {source}: the {len(atoms)}-atom cell (smallest width "
            f"{min_width(atoms.cell.array):.3g} Å) would be replicated {reps[0]}x{reps[1]}x{reps[2]} over {n_frames} frame(s), "
            f"about {need / 2**30:.3g} GiB (limit {budget / 2**30:.3g} GiB); use r_max <= {max_r_max(atoms, n_frames, budget):g} Å"
        )


def standard_frame(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Wrapped positions in MDAnalysis' box convention (a along x, b in the xy plane) and the cellpar."""
    cellpar = atoms.cell.cellpar()
    new_cell = Cell.new(cellpar)
    scaled = atoms.cell.scaled_positions(atoms.positions) % 1.0
    return scaled @ new_cell.array, cellpar


def universe_from_frames(frames: Sequence[Atoms], r_max: float | None = None):
    """An in-memory MDAnalysis ``Universe`` (names/types/elements = chemical symbols) of ``frames``.

    All frames must hold the same atoms in the same order. With ``r_max``, frames are replicated
    so that the minimum-image convention reaches ``r_max``.
    """
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    if not frames:
        raise ValueError("no frames to build an MDAnalysis Universe from")
    first = frames[0]
    if not first.pbc.all() or first.cell.rank != 3:
        raise ValueError("RDFs here need fully periodic frames with a 3-D cell")
    reps = replication_for(first, r_max) if r_max else (1, 1, 1)
    symbols = list(first.get_chemical_symbols()) * int(np.prod(reps))
    check_same_atoms(frames, "RDF")
    coords, dims = [], []
    for atoms in frames:
        if atoms.constraints:
            atoms = atoms.copy()
            atoms.set_constraint()
        big = atoms * reps if reps != (1, 1, 1) else atoms
        pos, cellpar = standard_frame(big)
        coords.append(pos)
        dims.append(cellpar)
    u = mda.Universe.empty(len(symbols), trajectory=False)
    u.add_TopologyAttr("names", symbols)
    u.add_TopologyAttr("types", symbols)
    u.add_TopologyAttr("elements", symbols)
    u.load_new(np.asarray(coords, dtype=np.float32), format=MemoryReader, dimensions=np.asarray(dims, dtype=np.float32))
    return u


def partial_rdfs(
    frames: Sequence[Atoms],
    r_max: float = DEFAULT_R_MAX,
    nbins: int = DEFAULT_NBINS,
    pairs: Sequence[tuple[str, str]] | None = None,
    progress: bool = False,
) -> RDFResult:
    """g(r) of every element pair (and ``all`` when there are several elements) with ``InterRDF``.

    Pairs are ordered: ``"A-B"`` is g(r) of B atoms around an A atom, and its coordination the
    number of B neighbours of an A atom; for A ≠ B both ``"A-B"`` and ``"B-A"`` are given (the
    same g(r), the two coordinations).

    ``InterRDF`` counts the pairs (centres in the original cell, partners in the replicated box);
    the normalisation is the periodic one of the module docstring.

    ``pairs`` picks pairs of element symbols; ``("*", "*")`` is the total g(r), labelled ``all``.
    """
    from MDAnalysis.analysis.rdf import InterRDF

    frames = list(frames)
    if not frames:
        raise ValueError("no frames to compute an RDF from")
    check_rdf_grid(frames[0], r_max, nbins, len(frames))
    if not frames[0].pbc.any():
        return vacuum_rdfs(frames, r_max, nbins, pairs)
    u = universe_from_frames(frames, r_max)
    symbols = frames[0].get_chemical_symbols()
    pairs = list(pairs) if pairs is not None else element_pairs(symbols)
    todo: list[tuple[str, str, str]] = [("all" if a == b == "*" else pair_label(a, b), a, b) for a, b in pairs]
    if len(set(symbols)) > 1 and pairs == element_pairs(symbols):
        todo.append(("all", "*", "*"))
    volume = float(np.mean([abs(f.get_volume()) for f in frames]))
    n_cell = len(symbols)
    original = u.atoms[:n_cell]  # ``atoms * reps`` keeps the original cell first
    g: dict[str, np.ndarray] = {}
    density: dict[str, float] = {}
    r = None
    for label, a, b in todo:
        # centres from the original cell, partners from the whole (replicated) box: every centre
        # sees all its neighbours out to r_max, at 1/n_rep of the cost of all-against-all
        ga = original if a == "*" else original.select_atoms(f"type {a}")
        gb = u.atoms if b == "*" else u.select_atoms(f"type {b}")
        if len(ga) == 0 or len(gb) == 0:
            raise ValueError(f"pair {label}: no atoms of that element in the frames")
        rdf = InterRDF(ga, gb, nbins=nbins, range=(0.0, r_max))
        rdf.run(verbose=progress)
        edges = np.asarray(rdf.results.edges, dtype=float)
        r = np.asarray(rdf.results.bins, dtype=float)
        count = np.asarray(rdf.results.count, dtype=float).copy()
        if a == b:
            count[0] -= len(ga) * len(frames)  # each centre's zero distance to itself
        n_b = sum(1 for s in symbols if b == "*" or s == b)
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        g[label] = count / (len(frames) * len(ga) * (n_b / volume) * shell)
        density[label] = n_b / volume
        if a != b and "*" not in (a, b):
            # g_AB = g_BA (each pair counted once from each side); only the partner density
            # differs, so "B-A" gives the A neighbours of a B atom (the other coordination)
            n_a = sum(1 for s_ in symbols if s_ == a)
            g[pair_label(b, a)] = g[label]
            density[pair_label(b, a)] = n_a / volume
    assert r is not None
    return RDFResult(r=r, g=g, r_max=r_max, nbins=nbins, n_frames=len(frames), density=density)


def vacuum_rdfs(frames: Sequence[Atoms], r_max: float = DEFAULT_R_MAX, nbins: int = DEFAULT_NBINS,
                pairs: Sequence[tuple[str, str]] | None = None) -> RDFResult:
    """Pair distributions of frames with no periodic direction (a molecule or cluster in vacuum),
    normalised per pair count (module docstring); the pairs and labels of :func:`partial_rdfs`."""
    frames = list(frames)
    first = frames[0]
    symbols = np.asarray(first.get_chemical_symbols())
    if any(atoms.pbc.any() for atoms in frames):
        raise ValueError("frames mix periodic and non-periodic structures")
    check_same_atoms(frames, "RDF")
    if len(first) < 2:
        raise ValueError("a pair distribution needs at least two atoms")
    default = pairs is None
    pairs = list(pairs) if pairs is not None else element_pairs(list(symbols))
    todo = [("all" if a == b == "*" else pair_label(a, b), a, b) for a, b in pairs]
    if len(set(symbols)) > 1 and pairs == element_pairs(list(symbols)):
        todo.append(("all", "*", "*"))
    if default:  # an element with one atom (one N, one Cl) has no pair of its own element
        todo = [t for t in todo if not (t[1] == t[2] != "*" and int(np.sum(symbols == t[1])) < 2)]
    edges = np.linspace(0.0, r_max, nbins + 1)
    r = 0.5 * (edges[1:] + edges[:-1])
    dr = edges[1] - edges[0]
    dist = [np.linalg.norm(f.positions[:, None, :] - f.positions[None, :, :], axis=-1) for f in frames]
    g: dict[str, np.ndarray] = {}
    partners: dict[str, float] = {}
    density: dict[str, float] = {}
    for label, a, b in todo:
        ia = np.ones(len(symbols), bool) if a == "*" else symbols == a
        ib = np.ones(len(symbols), bool) if b == "*" else symbols == b
        if not ia.any() or not ib.any():
            raise ValueError(f"pair {label}: no atoms of that element in the frames")
        mask = ia[:, None] & ib[None, :]
        np.fill_diagonal(mask, False)
        n_pairs = int(mask.sum())
        if n_pairs == 0:
            raise ValueError(f"pair {label}: a single atom has no partner of its own element")
        count = sum(np.histogram(d[mask], bins=edges)[0] for d in dist).astype(float)
        g[label] = count / (len(frames) * n_pairs * dr)
        partners[label] = n_pairs / int(ia.sum())
        density[label] = math.nan
        if a != b and "*" not in (a, b):
            g[pair_label(b, a)] = g[label]
            partners[pair_label(b, a)] = n_pairs / int(ib.sum())
            density[pair_label(b, a)] = math.nan
    return RDFResult(r=r, g=g, r_max=r_max, nbins=nbins, n_frames=len(frames), density=density, periodic=False,
                     partners=partners)


def coordination_number(r: np.ndarray, g: np.ndarray, density: float, r_cut: float) -> float:
    """∫_0^r_cut 4π r² ρ g(r) dr on the bin grid (bins whose centre lies below ``r_cut``)."""
    dr = r[1] - r[0]
    mask = r < r_cut
    return float(np.sum(4.0 * np.pi * r[mask] ** 2 * density * g[mask]) * dr)


def smooth(r: np.ndarray, g: np.ndarray, sigma: float = 0.1) -> np.ndarray:
    """g(r) convolved with a normalised Gaussian of width ``sigma`` (Å); for finding extrema, not for errors."""
    dr = float(r[1] - r[0]) if len(r) > 1 else 1.0
    half = max(1, int(round(3 * sigma / dr)))
    x = np.arange(-half, half + 1) * dr
    w = np.exp(-0.5 * (x / sigma) ** 2)
    padded = np.pad(np.asarray(g, float), half, mode="edge")
    return np.convolve(padded, w / w.sum(), mode="valid")


def first_peak(r: np.ndarray, g: np.ndarray, threshold: float = 0.5, sigma: float = 0.0) -> tuple[float, float]:
    """Position and height of the first local maximum of g(r) above ``threshold`` (optionally smoothed)."""
    gs = smooth(r, g, sigma) if sigma > 0 else np.asarray(g, float)
    above = np.nonzero(gs > threshold)[0]
    if not len(above):
        return float("nan"), float("nan")
    i = above[0]
    while i + 1 < len(gs) and gs[i + 1] >= gs[i]:
        i += 1
    return float(r[i]), float(g[i])


def first_minimum(r: np.ndarray, g: np.ndarray, threshold: float = 0.5, sigma: float = 0.1) -> float:
    """Position of the first minimum after the first peak of the smoothed g(r) (a first-shell cutoff).

    On a flat zero stretch (a cold crystal) it returns the end of the stretch.
    """
    gs = smooth(r, g, sigma) if sigma > 0 else np.asarray(g, float)
    above = np.nonzero(gs > threshold)[0]
    if not len(above):
        return float("nan")
    i = above[0]
    while i + 1 < len(gs) and gs[i + 1] >= gs[i]:
        i += 1
    while i + 1 < len(gs) and gs[i + 1] <= gs[i] + 1e-12:
        i += 1
    return float(r[i])


def rdf_error(g_a: np.ndarray, g_b: np.ndarray, r: np.ndarray | None = None) -> dict[str, float]:
    """Fu et al.'s RDF error: ``mean`` |g_A - g_B| on the grid and its ``integral`` over r (Å)."""
    g_a, g_b = np.asarray(g_a, float), np.asarray(g_b, float)
    if g_a.shape != g_b.shape:
        raise ValueError(f"RDFs on different grids ({g_a.shape} vs {g_b.shape}); use the same r_max and nbins")
    diff = np.abs(g_a - g_b)
    out = {"mean": float(np.mean(diff))}
    if r is not None and len(r) > 1:
        out["integral"] = float(np.sum(diff) * (r[1] - r[0]))
    return out


def compare_rdfs(a: RDFResult, b: RDFResult) -> dict[str, dict[str, float]]:
    """RDF error for every pair both results hold; ``a`` and ``b`` must share their grid."""
    if a.nbins != b.nbins or not math.isclose(a.r_max, b.r_max):
        raise ValueError("RDFs on different grids; use the same r_max and nbins")
    return {pair: rdf_error(a.g[pair], b.g[pair], a.r) for pair in a.g if pair in b.g}


def rdf_summary(res: RDFResult) -> dict[str, dict[str, float]]:
    """First peak (position, height), first minimum and coordination number per pair."""
    out = {}
    for pair, g in res.g.items():
        peak_r, peak_g = first_peak(res.r, g, sigma=0.05)
        r_min = first_minimum(res.r, g)
        cn = res.coordination(pair, r_min) if np.isfinite(r_min) else float("nan")
        out[pair] = {"first_peak_A": peak_r, "first_peak_height": peak_g, "first_minimum_A": r_min, "coordination": cn}
    return out


def read_trajectory(path: str | Path, start: int = 0, stride: int = 1) -> list[Atoms]:
    """Frames ``start::stride`` of any ASE-readable trajectory; ValueError naming the file when
    it cannot be read, is empty or holds no frame from ``start`` on."""
    from md_validation.inputs import read_any

    if start < 0 or stride < 1:
        raise ValueError(f"{path}: start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
    frames = read_any(path, index=f"{start}::{stride}")
    if not frames:
        raise ValueError(f"{path}: no frames from start={start} with stride={stride}")
    return frames


def rdf_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    r_max: float = DEFAULT_R_MAX,
    nbins: int = DEFAULT_NBINS,
    start: int = 0,
    stride: int = 1,
    progress: bool = False,
) -> tuple[dict, dict[str, Path]]:
    """Partial RDFs of each trajectory and the RDF error of each against the first; writes
    ``rdf.json``, ``rdf.png`` and ``rdf.html`` into ``out_dir``."""
    from md_validation import plots, report

    names: list[str] = []
    results: dict[str, RDFResult] = {}
    # every file is read and checked before the first RDF is computed
    loaded: list[tuple[str, list[Atoms]]] = []
    for p in paths:
        name = Path(p).name
        while name in [n for n, _ in loaded]:
            name += "'"
        frames = read_trajectory(p, start, stride)
        check_rdf_grid(frames[0], r_max, nbins, len(frames), source=str(p))
        loaded.append((name, frames))
    for name, frames in loaded:
        results[name] = partial_rdfs(frames, r_max, nbins, progress=progress)
        names.append(name)
    ref = names[0]
    errors = {n: compare_rdfs(results[ref], results[n]) for n in names[1:]}
    metrics = {"reference": ref, "files": [str(p) for p in paths], "r_max": r_max, "nbins": nbins,
               "n_frames": {n: r.n_frames for n, r in results.items()},
               "rdf": {n: rdf_summary(r) for n, r in results.items()}, "rdf_error": errors,
               "g": {n: r.to_dict() for n, r in results.items()}}
    out = Path(out_dir)
    fig_errors = errors[names[1]] if len(names) == 2 else None
    figures = {"rdf": report.figure_png(plots.rdf_plot(results, fig_errors))}
    files = report.write_figures(figures, out)
    files["json"] = report.write_json(metrics, out / "rdf.json")
    flat_err = {f"{n} vs {ref}": e for n, e in errors.items()}
    sections = [report.Section("Radial distribution functions", metrics={"rdf": metrics["rdf"], "rdf_error": flat_err}, figures=figures)]
    files["html"] = report.write_html("md_validation: RDF", sections, out / "rdf.html")
    return metrics, files
