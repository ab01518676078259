"""``mlffd bench``: thin CLI over :func:`mlffd.bench.run_bench`."""

from __future__ import annotations

from pathlib import Path

import click

from mlffd.cli.options import DEVICE, NON_NEGATIVE_INT, OUTPUT_DIR, POSITIVE, POSITIVE_INT


def _ints(value: str | None, option: str = "") -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}", param_hint=option or None) from exc
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}", param_hint=option or None)
    return numbers


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _options(f):
    opts = [
        click.option("--sizes", help="atom counts, comma-separated (diamond-Si supercells of 8 n^3 atoms) [64,512,4096,32768]"),
        click.option("--models", help="students: shipped names or size presets [ultra-tiny,tiny,original]"),
        click.option("--threads", type=POSITIVE_INT, default=None, help="torch threads; LAMMPS: 1 rank x THREADS or R ranks x THREADS/R [2]"),
        click.option("--repeats", type=POSITIVE_INT, default=None, help="timed repeats per measurement (median and IQR over them) [5]"),
        click.option("--rounds", type=POSITIVE_INT, default=None, help="repeat the main measurements in this many rounds; each ratio is the median over rounds of the ratio within a round (robust to a machine whose speed drifts) [1]"),
        click.option("--warmup", type=NON_NEGATIVE_INT, default=None, help="untimed calls before timing [3]"),
        click.option("--min-time", type=POSITIVE, default=None, help="seconds per timed repeat (several calls when one is shorter) [0.5]"),
        click.option("--students/--no-students", default=None, help="students: raw artifact call and DistilledCalculator [on]"),
        click.option("--compiled/--no-compiled", default=None, help="also DistilledCalculator(compile=True) (torch.compile, compile time excluded) [off]"),
        click.option("--teachers/--no-teachers", default=None, help="SevenNet 7net-0 and Orb-v3 (random weights) through ASE [on]"),
        click.option("--teacher-sizes", help="atom counts for the teachers [64,512]"),
        click.option("--lammps/--no-lammps", default=None, help="LAMMPS pair_style mlffd, sw, tersoff [on]"),
        click.option("--ranks", help="MPI rank counts for LAMMPS [1,2]"),
        click.option("--pairs", help="LAMMPS pair styles: mlffd (the students), sw, tersoff [mlffd,sw,tersoff]"),
        click.option("--side-by-side/--no-side-by-side", default=None,
                     help="flatness (largest size vs 512 atoms) and plugin overhead (4,096 atoms) also with both costs alternating in one process [on]"),
        click.option("--side-by-side-pairs", type=POSITIVE_INT, default=None, help="alternations per side-by-side measurement [5]"),
        click.option("--batch/--no-batch", default=None, help="many small cells: calculate_batch vs one by one [on]"),
        click.option("--batch-count", type=POSITIVE_INT, default=None, help="number of 64-atom cells in the batch [64]"),
        click.option("--allocator/--no-allocator", default=None, help="glibc defaults vs mlffd's malloc settings [on]"),
        click.option("--allocator-sizes", help="atom counts for the allocator comparison [512,4096]"),
        click.option("--allocator-methods", help="paths for the allocator comparison: artifact, calculator, lammps (pair_style mlffd, 1 rank; settings via GLIBC_TUNABLES) [artifact]"),
        click.option("--allocator-model", default=None, help="student for the allocator comparison [tiny]"),
        click.option("--allocator-rounds", type=POSITIVE_INT, default=None, help="interleaved default/mlffd pairs per size, pooled by median [1]"),
        click.option("--device", type=DEVICE, default=None, help="students and teachers on cpu, cuda or cuda:N (LAMMPS: pair_style mlffd device D) [cpu]"),
        click.option("--block-atoms", type=NON_NEGATIVE_INT, default=None, help="centre atoms per evaluation block of the students; 0: the device's default [0]"),
        click.option("--out", "out", type=OUTPUT_DIR, default="bench-results", show_default=True,
                     help="output folder: bench.json, bench.md, bench_cost.png"),
        click.option("--quick", is_flag=True, help="small and fast: 64 atoms, ultra-tiny, 2 repeats (for tests and smoke checks)"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(only: str | None, **kw):
    from mlffd.bench import BenchConfig

    quick = kw.pop("quick")
    out = Path(kw.pop("out"))
    mapped = {
        "sizes": _ints(kw.pop("sizes"), "--sizes"),
        "models": _names(kw.pop("models")),
        "teacher_sizes": _ints(kw.pop("teacher_sizes"), "--teacher-sizes"),
        "ranks": _ints(kw.pop("ranks"), "--ranks"),
        "allocator_sizes": _ints(kw.pop("allocator_sizes"), "--allocator-sizes"),
    }
    pairs = _names(kw.pop("pairs"))
    if pairs is not None:
        unknown = set(pairs) - {"mlffd", "sw", "tersoff"}
        if unknown:
            raise click.BadParameter(f"unknown pair styles {sorted(unknown)}; expected some of mlffd, sw, tersoff")
        mapped["classical"] = tuple(p for p in pairs if p != "mlffd")
        mapped["lammps_students"] = "mlffd" in pairs
    mapped["allocator_methods"] = _names(kw.pop("allocator_methods"))
    mapped.update(kw)
    overrides = {k: v for k, v in mapped.items() if v is not None}
    if only == "lammps":
        overrides.update(students=False, teachers=False, batch=False, allocator=False, lammps=True, side_by_side=False)
    elif only == "allocator":
        overrides.update(students=False, teachers=False, batch=False, lammps=False, allocator=True, side_by_side=False)
        if "models" not in overrides:
            overrides["models"] = ()
    try:
        config = BenchConfig.quick_config(**overrides) if quick else BenchConfig(**overrides)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    return config, out


def _run(config, out: Path) -> None:
    from mlffd.bench import run_bench

    click.echo(f"mlffd bench -> {out} (each measurement in its own process; this machine's other load adds noise)")
    result = run_bench(config, out, progress=click.echo)
    click.echo("")
    click.echo((out / "bench.md").read_text())
    click.echo(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench_cost.png'} ({result['duration_s']:.0f} s)")


@click.group("bench", invoke_without_command=True)
@_options
@click.pass_context
def bench_command(ctx: click.Context, **kw) -> None:
    """Cost per atom-step, throughput and peak memory of students, teachers and LAMMPS.

    Every measurement runs in its own process; every ratio (vs LAMMPS SW, vs the teachers,
    plugin vs artifact, batched vs one-by-one) comes from numbers of the same run.
    'mlffd bench lammps' gives the LAMMPS-only table, 'mlffd bench allocator' the malloc comparison.
    """
    if ctx.invoked_subcommand is not None:
        return
    _run(*_config(None, **kw))


@bench_command.command("lammps")
@_options
def bench_lammps(**kw) -> None:
    """LAMMPS only: pair_style mlffd on 1 and 2 ranks and the classical floor (sw, tersoff)."""
    _run(*_config("lammps", **kw))


@bench_command.command("allocator")
@_options
def bench_allocator(**kw) -> None:
    """glibc malloc defaults (MLFFD_MALLOC=default) vs mlffd's settings, per atom count."""
    _run(*_config("allocator", **kw))
