"""Held-out accuracy of a drug-like student as Markdown tables: one row per held-out set (the
numbers of ``mlffd evaluate``), then one row per molecule (its energy error is mostly a constant
offset per molecule, which the per-set MAE hides).

Run from the repository root:
    python examples/druglike/heldout_table.py druglike-tiny
    python examples/druglike/heldout_table.py runs/.../druglike-tiny.mlffd.pt data/druglike/heldout3.extxyz.xz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mlffd import artifact
from mlffd.data import read_frames, to_graphs
from mlffd.registry import resolve
from mlffd.training.evaluate import collect_predictions, compute_metrics

SETS = tuple(f"data/druglike/{name}.extxyz.xz" for name in ("heldout", "heldout2", "heldout3", "heldout4", "heldout5", "heldout6"))


def molecule_of(frame) -> str:
    """The molecule a held-out frame belongs to: its trajectory's task, ``heldout_NAME/...``."""
    return frame.info["trajectory"].split("/")[0].removeprefix("heldout_")


def tables(model: str, files: tuple[str, ...]) -> str:
    art = artifact.load(resolve(model), device=torch.device("cpu"))
    sets = ["| held-out set | frames | force RMSE (eV/Å) | force R² | energy MAE (meV/atom) |", "| --- | --- | --- | --- | --- |"]
    molecules = ["| set | molecule | atoms | energy MAE (meV/atom) | mean energy error (meV/atom) | force RMSE (eV/Å) |",
                 "| --- | --- | --- | --- | --- | --- |"]
    maes = []
    for path in files:
        frames = read_frames(path)
        graphs = to_graphs(frames, art.elements, art.cutoff)
        pred = collect_predictions(art.module, graphs)
        m = compute_metrics(graphs, pred)
        maes.append(m["energy_mae_mev_per_atom"])
        name = Path(path).name.split(".")[0]
        sets.append(f"| {name} | {m['num_frames']} | {m['force_rmse']:.3f} | {m['force_r2']:.3f} | {m['energy_mae_mev_per_atom']:.2f} |")
        n_atoms = np.array([g.num_atoms for g in graphs])
        de = (pred["energy"] - np.array([g.energy for g in graphs])) / n_atoms * 1000
        owners = np.array([molecule_of(f) for f in frames])
        atom_owner = np.repeat(owners, n_atoms)
        df = pred["forces"] - np.concatenate([g.forces for g in graphs])
        for mol in dict.fromkeys(owners):
            sel = owners == mol
            rmse = float(np.sqrt(np.mean(df[atom_owner == mol] ** 2)))
            molecules.append(f"| {name} | {mol} | {n_atoms[sel][0]} | {np.abs(de[sel]).mean():.2f} | {de[sel].mean():+.2f} | {rmse:.3f} |")
    mean = f"\nMean energy MAE over the {len(files)} sets: {np.mean(maes):.2f} meV/atom.\n"
    return "\n".join(sets) + "\n" + mean + "\n" + "\n".join(molecules) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a shipped name or an artifact path")
    parser.add_argument("files", nargs="*", help=f"held-out extxyz files (default: {' '.join(SETS)})")
    args = parser.parse_args()
    print(tables(args.model, tuple(args.files) or SETS), end="")


if __name__ == "__main__":
    main()
