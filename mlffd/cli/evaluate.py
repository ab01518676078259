"""``mlffd evaluate MODEL DATA``: accuracy of a student on a labelled extxyz file."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.argument("model")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write all metrics to this JSON file.")
@click.option("--batch-size", default=8, show_default=True, help="Structures per model call.")
def evaluate_command(model: str, data: tuple[str, ...], json_out: str | None, batch_size: int) -> None:
    """Metrics of MODEL (a shipped name or NAME.mlffd.pt) against the labels in DATA."""
    from mlffd.training.evaluate import evaluate, format_metrics

    metrics = evaluate(model, list(data), batch_size=batch_size)
    click.echo(f"{metrics['model']}: {metrics['num_frames']} frames, {metrics['num_atoms']} atoms")
    click.echo(format_metrics(metrics))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(metrics, fh, indent=2)
