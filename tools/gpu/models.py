"""The shipped students as artifacts this torch loads (GPU check machine helper).

Prints a comma-separated list for ``mlffd bench --models``: the shipped name when its
TorchScript archive loads under this torch, else a re-export from the portable weights in
``.gpu/portable`` (written by ``tools/gpu/prepare.sh``), compiled by this torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mlffd.artifact import load
from mlffd.models import ModelConfig, build, export_student
from mlffd.registry import resolve

names = sys.argv[1:] or ["ultra-tiny", "tiny", "original"]
usable = []
for name in names:
    try:
        load(resolve(name))
        usable.append(name)
    except Exception as exc:  # noqa: BLE001 - any load failure falls back to the re-export
        print(f"{name}: shipped archive does not load under torch {torch.__version__} ({exc}); re-exporting", file=sys.stderr)
        d = torch.load(Path(".gpu/portable") / f"{name}.pt", weights_only=False)
        config = ModelConfig.from_dict(d["config"])
        model = build(config, getattr(torch, d["dtype"]))
        model.load_state_dict(d["state_dict"])
        Path(".gpu/models").mkdir(parents=True, exist_ok=True)
        usable.append(str(export_student(model.eval(), config, Path(".gpu/models") / f"{name}.mlffd.pt", **d["keep"])))
print(",".join(usable))
