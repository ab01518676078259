"""``mlffd calibrate``: refit and calibrate the uncertainty (and fit the novelty) of an ensemble student's artifact."""

from __future__ import annotations

import json

import click

from mlffd.cli.options import INPUT_FILE, OUTPUT_FILE


@click.command("calibrate")
@click.argument("model")
@click.option("--data", "calibration", multiple=True, type=INPUT_FILE,
              help="Labelled frames (held out from training) the uncertainty scale is fitted on (repeatable); "
                   "none: the calibration is kept.")
@click.option("--refit", multiple=True, type=INPUT_FILE,
              help="Labelled training frames the heads' deviations are refitted and the novelty reference fitted on "
                   "(repeatable; needs --data).")
@click.option("--novelty", multiple=True, type=INPUT_FILE,
              help="Labelled training frames the novelty reference is fitted on instead (repeatable): alone, it "
                   "adds a reference and changes nothing else.")
@click.option("--max-refit-frames", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--draws", type=click.IntRange(min=1), default=3, show_default=True,
              help="Refit on this many random draws of --max-refit-frames training frames and keep the draw whose "
                   "uncertainty ranks the force errors of --data best (each draw's rank correlation is in the output).")
@click.option("--out", required=True, type=OUTPUT_FILE, help="The new artifact (NAME.mlffd.pt).")
def calibrate_command(model: str, calibration: tuple[str, ...], refit: tuple[str, ...], novelty: tuple[str, ...],
                      max_refit_frames: int, draws: int, out: str) -> None:
    """Write MODEL (a shipped name or NAME.mlffd.pt) to OUT with its ensemble heads refitted so
    their spread follows its errors (--refit), its novelty reference fitted (--novelty, else
    --refit) and its uncertainty calibrated (--data). Energies and forces are unchanged."""
    from mlffd.registry import resolve
    from mlffd.training.calibration import recalibrate_artifact

    records = recalibrate_artifact(resolve(model), out, list(calibration), list(refit), max_refit_frames, list(novelty),
                                   refit_draws=draws)
    click.echo(json.dumps({name: {k: v for k, v in r.items() if k != "data"} for name, r in records.items()}, indent=2))
