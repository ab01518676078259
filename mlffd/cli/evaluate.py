"""``mlffd evaluate MODEL DATA``: accuracy of a student on a labelled extxyz file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlffd.cli.options import DEVICE, INPUT_FILE, OUTPUT_FILE, POSITIVE_INT


@click.command("evaluate")
@click.argument("model")
@click.argument("data", nargs=-1, required=True, type=INPUT_FILE)
@click.option("--json", "json_out", type=OUTPUT_FILE, help="Also write all metrics to this JSON file.")
@click.option("--batch-size", type=POSITIVE_INT, default=8, show_default=True, help="Structures per model call.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="cpu, cuda or cuda:N")
def evaluate_command(model: str, data: tuple[str, ...], json_out: str | None, batch_size: int, device: str) -> None:
    """Metrics of MODEL (a shipped name or NAME.mlffd.pt) against the labels in DATA.

    Exits with an error naming the frames and atoms when the model gives NaN or infinite values.
    """
    from mlffd.training.evaluate import evaluate, format_metrics

    metrics = evaluate(model, list(data), batch_size=batch_size, device=device)
    click.echo(f"{metrics['model']}: {metrics['num_frames']} frames, {metrics['num_atoms']} atoms")
    click.echo(format_metrics(metrics))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(json_out, "w") as fh:
            json.dump(metrics, fh, indent=2)
