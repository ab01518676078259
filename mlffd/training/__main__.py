"""``python -m mlffd.training CONFIG [--resume]``: the entry point for ``torchrun``."""

from __future__ import annotations

from mlffd.cli.train import train_command

if __name__ == "__main__":
    train_command()
