"""How well a drug-like student's novelty and ensemble uncertainty rank its held-out errors, per molecule.

For every molecule of the held-out sets: the energy MAE per atom against GFN2-xTB, and the mean
over its frames of the student's novelty (``mlffd.models.novelty``) and of its energy uncertainty
per atom (ensemble heads); then the Spearman rank correlation of each with the error, over all
molecules. The student needs a novelty reference (every student exported by training has one;
an older artifact gets one from ``mlffd calibrate MODEL --refit TRAINING_FILES ... --out NEW``).

Run from the repository root:
    python examples/druglike/novelty_table.py druglike-tiny
    python examples/druglike/novelty_table.py runs/.../druglike-tiny.mlffd.pt data/druglike/heldout3.extxyz.xz
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import numpy as np
from scipy.stats import spearmanr

from mlffd.calculator import DistilledCalculator
from mlffd.data import read_frames

from heldout_table import SETS, molecule_of


def rows(model: str, files: tuple[str, ...]) -> list[tuple[str, str, float, float, float]]:
    """(set, molecule, energy MAE meV/atom, mean novelty, mean energy uncertainty meV/atom) per molecule."""
    calc = DistilledCalculator(model, uncertainty=True)
    if "novelty" not in calc.metadata:
        raise SystemExit(f"{model} has no novelty reference: mlffd calibrate {model} --refit TRAINING_FILES --data VAL --out NEW")
    out = []
    for path in files:
        frames = read_frames(path)
        per: OrderedDict[str, list[tuple[float, float, float]]] = OrderedDict()
        for frame, r in zip(frames, calc.calculate_batch(frames)):
            n = len(frame)
            per.setdefault(molecule_of(frame), []).append(
                (abs(r["energy"] - frame.get_potential_energy()) / n * 1000, r["novelty"], r["energy_uncertainty"] / n * 1000))
        name = path.rsplit("/", 1)[-1].split(".")[0]
        out += [(name, mol, *np.mean(v, axis=0)) for mol, v in per.items()]
    return out


def table(model: str, files: tuple[str, ...]) -> str:
    r = rows(model, files)
    lines = ["| set | molecule | energy MAE (meV/atom) | novelty | energy uncertainty (meV/atom) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {m} | {e:.2f} | {n:.2f} | {u:.2f} |" for s, m, e, n, u in r]
    err, nov, unc = (np.array([x[k] for x in r]) for k in (2, 3, 4))
    lines += ["", f"Over the {len(r)} molecules, Spearman ρ of the energy MAE with the novelty: "
              f"{spearmanr(err, nov).statistic:.2f}; with the energy uncertainty: {spearmanr(err, unc).statistic:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="shipped name or artifact path (with a novelty reference)")
    parser.add_argument("files", nargs="*", help=f"held-out frame files (default: {', '.join(SETS)})")
    args = parser.parse_args()
    print(table(args.model, tuple(args.files) or SETS), end="")


if __name__ == "__main__":
    main()
