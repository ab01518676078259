"""``mlffd train CONFIG [--resume]``: train a student from a YAML/TOML training config."""

from __future__ import annotations


import click


@click.command("train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint.pt if it exists.")
def train_command(config: str, resume: bool) -> None:
    """Train a student described by CONFIG (YAML or TOML; see docs/training.md).

    Launch with ``torchrun --nproc_per_node N -m mlffd.training CONFIG`` for data-parallel training.
    """
    from mlffd.training.config import load_config
    from mlffd.training.evaluate import format_metrics
    from mlffd.training.trainer import train

    summary = train(load_config(config), resume=resume)
    if summary:
        click.echo(f"artifact: {summary['artifact']}")
        click.echo(f"{summary['metrics']['split']} metrics (best step {summary['metrics']['best_step']}):")
        click.echo(format_metrics(summary["metrics"]))
