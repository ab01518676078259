"""``mlffd-validate``: thin click commands; each parses options and calls one library function."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import click

from mlffd.cli.options import (
    DEVICE,
    FINITE,
    INPUT_FILE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OUTPUT_DIR,
    POSITIVE,
    POSITIVE_INT,
    OneLineErrorGroup,
    debug_option,
)
from mlffd.registry import DEFAULT_MODEL

from md_validation.units import format_time, parse_time, steps_for


class TimeType(click.ParamType):
    """A duration such as ``50ps``, ``500fs`` or ``1fs`` (bare numbers are fs) -> femtoseconds.

    ``positive`` refuses 0 (a timestep, a window); every time must be finite.
    """

    name = "time"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        try:
            fs = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not math.isfinite(fs) or fs < 0 or (self.positive and fs == 0):
            self.fail(f"{value!r} is not a {'positive' if self.positive else 'non-negative'} finite time", param, ctx)
        return fs


TIME = TimeType()
POSITIVE_TIME = TimeType(positive=True)
ENGINE = click.Choice(["ase", "lammps"], case_sensitive=False)
#: temperatures in K: finite and >= 0
TEMPERATURE = NON_NEGATIVE
#: RDF bins: enough for any grid a figure can show, bounded so the histograms stay small
NBINS = click.IntRange(1, 100_000)


class FramesFile(click.ParamType):
    """An existing file, optionally with an ASE frame selection: ``FILE`` or ``FILE@SELECTION``."""

    name = "file[@selection]"

    def convert(self, value, param, ctx):
        from md_validation.inputs import split_selection

        path, _ = split_selection(value)
        p = Path(path)
        if not p.exists():
            self.fail(f"{path!r} does not exist", param, ctx)
        if not p.is_file():
            self.fail(f"{path!r} is not a file", param, ctx)
        return str(value)


FRAMES_FILE = FramesFile()


def _num(value: float, spec: str = ".4g") -> str:
    """``value`` formatted, or ``n/a`` when there was nothing to measure it on (NaN is never printed)."""
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _check_steps(option: str, time_fs: float, dt_fs: float, interval: int, what: str) -> None:
    """A run of ``time_fs`` must hold at least one recorded interval (two frames)."""
    steps = steps_for(time_fs, dt_fs)
    if steps < interval:
        raise click.BadParameter(
            f"{format_time(time_fs)} is {steps} step(s) at dt {format_time(dt_fs)}; {what} needs at least "
            f"--interval {interval} steps ({format_time(interval * dt_fs)})", param_hint=option)


def _student_engine(model: str, engine: str, device: str):
    """(engine, cache id, label) for the student model on ``engine``."""
    from md_validation.inputs import calculator_id, calculator_label, load_student, model_id
    from md_validation.md import AseEngine, EngineUnavailable, get_engine

    try:
        if engine.lower() == "lammps":
            return get_engine("lammps", model=model), model_id(model), str(model)
        calc = load_student(model, device=device)
    except EngineUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"cannot load model {model!r}: {exc}") from exc
    return AseEngine(calc), calculator_id(calc), calculator_label(calc, str(model))


def _teacher(spec: str, device: str):
    from md_validation.inputs import load_teacher

    try:
        return load_teacher(spec, device=device)
    except (ValueError, ImportError, FileNotFoundError) as exc:
        raise click.ClickException(f"cannot load teacher {spec!r}: {exc}") from exc


def _structure(path: str | None, model: str):
    from md_validation.inputs import default_structure, load_structure

    if path is None:  # the model's own structure: its errors are the model's
        try:
            return default_structure(model)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable model, or no structure to default to
            what = "" if "give one with --structure" in str(exc) else "cannot load model: "
            raise click.ClickException(f"{what}{' '.join(str(exc).split())}") from exc
    try:
        return load_structure(path)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes a clean CLI message
        raise click.ClickException(f"cannot read structure: {exc}") from exc


#: below this many atoms intra-op threading costs more than it gains (and a busy machine makes
#: several threads per process far slower): the default is one torch thread
SMALL_SYSTEM_ATOMS = 1000


@contextlib.contextmanager
def _threads(n_atoms: int):
    """Apply ``--threads`` (default: 1 thread for small systems, else torch's own) for the block,
    then restore the previous setting (no lasting change when called in-process)."""
    ctx = click.get_current_context()
    threads = (ctx.find_root().params or {}).get("threads")
    if threads is None and n_atoms < SMALL_SYSTEM_ATOMS:
        threads = 1
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def output_options(name: str, device: bool = True, device_help: str = "cpu, cuda or cuda:N"):
    """The options every command ends with: ``--device`` (unless not ``device``), ``--out``
    (default ``validation-NAME``) and ``--quiet``."""

    def decorate(command):
        command = click.option("--quiet", is_flag=True, help="no progress bars")(command)
        command = click.option("--out", "out_dir", type=OUTPUT_DIR, default=f"validation-{name}", show_default=True)(command)
        if device:
            command = click.option("--device", type=DEVICE, default="cpu", show_default=True, help=device_help)(command)
        return command

    return decorate


@click.group(cls=OneLineErrorGroup)
@click.version_option(package_name="mlffd")
@click.option("--threads", type=POSITIVE_INT, default=None,
              help=f"torch CPU threads; default: 1 below {SMALL_SYSTEM_ATOMS} atoms (fastest for small cells, "
                   "above all on a busy machine), else torch's default")
@debug_option
def cli(threads: int | None) -> None:
    """Validate a student potential in MD: NVE drift, force parity, RDFs and teacher-vs-student MD."""


@cli.command("nve")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="shipped model name or artifact path")
@click.option("--structure", type=INPUT_FILE, help="start structure (ASE-readable); default: the structure the model records (a frame of its training data, >= 64 atoms), else its element's reference crystal")
@click.option("--temperature", type=TEMPERATURE, default=1000.0, show_default=True, help="K")
@click.option("--time", "time_fs", type=POSITIVE_TIME, default="2ps", show_default=True, help="NVE length")
@click.option("--thermalise", "thermalise_fs", type=TIME, default="0.5ps", show_default=True, help="Langevin length before NVE")
@click.option("--dt", "dt_fs", type=POSITIVE_TIME, default="1fs", show_default=True)
@click.option("--engine", type=ENGINE, default="ase", show_default=True)
@click.option("--threshold", type=NON_NEGATIVE, default=1.0, show_default=True, help="max |drift| in meV/atom/ps to pass")
@click.option("--max-deviation", type=NON_NEGATIVE, default=None, help="also fail when max |E(t)-E(0)|/N exceeds this (meV/atom)")
@click.option("--interval", type=POSITIVE_INT, default=10, show_default=True, help="record a frame every N steps")
@click.option("--friction", type=NON_NEGATIVE, default=0.01, show_default=True, help="Langevin friction (1/fs)")
@click.option("--seed", type=NON_NEGATIVE_INT, default=0, show_default=True)
@output_options("nve")
def nve_cmd(model, structure, temperature, time_fs, thermalise_fs, dt_fs, engine, threshold, max_deviation,
            interval, friction, seed, device, out_dir, quiet) -> None:
    """Thermalise (Langevin), run NVE (velocity Verlet) and check energy conservation.

    Exits with status 1 when the drift exceeds --threshold (or the run breaks down).
    """
    from md_validation.nve import NVESettings, validate_nve, write_nve_report

    _check_steps("--time", time_fs, dt_fs, interval, "an NVE drift")
    settings = NVESettings(temperature_K=temperature, time_fs=time_fs, thermalise_fs=thermalise_fs, dt_fs=dt_fs,
                           interval=interval, friction_per_fs=friction, seed=seed, threshold=threshold,
                           max_deviation=max_deviation)
    atoms = _structure(structure, model)
    eng, cid, _ = _student_engine(model, engine, device)
    try:
        with _threads(len(atoms)):
            result = validate_nve(atoms, eng, cid, settings, out_dir, progress=not quiet)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    files = write_nve_report(result, out_dir)
    m = result.metrics
    click.echo(f"{atoms.get_chemical_formula()} ({len(atoms)} atoms), {temperature:g} K, NVE {format_time(time_fs)} at dt {format_time(dt_fs)}, engine {eng.name}")
    for key, unit in (("drift_meV_per_atom_per_ps", "meV/atom/ps"), ("fluctuation_meV_per_atom", "meV/atom"),
                      ("max_deviation_meV_per_atom", "meV/atom"), ("mean_temperature_K", "K")):
        if key in m:
            click.echo(f"  {key:30s} {_num(m[key], ' .4g')} {unit}")
    click.echo(f"  speed {_num(m['speed']['s_per_step'])} s/step, {_num(m['speed']['us_per_atom_step'])} µs/atom/step")
    click.echo(f"report: {files['html']}  metrics: {files['json']}")
    if result.passed:
        click.echo(f"PASS (|drift| <= {threshold:g} meV/atom/ps)")
    else:
        click.echo("FAIL: " + "; ".join(m["fail_reasons"]))
        raise SystemExit(1)


@cli.command("forces")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="shipped model name or artifact path")
@click.option("--teacher", default=None, help="teacher spec (emt, sevennet:7net-0, orb:NAME, model:PATH) for frames without labels")
@click.option("--data", "data", required=True, type=FRAMES_FILE, help="extxyz (or ASE-readable) frames; FILE@SELECTION picks frames")
@click.option("--index", default=":", show_default=True, help="ASE frame selection (3, -1, 0:10, :)")
@click.option("--stride", type=POSITIVE_INT, default=1, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--min-force", type=NON_NEGATIVE, default=0.05, show_default=True, help="eV/Å; smaller forces are left out of the angular error")
@output_options("forces")
def forces_cmd(model, teacher, data, index, stride, batch_size, min_force, device, out_dir, quiet) -> None:
    """Force / energy / stress parity of MODEL against reference labels (stored or from --teacher)."""
    from md_validation.forces import NonFiniteError, forces_report, read_frames
    from md_validation.inputs import load_student

    try:
        frames = read_frames(data, index=index, stride=stride)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from exc
    try:
        calc = load_student(model, device=device)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"cannot load model {model!r}: {exc}") from exc
    ref = _teacher(teacher, device) if teacher else None
    try:
        with _threads(sum(len(a) for a in frames[:batch_size])):
            metrics, files = forces_report(calc, frames, ref, out_dir, batch_size=batch_size, min_force=min_force,
                                           progress=not quiet, labels={"model": str(model), "teacher": teacher, "data": str(data)})
    except NonFiniteError as exc:
        raise click.ClickException(f"model {model!r} on {data}: {exc}") from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    ov = metrics["overall"]
    click.echo(f"{len(frames)} frames, {ov['n_atoms']} atoms")
    for key in ("force_r2", "force_rmse", "force_mae", "force_max_error", "force_p95_error", "force_angular_error_deg",
                "energy_mae_meV_per_atom", "stress_mae_GPa"):
        # a metric without data (no stress labels, no force above --min-force) is n/a, not NaN
        click.echo(f"  {key:26s} {_num(ov.get(key, float('nan')), ' .4g')}")
    click.echo(f"report: {files['html']}  metrics: {files['json']}")


@cli.command("rdf")
@click.argument("trajectories", nargs=-1, required=True, type=INPUT_FILE)
@click.option("--r-max", type=POSITIVE, default=6.0, show_default=True,
              help="Å; bounded by memory (the cell is replicated beyond half its width)")
@click.option("--nbins", type=NBINS, default=120, show_default=True)
@click.option("--start", type=NON_NEGATIVE_INT, default=0, show_default=True, help="first frame used")
@click.option("--stride", type=POSITIVE_INT, default=1, show_default=True)
@output_options("rdf", device=False)
def rdf_cmd(trajectories, r_max, nbins, start, stride, out_dir, quiet) -> None:
    """Partial RDFs of TRAJECTORIES (MDAnalysis InterRDF); RDF error of each against the first."""
    from md_validation.rdf import rdf_report

    try:
        metrics, files = rdf_report(list(trajectories), out_dir, r_max=r_max, nbins=nbins, start=start,
                                    stride=stride, progress=not quiet)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, summary in metrics["rdf"].items():
        for pair, s in summary.items():
            click.echo(f"{name}: {pair} first peak {_num(s['first_peak_A'], '.3f')} Å, coordination {_num(s['coordination'], '.2f')}")
    for name, errs in metrics.get("rdf_error", {}).items():
        for pair, e in errs.items():
            click.echo(f"RDF error {name} vs {metrics['reference']}: {pair} mean|Δg| {_num(e['mean'], '.4f')}, "
                       f"∫|Δg|dr {_num(e.get('integral', float('nan')), '.4f')} Å")
    click.echo(f"report: {files['html']}  metrics: {files['json']}")


class _TrustError(click.ClickException):
    """Any failure of ``trust`` other than a FAIL verdict: exit status 2 (1 means FAIL)."""

    exit_code = 2


@cli.command("trust")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="shipped model name or artifact path")
@click.option("--structure", type=INPUT_FILE, help="start structure; default: the structure the model records, else its element's reference crystal")
@click.option("--temperature", type=TEMPERATURE, required=True, help="K, of the intended MD")
@click.option("--time", "time_fs", type=POSITIVE_TIME, default="2ps", show_default=True, help="length of the intended MD (Langevin NVT, or NPT with --pressure)")
@click.option("--pressure", "pressure_GPa", type=FINITE, default=None, help="GPa: run Langevin NPT (hydrostatic barostat) at this pressure instead of NVT")
@click.option("--teacher", default=None, help="teacher spec for spot checks (emt, sevennet:7net-0, xtb, ...); without it the verdict rests on uncertainty and stability")
@click.option("--teacher-calls", type=NON_NEGATIVE_INT, default=20, show_default=True, help="at most this many teacher evaluations")
@click.option("--engine", type=ENGINE, default="ase", show_default=True)
@click.option("--threshold", type=POSITIVE, default=None, help="eV/Å, largest per-atom force uncertainty; default: 4 × the model's calibrated force RMSE")
@click.option("--max-fraction", type=NON_NEGATIVE, default=0.05, show_default=True, help="allowed fraction of frames over the threshold")
@click.option("--novelty", "novelty_threshold", type=POSITIVE, default=2.0, show_default=True, help="largest novelty (students with a novelty reference; 1 is exceeded by 1 %% of the training structures)")
@click.option("--force-tolerance", type=POSITIVE, default=None, help="eV/Å, spot-check force RMSE; default: 2 × the model's held-out force RMSE")
@click.option("--nve-time", "nve_fs", type=TIME, default="0", show_default=True, help="NVE after the NVT run, for the drift check (0: none)")
@click.option("--dt", "dt_fs", type=POSITIVE_TIME, default="1fs", show_default=True)
@click.option("--interval", type=POSITIVE_INT, default=10, show_default=True, help="judge a frame every N steps")
@click.option("--seed", type=NON_NEGATIVE_INT, default=0, show_default=True)
@output_options("trust", device_help="cpu, cuda or cuda:N (teacher)")
def trust_cmd(model, structure, temperature, time_fs, pressure_GPa, teacher, teacher_calls, engine, threshold, max_fraction,
              novelty_threshold, force_tolerance, nve_fs, dt_fs, interval, seed, device, out_dir, quiet) -> None:
    """May I use MODEL for this MD job? Runs it with uncertainty monitoring, teacher spot checks
    and stability checks; PASS (exit 0) or FAIL (exit 1) with each reason; 2 on error."""
    from md_validation.trust import TrustSettings, run_trust, write_trust_report

    try:
        _check_steps("--time", time_fs, dt_fs, interval, "the trust run")
        settings = TrustSettings(temperature_K=temperature, time_fs=time_fs, dt_fs=dt_fs, interval=interval, seed=seed,
                                 nve_fs=nve_fs, teacher_calls=teacher_calls, threshold=threshold,
                                 max_fraction_over=max_fraction, novelty_threshold=novelty_threshold,
                                 force_tolerance=force_tolerance, pressure_GPa=pressure_GPa)
        atoms = _structure(structure, model)
        ref = _teacher(teacher, device) if teacher else None
        with _threads(len(atoms)):
            result = run_trust(model, atoms, settings, out_dir, teacher=ref, engine=engine, progress=not quiet)
        files = write_trust_report(result, out_dir)
    except click.ClickException as exc:
        raise _TrustError(exc.format_message()) from exc
    except Exception as exc:  # noqa: BLE001 - an error is exit 2, never a verdict
        raise _TrustError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    m = result.metrics
    at = f", {pressure_GPa:g} GPa" if pressure_GPa is not None else ""
    click.echo(f"{atoms.get_chemical_formula()} ({len(atoms)} atoms), {temperature:g} K{at}, {format_time(time_fs)}, engine {engine}")
    if "npt" in m:
        n = m["npt"]
        click.echo(f"  npt: mean pressure {n['mean_pressure_GPa']:.3g} GPa, volume {n['start_volume_A3_per_atom']:.4g} -> "
                   f"{n['mean_volume_A3_per_atom']:.4g} Å³/atom (second half)")
    if "uncertainty" in m:
        u = m["uncertainty"]
        click.echo(f"  uncertainty: {100 * u['fraction_over']:.1f} % of frames over {u['threshold']:.3g} eV/Å (largest {u['max']:.3g})")
    if "spot_checks" in m:
        sc = m["spot_checks"]
        click.echo(f"  spot checks: {sc['teacher_calls']} teacher calls, force RMSE {sc['force_rmse']:.3g} eV/Å "
                   f"(tolerance {sc['tolerance']:.3g})")
    click.echo(f"  stability: {'stable' if m['stability']['stable'] else m['stability']['reason']}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"report: {files['html']}  metrics: {files['json']}")
    if result.passed:
        click.echo("PASS")
    else:
        click.echo("FAIL: " + "; ".join(result.reasons))
        raise SystemExit(1)


@cli.command("compare")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="student: shipped model name or artifact path")
@click.option("--teacher", required=True, help="teacher spec (emt, sevennet:7net-0, orb:NAME, model:PATH)")
@click.option("--structure", type=INPUT_FILE, help="start structure; default: the structure the model records, else its element's reference crystal")
@click.option("--temperature", type=TEMPERATURE, default=1000.0, show_default=True, help="K")
@click.option("--time", "time_fs", type=POSITIVE_TIME, default="2ps", show_default=True, help="Langevin NVT length")
@click.option("--equilibration", "equil_fs", type=TIME, default="0.2ps", show_default=True, help="start of NVT left out of distributions")
@click.option("--nve-time", "nve_fs", type=TIME, default="1ps", show_default=True, help="NVE length after NVT (0 for none)")
@click.option("--dt", "dt_fs", type=POSITIVE_TIME, default="1fs", show_default=True)
@click.option("--engine", type=ENGINE, default="ase", show_default=True, help="engine for the student (the teacher runs in ASE)")
@click.option("--interval", type=POSITIVE_INT, default=10, show_default=True, help="record a frame every N steps")
@click.option("--friction", type=NON_NEGATIVE, default=0.01, show_default=True, help="Langevin friction (1/fs)")
@click.option("--seed", type=NON_NEGATIVE_INT, default=0, show_default=True)
@click.option("--r-max", type=POSITIVE, default=6.0, show_default=True, help="RDF range (Å)")
@click.option("--nbins", type=NBINS, default=120, show_default=True)
@click.option("--angle-cutoff", type=POSITIVE, default=None, help="bond cutoff for angles (Å); default: first minimum of the teacher's g(r)")
@click.option("--rdf-threshold", type=POSITIVE, default=1.5, show_default=True, help="stability: max ∫|Δg|dr over a window (Å)")
@click.option("--window", "window_fs", type=POSITIVE_TIME, default="0.5ps", show_default=True, help="stability window")
@output_options("compare")
def compare_cmd(model, teacher, structure, temperature, time_fs, equil_fs, nve_fs, dt_fs, engine, interval, friction,
                seed, r_max, nbins, angle_cutoff, rdf_threshold, window_fs, device, out_dir, quiet) -> None:
    """Run teacher and student MD from the same start and seed; write report.html, metrics.json, summary.md."""
    from md_validation.compare import CompareSettings, compare
    from md_validation.inputs import calculator_id, calculator_label
    from md_validation.md import AseEngine
    from md_validation.rdf import check_rdf_grid
    from md_validation.structure_metrics import StabilityCriteria

    _check_steps("--time", time_fs, dt_fs, interval, "the NVT run")
    if equil_fs >= time_fs:
        raise click.BadParameter(f"{format_time(equil_fs)} leaves nothing of the {format_time(time_fs)} NVT run (--time) "
                                 "for the distributions; it must be shorter", param_hint="--equilibration")
    if nve_fs > 0:
        _check_steps("--nve-time", nve_fs, dt_fs, interval, "an NVE drift")
    atoms = _structure(structure, model)
    try:  # the RDFs come after the MD: check their size on the start structure before any step
        check_rdf_grid(atoms, r_max, nbins, n_frames=steps_for(time_fs, dt_fs) // interval + 1,
                       source=structure or "the default structure")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--r-max") from exc
    s_engine, s_id, s_label = _student_engine(model, engine, device)
    t_calc = _teacher(teacher, device)
    t_engine = AseEngine(t_calc)
    settings = CompareSettings(
        temperature_K=temperature, time_fs=time_fs, equilibration_fs=equil_fs, nve_fs=nve_fs, dt_fs=dt_fs,
        interval=interval, friction_per_fs=friction, seed=seed, r_max=r_max, nbins=nbins, angle_cutoff=angle_cutoff,
        stability=StabilityCriteria(window_fs=window_fs, rdf_threshold=rdf_threshold, r_max=r_max, nbins=nbins),
    )
    try:
        with _threads(len(atoms)):
            metrics = compare(atoms, t_engine, s_engine, calculator_id(t_calc, teacher), s_id, settings, out_dir,
                              labels={"teacher": calculator_label(t_calc, teacher), "student": s_label},
                              progress=not quiet)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    from md_validation.compare import markdown_summary

    click.echo(markdown_summary(metrics))
    click.echo(f"report: {metrics['files']['html']}  metrics: {metrics['files']['json']}  summary: {metrics['files']['markdown']}")


def _key_values(values: tuple[str, ...], option: str) -> dict[str, float]:
    """``NAME=VALUE`` options -> dict; BadParameter naming the malformed one."""
    out: dict[str, float] = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected NAME=NUMBER", param_hint=option) from None
    return out


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _molecules(smiles: tuple[str, ...], path: str | None) -> dict[str, str]:
    """``NAME=SMILES`` options and a molecules file -> name -> SMILES (ValueError naming the bad entry)."""
    out: dict[str, str] = {}
    for item in smiles:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{item!r}: expected NAME=SMILES")
        out[name.strip()] = value.strip()
    if path:
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
            seeds = raw.get("seeds") if isinstance(raw, dict) else None
            if not isinstance(seeds, list):
                raise ValueError(f"{path}: no 'seeds' list (a sampling YAML's molecules)")
            for k, seed in enumerate(seeds):
                if isinstance(seed, dict) and seed.get("smiles"):
                    out[str(seed.get("name") or f"molecule_{k}")] = str(seed["smiles"])
        else:
            for n, line in enumerate(text.splitlines(), 1):
                words = line.split("#")[0].split()
                if not words:
                    continue
                if len(words) != 2:
                    raise ValueError(f"{path}:{n}: expected 'NAME SMILES', got {line.strip()!r}")
                out[words[0]] = words[1]
        if not out:
            raise ValueError(f"{path}: no molecules")
    return out


def _crystal(path: str):
    """The first structure of ``path``, named after the file unless it names its phase."""
    from md_validation.inputs import read_any

    atoms = read_any(path, index=0)[0]
    atoms.calc = None
    atoms.info.setdefault("phase", Path(path).stem)
    return atoms


def _molecular_crystals(paths: tuple[str, ...]) -> dict:
    """``--molecular-crystal`` files -> name (the file's stem) -> first structure; ValueError naming
    the file when it is unreadable, not periodic in 3 D or not made of molecules."""
    from md_validation.inputs import read_any
    from md_validation.properties.molecular_crystal import check_crystal

    out = {}
    for path in paths:
        name = Path(path).stem
        if name in out:
            raise ValueError(f"{path}: two molecular crystals named {name!r} (the file stem names the rows)")
        atoms = read_any(path, index=0)[0]
        atoms.calc = None
        check_crystal(atoms, str(path))
        out[name] = atoms
    return out


def check_sections_kind(sections: tuple[str, ...], molecular: bool, molecules: bool = True,
                        molecular_crystals: bool = False) -> None:
    """ValueError when the sections do not fit the system (crystal sections for molecules or back;
    gas-phase sections without ``molecules``, ``molecular_crystal`` without ``molecular_crystals``
    or those without it)."""
    from md_validation.properties import MOLECULAR_CRYSTAL_SECTIONS, MOLECULAR_SECTIONS

    kinds = MOLECULAR_SECTIONS + MOLECULAR_CRYSTAL_SECTIONS
    wrong = [s for s in sections if (s in kinds) != molecular]
    if wrong:
        kind = "molecules" if molecular else "a crystal"
        raise ValueError(f"section(s) {', '.join(wrong)} do not apply to {kind}; "
                         + ("molecules take " + ", ".join(kinds) if molecular
                            else "give molecules with --smiles or --molecules for " + ", ".join(wrong)))
    gas = [s for s in sections if s in MOLECULAR_SECTIONS]
    if gas and not molecules:
        raise ValueError(f"section(s) {', '.join(gas)} need gas-phase molecules: give --smiles or --molecules")
    packed = [s for s in sections if s in MOLECULAR_CRYSTAL_SECTIONS]
    if packed and not molecular_crystals:
        raise ValueError(f"section(s) {', '.join(packed)} need --molecular-crystal FILE")
    if molecular_crystals and not packed:
        raise ValueError("--molecular-crystal is given but --sections leaves out " + ", ".join(MOLECULAR_CRYSTAL_SECTIONS))


@cli.command("properties")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="student: shipped model name or artifact path")
@click.option("--teacher", required=True, help="reference: teacher spec (emt, sevennet:7net-0, orb:NAME) or model:PATH (a second student)")
@click.option("--structure", "structures", multiple=True, type=INPUT_FILE,
              help="crystal structure file (repeatable): the first is the ground state, the others competing phases; "
                   "default: built-in recipes for the model's element")
@click.option("--element", default=None, help="element of the built-in recipes; default: the model's (one-element models)")
@click.option("--phases", default=None, help="built-in prototypes to compare, comma-separated; default: all")
@click.option("--smiles", "smiles", multiple=True, metavar="NAME=SMILES",
              help="a gas-phase molecule (repeatable): runs the molecular sections on these molecules")
@click.option("--molecules", "molecules_file", type=INPUT_FILE, default=None,
              help="molecules to test: a sampling YAML (its seeds' name and smiles) or a text file of 'NAME SMILES' lines")
@click.option("--molecular-crystal", "molecular_crystals", multiple=True, type=INPUT_FILE,
              help="a crystal of molecules (repeatable; ASE-readable, periodic in 3 D, rows named after the file stem): "
                   "runs the section molecular_crystal (relaxed cell, lattice energy), alone or with molecules")
@click.option("--sections", default=None,
              help="sections to run, comma-separated: crystals eos, elastic, phonons, defects, surfaces, short_range, liquid "
                   "(default: all of them); molecules geometry, vibrations, torsions, conformers (default: all of them), "
                   "molecular_crystal (default with --molecular-crystal)")
@click.option("--tolerance", "tolerances", multiple=True, metavar="NAME=VALUE", help="override a default tolerance (repeatable), e.g. bulk_modulus_pct=5")
@click.option("--melting-K", "melting_k", type=POSITIVE, default=None, help="melting temperature for the liquid section; default: tabulated for the element")
@click.option("--seeds", type=POSITIVE_INT, default=3, show_default=True, help="MD runs per liquid / hot-solid property")
@click.option("--liquid-time", "liquid_fs", type=POSITIVE_TIME, default="2ps", show_default=True, help="length of each liquid run")
@click.option("--hot-time", "hot_fs", type=POSITIVE_TIME, default="2ps", show_default=True, help="length of each hot-solid run")
@click.option("--supercell-atoms", type=POSITIVE_INT, default=64, show_default=True, help="approximate size of defect, phonon and liquid cells")
@click.option("--fmax", type=POSITIVE, default=0.005, show_default=True, help="force threshold of relaxations (eV/Å)")
@click.option("--molecule-fmax", type=POSITIVE, default=0.01, show_default=True, help="force threshold of molecule relaxations (eV/Å)")
@click.option("--conformers", type=POSITIVE_INT, default=4, show_default=True, help="RDKit conformers per molecule (conformer energies)")
@click.option("--torsion-points", type=POSITIVE_INT, default=12, show_default=True, help="points of each 360° dihedral scan")
@click.option("--torsion-mode", type=click.Choice(["relaxed", "rigid"]), default="relaxed", show_default=True,
              help="relax every other coordinate at each dihedral, or not")
@click.option("--crystal-min-width", type=POSITIVE, default=9.0, show_default=True,
              help="repeat a molecular crystal's cell to at least this width (Å) before relaxing it (Γ-point teachers such as xtb need it)")
@click.option("--displacement", type=POSITIVE, default=0.01, show_default=True, help="finite-difference step of the harmonic frequencies (Å)")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="student precision")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="teacher results cache; default: ~/.cache/mlffd/properties or $MLFFD_CACHE")
@click.option("--no-cache", is_flag=True, help="recompute the teacher's results")
@output_options("properties")
def properties_cmd(model, teacher, structures, element, phases, smiles, molecules_file, molecular_crystals, sections, tolerances,
                   melting_k, seeds,
                   liquid_fs, hot_fs, supercell_atoms, fmax, molecule_fmax, conformers, torsion_points, torsion_mode,
                   crystal_min_width, displacement, dtype, cache_dir, no_cache, device, out_dir, quiet) -> None:
    """Physical properties of MODEL against TEACHER: equations of state of competing phases,
    elastic constants, phonons, point defects, surfaces, short range, liquid and hot solid; for
    molecules (--smiles, --molecules, or by default for a model of several elements), geometry,
    harmonic frequencies, torsion profiles and conformer energies; for molecular crystals
    (--molecular-crystal), the relaxed cell and the lattice energy.

    Exits with status 0 only when every scored property is within its tolerance.
    """
    from md_validation.inputs import calculator_id, calculator_label, load_student
    from md_validation.properties import (CRYSTAL_SECTIONS, MOLECULAR_CRYSTAL_SECTIONS, MOLECULAR_SECTIONS, PropertiesConfig,
                                          Side, Tolerances, run_properties)
    from md_validation.properties.system import model_system
    from md_validation.properties.cache import ResultCache, default_cache_dir
    from md_validation.properties.report import verdict_line, write_properties_report

    if molecular_crystals and (structures or element):
        raise click.UsageError("--molecular-crystal runs the molecular sections; give --structure/--element in another run")
    try:  # before the model loads: a wrong file is the cheapest mistake to report
        packed = _molecular_crystals(molecular_crystals)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        student = load_student(model, device=device, dtype=dtype)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"cannot load model {model!r}: {exc}") from exc
    model_elements = list(getattr(student, "elements", []))
    try:
        wanted = _molecules(smiles, molecules_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--smiles/--molecules") from exc
    # molecules when given, or for a model of several elements that no crystal recipe covers
    molecular = bool(wanted) or bool(packed) or (not structures and not element and len(model_elements) > 1)
    # molecular crystals alone run their own section; with molecules (given or defaults) all of them
    default = ((MOLECULAR_SECTIONS if wanted or not packed else ()) + (MOLECULAR_CRYSTAL_SECTIONS if packed else ())
               if molecular else CRYSTAL_SECTIONS)
    try:
        config = PropertiesConfig(
            sections=_names(sections) or default, phases=_names(phases),
            fmax=fmax, seeds=seeds, liquid_time_fs=liquid_fs, hot_time_fs=hot_fs, melting_K=melting_k,
            supercell_atoms=supercell_atoms, molecule_fmax=molecule_fmax, conformers=conformers,
            torsion_points=torsion_points, torsion_mode=torsion_mode, displacement=displacement,
            crystal_min_width=crystal_min_width, tolerances=Tolerances().with_overrides(_key_values(tolerances, "--tolerance")))
        # without molecules given, the gas-phase sections take the defaults only when no crystal is given
        check_sections_kind(config.sections, molecular, bool(wanted) or not packed, bool(packed))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        frames = [] if molecular else [_crystal(path) for path in structures]
        system = model_system(model_elements, molecular, wanted, frames, element, config.phases, melting_k, config.conformers,
                              packed)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    t_calc = _teacher(teacher, device)
    cache = None if no_cache else ResultCache(cache_dir or default_cache_dir())
    t_side = Side(t_calc, calculator_label(t_calc, teacher), calculator_id(t_calc, teacher))
    s_side = Side(student, calculator_label(student, str(model)), None)
    with _threads(config.supercell_atoms):
        result = run_properties(t_side, s_side, system, config, cache=cache, progress=not quiet)
    meta = {"model": str(model), "teacher": teacher, "elements": ",".join(system.elements), "ground": system.ground,
            "phases": ",".join(system.phases), "student_dtype": dtype, "seeds": seeds,
            "cache": str(cache.directory) if cache else "off"}
    if system.is_molecular:
        meta = {k: v for k, v in meta.items() if k not in ("ground", "phases", "seeds")} | {
            "molecules": ", ".join(f"{n} {a.info.get('smiles', '')}" for n, a in system.molecules.items())}
        if molecular_crystals:
            meta["molecular_crystals"] = ", ".join(molecular_crystals)
    files = write_properties_report(result, out_dir, config, meta, molecules=system.molecules)
    click.echo(files["markdown"].read_text(encoding="utf-8"))
    click.echo(f"report: {files['html']}  json: {files['json']}  summary: {files['markdown']}")
    if cache is not None:
        click.echo(f"teacher cache: {cache.hits} reused, {cache.misses} computed ({cache.directory})")
    click.echo(verdict_line(result))
    if not result.passed:
        raise SystemExit(1)


def main() -> None:  # pragma: no cover
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()

