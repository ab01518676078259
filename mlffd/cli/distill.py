"""``mlffd distill CONFIG``: sample -> label -> train -> active -> export -> evaluate, skipping finished stages."""

from __future__ import annotations

import click

from mlffd.cli.options import INPUT_FILE
from mlffd.distill import STAGES


@click.command("distill")
@click.argument("config", type=INPUT_FILE)
@click.option("--student", "students", multiple=True, help="Only this student (repeatable; default: all).")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES), help="Only this stage (repeatable; default: all).")
def distill_command(config: str, students: tuple[str, ...], stages: tuple[str, ...]) -> None:
    """Run the distillation pipeline of CONFIG (YAML or TOML; see docs/training.md)."""
    from mlffd.cli.options import check_device
    from mlffd.distill import load_distill_config, run_distill

    cfg = load_distill_config(config)
    unknown = [s for s in students if s not in cfg.students]
    if unknown:
        raise click.BadParameter(f"{unknown} not in {config} (students: {sorted(cfg.students)})", param_hint="--student")
    # every student's training options are checked before the first (long) stage runs
    for name in students or cfg.students:
        try:
            check_device(cfg.student_config(name).device)
        except ValueError as exc:
            raise click.ClickException(f"{config}: student {name!r}: {exc}") from exc
    run_distill(cfg, students=list(students) or None, stages=tuple(stages) or STAGES, log=click.echo)
