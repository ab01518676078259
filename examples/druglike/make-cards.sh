#!/bin/bash
# Property tables and model cards of the shipped drug-like students (run from the repository root).
#   examples/druglike/make-cards.sh                 # both students
#   examples/druglike/make-cards.sh druglike-tiny   # one
# GFN2-xTB's results are cached (~/.cache/mlffd/properties or $MLFFD_CACHE): the first student
# costs ~15 min of teacher time (the urea crystal, 128 atoms, about half of it), the second only its own.
set -u
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(druglike-tiny druglike-original)
for m in "${models[@]}"; do
  finetune=()  # a student fine-tuned after its recipe says how (examples/druglike/finetune/)
  [ -f "examples/druglike/card-notes/$m-finetune.md" ] && finetune=(--notes "examples/druglike/card-notes/$m-finetune.md")
  mlffd-validate properties --model "$m" --teacher xtb --molecules examples/druglike/sample-heldout.yaml \
    --molecular-crystal examples/druglike/urea.cif --out "runs/props-$m" --quiet   # exit 1 when a row fails: the table is still written
  mlffd card "$m" --data data/druglike/heldout.extxyz.xz --teacher xtb --targets examples/druglike/targets.json \
    --properties "runs/props-$m/properties.json" --recipe examples/druglike/distill.yaml \
    --heldout-molecules examples/druglike/sample-heldout.yaml \
    --notes examples/druglike/card-notes/common-use.md "${finetune[@]}" --notes "examples/druglike/card-notes/$m.md"
done
