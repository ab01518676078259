#!/usr/bin/env bash
# The measurements in the model cards of the shipped silicon students (docs/models/*.md), for
# one student (default: all three). Run from the repository root after `make setup`:
#
#   examples/si/validate-shipped.sh tiny            # ~15-30 min on 2 cores (teacher properties cached)
#
# Writes runs/validate/NAME/{properties,hot-md,forces,trust}/ and then the card:
#   - mlffd-validate properties against 7net-0 (EOS of ten phases, elastic, phonons, defects,
#     surfaces, short range, liquid and hot solid);
#   - hot MD: 216-atom diamond, 1 ps Langevin at 3000 K then 10 ps NVE, seeds 0-4, ASE and LAMMPS;
#   - uncertainty calibration on held-out frames mixed with out-of-domain ones (data/si-ood).
set -euo pipefail
if [ $# -gt 0 ]; then MODELS=("$@"); else MODELS=(original tiny ultra-tiny); fi
TEACHER=sevennet:7net-0
BIN=${BIN:-.venv/bin}
OUT=runs/validate
mkdir -p "$OUT"
STRUCT=$OUT/si-diamond-216.extxyz
$BIN/python -c "from ase.build import bulk; from ase.io import write; write('$STRUCT', bulk('Si', 'diamond', a=5.43, cubic=True) * (3, 3, 3))"
MIXED=$OUT/si-test-plus-ood.extxyz
$BIN/python -c "from ase.io import read, write; write('$MIXED', read('data/si/test.extxyz.xz', ':') + read('data/si-ood/test.extxyz.xz', ':'))"
for M in "${MODELS[@]}"; do
  D=$OUT/$M
  mkdir -p "$D"
  $BIN/mlffd-validate properties --model "$M" --teacher $TEACHER --liquid-time 0.5ps --hot-time 0.5ps --seeds 3 \
    --out "$D/properties" --quiet || true   # exit 1 = some property outside tolerance: the card shows which
  for ENGINE in ase lammps; do
    for SEED in 0 1 2 3 4; do
      $BIN/mlffd-validate nve --model "$M" --structure "$STRUCT" --temperature 3000 --thermalise 1ps --time 10ps \
        --seed $SEED --engine $ENGINE --out "$D/hot-md/$ENGINE-$SEED" --quiet || true
    done
  done
  $BIN/mlffd-validate forces --model "$M" --data "$MIXED" --out "$D/forces" --quiet || true
  NVE=()
  for f in "$D"/hot-md/*/nve.json; do NVE+=(--nve "$f"); done
  ACTIVE=()  # the students of the active loop of examples/si/distill.yaml carry its record
  case "$M" in tiny|ultra-tiny) ACTIVE=(--active data/si-active/report.json) ;; esac
  NOTES=()  # the students fine-tuned on data/si-elastic say how and why in their card
  [ -f examples/si/finetune/notes-$M.md ] && NOTES=(--notes examples/si/finetune/notes-$M.md)
  $BIN/mlffd card "$M" --data data/si/test.extxyz.xz --teacher $TEACHER --properties "$D/properties/properties.json" \
    "${NVE[@]}" "${ACTIVE[@]}" "${NOTES[@]}" --forces "$D/forces/forces.json"
done
