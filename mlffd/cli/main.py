"""The ``mlffd`` command group. Each sub-command lives in its own module and calls the library."""

from __future__ import annotations

import json

import click

from mlffd.cli.options import OneLineErrorGroup, debug_option


@click.group(cls=OneLineErrorGroup)
@click.version_option(package_name="mlffd")
@debug_option
def cli() -> None:
    """mlffd: distil foundation-model potentials into small, fast students.

    An error is one line naming the value or file; --debug shows its traceback.
    """


@cli.command("info")
@click.argument("model", default="tiny")
def info(model: str) -> None:
    """Print the metadata of MODEL (a shipped name or a path to NAME.mlffd.pt)."""
    from mlffd.artifact import read_metadata
    from mlffd.registry import resolve

    click.echo(json.dumps(read_metadata(resolve(model)), indent=2, sort_keys=True))


@cli.command("models")
def models() -> None:
    """List the shipped models."""
    from mlffd.registry import REGISTRY

    if not REGISTRY:
        click.echo("no shipped models in this installation")
    for name, entry in sorted(REGISTRY.items()):
        click.echo(f"{name:12s} {entry.filename:28s} {entry.description}")


def _register() -> None:
    """Attach the sub-commands; each module is thin and imports the library lazily."""
    from mlffd.cli.average import average_command
    from mlffd.cli.bench import bench_command
    from mlffd.cli.calibrate import calibrate_command
    from mlffd.cli.card import card_command
    from mlffd.cli.distill import distill_command
    from mlffd.cli.evaluate import evaluate_command
    from mlffd.cli.sample import sample
    from mlffd.cli.train import train_command

    for command in (sample, train_command, evaluate_command, distill_command, card_command, bench_command, calibrate_command,
                    average_command):
        cli.add_command(command)


_register()


if __name__ == "__main__":  # python -m mlffd.cli.main (an interpreter whose console scripts point elsewhere)
    cli()
