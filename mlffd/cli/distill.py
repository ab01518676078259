"""``mlffd distill CONFIG``: sample -> label -> train -> export -> evaluate, skipping finished stages."""

from __future__ import annotations

import click

from mlffd.distill import STAGES


@click.command("distill")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--student", "students", multiple=True, help="Only this student (repeatable; default: all).")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES), help="Only this stage (repeatable; default: all).")
def distill_command(config: str, students: tuple[str, ...], stages: tuple[str, ...]) -> None:
    """Run the distillation pipeline of CONFIG (YAML or TOML; see docs/training.md)."""
    from mlffd.distill import load_distill_config, run_distill

    run_distill(load_distill_config(config), students=list(students) or None, stages=tuple(stages) or STAGES, log=click.echo)
