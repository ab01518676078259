"""Re-record the structure an artifact stands for, from the training data of its config.

Tools start from the structure a model records when the user names none (`mlffd-validate nve`,
`make demo`). Training now records its data's representative cell
(:func:`mlffd.representative.pick_structure`: the most common periodic composition and size, its
lowest energy per atom); students trained before recorded their largest periodic frame, on
silicon a defect cell. This writes the artifact again with the new record; its module, weights
and every other field are unchanged (:func:`mlffd.artifact.with_metadata`), so are its numbers.
Run from the repository root, e.g. for the shipped students (each with the config it was
fine-tuned with last):
    python examples/si/record_structure.py mlffd/registry_models/tiny.mlffd.pt examples/si/finetune/tiny-eos.yaml
then update the file's sha256 in mlffd/registry_models/registry.json.
"""

from __future__ import annotations

import argparse

from mlffd.artifact import read_metadata, with_metadata
from mlffd.data import read_frames
from mlffd.representative import pick_structure, structure_record
from mlffd.training.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="the artifact to rewrite in place")
    parser.add_argument("config", help="the training config whose train files the record is picked from")
    args = parser.parse_args()
    frames = [a for path in load_config(args.config).train for a in read_frames(path)]
    atoms = pick_structure(frames)
    before = read_metadata(args.artifact).get("structure") or {"numbers": []}
    with_metadata(args.artifact, args.artifact, structure=structure_record(atoms))
    print(f"{args.artifact}: structure {len(before['numbers'])} -> {len(atoms)} atoms "
          f"({atoms.get_volume() / len(atoms):.3f} A^3/atom, cell {atoms.cell.lengths().round(3).tolist()} A)")


if __name__ == "__main__":
    main()
