"""``mlffd average``: one student whose weights are the weighted mean of fine-tunes of one student."""

from __future__ import annotations

import json

import click

from mlffd.cli.options import INPUT_FILE, OUTPUT_FILE, FiniteFloat


@click.command("average")
@click.argument("models", nargs=-1, required=True)
@click.option("--weight", "weights", multiple=True, type=FiniteFloat(min=0.0),
              help="One weight per MODEL, in order (>= 0, normalised to sum 1); default: equal weights.")
@click.option("--test", "test_data", multiple=True, type=INPUT_FILE,
              help="Held-out labelled frames (repeatable): the average's metrics on them go in its metadata.")
@click.option("--out", required=True, type=OUTPUT_FILE, help="The new artifact (NAME.mlffd.pt).")
def average_command(models: tuple[str, ...], weights: tuple[float, ...], test_data: tuple[str, ...], out: str) -> None:
    """Write to OUT the weighted mean of the parameters of MODELS (shipped names or NAME.mlffd.pt;
    fine-tunes of one student, at least two). The result has no uncertainty calibration and no
    novelty reference: run `mlffd calibrate` on it before using either."""
    from mlffd.registry import resolve
    from mlffd.training.average import average_students

    record = average_students([resolve(m) for m in models], list(weights) or [1.0] * len(models), out, list(test_data))
    click.echo(json.dumps(record, indent=2))
    click.echo(f"wrote {out}; calibrate its uncertainty with: mlffd calibrate {out} --refit TRAIN --data HELD_OUT --out CALIBRATED",
               err=True)
