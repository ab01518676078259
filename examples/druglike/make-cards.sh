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
  # uncertainty and novelty against the true errors on the blind held-out set, for the card
  mlffd-validate forces --model "$m" --data data/druglike/heldout5.extxyz.xz --out "runs/forces-$m" --quiet
  {  # every held-out set, per set and per molecule, measured now
    echo "## Held-out accuracy on all six sets"
    echo
    echo "\`python examples/druglike/heldout_table.py $m\` (GFN2-xTB frames of 8 drugs per set, MD at 300-800 K;"
    echo "examples/druglike/README.md says which set was chosen before which training data). The card's"
    echo "headline numbers above are the fifth set's, the last chosen before a list of whole drugs was"
    echo "written after looking at the held-out errors; the sixth was drawn at random from that list's candidates."
    echo
    python examples/druglike/heldout_table.py "$m"
  } > "runs/props-$m/heldout.md"
  mlffd card "$m" --data data/druglike/heldout5.extxyz.xz --teacher xtb --targets examples/druglike/targets.json \
    --properties "runs/props-$m/properties.json" --recipe examples/druglike/distill.yaml --forces "runs/forces-$m/forces.json" \
    --heldout-molecules examples/druglike/sample-heldout5.yaml \
    --notes examples/druglike/card-notes/common-use.md --notes "runs/props-$m/heldout.md" "${finetune[@]}" \
    --notes "examples/druglike/card-notes/$m.md"
done
