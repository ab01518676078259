"""``mlffd train CONFIG [--resume]``: train a student from a YAML/TOML training config."""

from __future__ import annotations

import click

from mlffd.cli.options import INPUT_FILE, check_output_dir


@click.command("train")
@click.argument("config", type=INPUT_FILE)
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint.pt if it exists.")
def train_command(config: str, resume: bool) -> None:
    """Train a student described by CONFIG (YAML or TOML; see docs/training.md).

    Launch with ``torchrun --nproc_per_node N -m mlffd.training CONFIG`` for data-parallel training.
    """
    from mlffd.training.config import check_runnable, load_config
    from mlffd.training.evaluate import format_metrics
    from mlffd.training.trainer import train

    cfg = load_config(config)
    try:  # before any data is read or a step is taken
        check_runnable(cfg)
        check_output_dir(cfg.output)
    except ValueError as exc:
        raise click.ClickException(f"training config {config}: {exc}") from exc
    summary = train(cfg, resume=resume)
    if summary:
        click.echo(f"artifact: {summary['artifact']}")
        click.echo(f"{summary['metrics']['split']} metrics (best step {summary['metrics']['best_step']}):")
        click.echo(format_metrics(summary["metrics"]))
        if summary["metrics"].get("under_trained"):
            from mlffd.training.trainer import UNDER_TRAINED

            click.echo(f"warning: {UNDER_TRAINED}")
