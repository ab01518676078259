"""Widen a trained student without changing what it computes, as the start of a fine-tune with
more capacity (``mlffd.models.widen``); prints the largest energy and force difference between
the two on rattled silicon, which must be round-off.

    python tools/widen.py runs/si/finetune/ultra-tiny-minima7/ultra-tiny.mlffd.pt 38 38 38 /tmp/ut38.mlffd.pt
"""

from __future__ import annotations

import sys

import numpy as np

from mlffd import DistilledCalculator
from mlffd.models.widen import widen_artifact
from mlffd.testing import silicon


def main(src: str, features: str, channels: str, hidden: str, dst: str, message_dim: str = "") -> None:
    widen_artifact(src, dst, int(features), int(channels), int(hidden), int(message_dim) if message_dim else None)
    atoms = silicon(3, rattle=0.1, seed=3)
    out = {}
    for path in (src, dst):
        probe = atoms.copy()
        probe.calc = DistilledCalculator(path)
        out[path] = (probe.get_potential_energy(), probe.get_forces())
    de = abs(out[src][0] - out[dst][0])
    df = np.abs(out[src][1] - out[dst][1]).max()
    print(f"{dst}: |dE| {de:.2e} eV, max |dF| {df:.2e} eV/A on {len(atoms)} atoms")


if __name__ == "__main__":
    if len(sys.argv) not in (6, 7):
        sys.exit("usage: python tools/widen.py SRC FEATURES CHANNELS HIDDEN DST [MESSAGE_DIM]")
    try:
        main(*sys.argv[1:])
    except (ValueError, FileNotFoundError) as exc:  # a bad width or path: one line, nothing written
        sys.exit(f"error: {exc}")
