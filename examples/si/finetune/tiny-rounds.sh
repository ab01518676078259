#!/usr/bin/env bash
# The tiny shipped before the third active loop (examples/si/active-phases.yaml), from its fourth
# generation: six fine-tuning rounds (tiny-minima{,2,...,6}.yaml),
# each trained from the previous round's calibrated student and then calibrated on its own training
# files (notes-tiny.md, "A false minimum the loop found"). The teacher-labelled frames of every
# round are committed under data/, so this needs no teacher. Run from the repository root after
# `make setup`; about an hour on 2 cores. A step whose output exists is skipped, and an
# interrupted training continues from its checkpoint.
#
#   examples/si/finetune/tiny-rounds.sh   # -> runs/si/finetune/tiny-minima6-cal.mlffd.pt
set -euo pipefail
BIN=${BIN:-.venv/bin}
F=runs/si/finetune
mkdir -p "$F"
[ -f "$F/tiny-gen4.mlffd.pt" ] || git show 8e7b79f:mlffd/registry_models/tiny.mlffd.pt > "$F/tiny-gen4.mlffd.pt"
for R in "" 2 3 4 5 6; do
  CONFIG=examples/si/finetune/tiny-minima$R.yaml
  RUN=$F/tiny-minima$R
  [ -f "$RUN/tiny.mlffd.pt" ] || "$BIN/mlffd" train "$CONFIG" --resume
  if [ ! -f "$F/tiny-minima$R-cal.mlffd.pt" ]; then
    # The round's own training files, as its config resolves them, relative to the repository root.
    REFIT=$("$BIN/python" -c 'import os, sys
from mlffd.training.config import load_config
print(" ".join("--refit " + os.path.relpath(f) for f in load_config(sys.argv[1]).train))' "$CONFIG")
    # shellcheck disable=SC2086  # REFIT is a list of options
    "$BIN/mlffd" calibrate "$RUN/tiny.mlffd.pt" $REFIT --data data/si-coverage/test.extxyz.xz \
      --out "$F/tiny-minima$R-cal.mlffd.pt"
  fi
done
