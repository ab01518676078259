"""``mlffd card``: write a model card from numbers measured now."""

from __future__ import annotations

import click

from mlffd.cli.options import INPUT_FILE, OUTPUT_DIR


@click.command("card")
@click.argument("model")
@click.option("--data", required=True, type=INPUT_FILE, help="Held-out labelled extxyz (teacher frames).")
@click.option("--teacher", default=None, help="Teacher spec for the speed comparison (default: the model's teacher).")
@click.option("--out-dir", default="docs/models", show_default=True, type=OUTPUT_DIR)
@click.option("--name", default=None, help="Card name (default: the artifact's file name).")
@click.option("--no-speed", is_flag=True, help="Skip the student-vs-teacher timing.")
@click.option("--properties", type=INPUT_FILE, multiple=True,
              help="properties.json of `mlffd-validate properties` for this model: its table goes in the card "
                   "(repeatable: the rows of several runs are merged).")
@click.option("--nve", type=INPUT_FILE, multiple=True,
              help="nve.json of `mlffd-validate nve` for this model (repeatable): the MD-stability table.")
@click.option("--active", type=INPUT_FILE, default=None,
              help="report.json of the model's active-distillation loop: its per-round record.")
@click.option("--forces", type=INPUT_FILE, default=None,
              help="forces.json of `mlffd-validate forces` for this model: its uncertainty against the true error on that data.")
@click.option("--targets", type=INPUT_FILE, default=None,
              help='JSON of bounds on the accuracy metrics ({"force_rmse": 0.12, ...}): the card says met or not next to each.')
@click.option("--recipe", type=INPUT_FILE, default=None,
              help="the distill YAML that made MODEL: the Reproduce block, and its training molecules when they are SMILES")
@click.option("--heldout-molecules", type=INPUT_FILE, default=None,
              help="sampling YAML of the held-out molecules: listed in the card")
@click.option("--notes", type=INPUT_FILE, multiple=True,
              help="Markdown of measurements made elsewhere (each with its command), placed before Reproduce (repeatable)")
def card_command(model: str, data: str, teacher: str | None, out_dir: str, name: str | None, no_speed: bool,
                 properties: tuple[str, ...], nve: tuple[str, ...], active: str | None, forces: str | None,
                 targets: str | None, recipe: str | None, heldout_molecules: str | None, notes: tuple[str, ...]) -> None:
    """Evaluate MODEL on DATA, time it against its teacher, and write OUT_DIR/NAME.md."""
    from mlffd.modelcard import write_card

    path = write_card(model, data, teacher=teacher, out_dir=out_dir, name=name, speed=not no_speed,
                      properties=list(properties) or None, nve=nve, active=active, targets=targets, forces=forces,
                      recipe=recipe, heldout_molecules=heldout_molecules, notes=notes)
    click.echo(str(path))
