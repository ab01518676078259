#!/bin/bash
# Produce (or resume) the drug-like datasets labelled by GFN2-xTB: first the training molecules
# (examples/druglike/sample.yaml -> data/druglike/train-run), then the held-out molecules
# (examples/druglike/sample-heldout.yaml -> data/druglike/heldout-run), then the heterocycles
# (examples/druglike/sample-heterocycles.yaml -> data/druglike/heterocycles-run), then more drugs
# (examples/druglike/sample-more-drugs.yaml -> data/druglike/more-drugs-run), ring systems
# (sample-rings.yaml -> rings-run), a second held-out set (sample-heldout2.yaml -> heldout2-run) and
# boxes of hydrogen-bonding molecules (sample-boxes.yaml -> boxes-run) and molecules enumerated from
# building blocks (sample-enumerated.yaml, written by enumerate_molecules.py -> enumerated-run),
# then a third and a fourth held-out set (sample-heldout3.yaml, sample-heldout4.yaml) and a second
# enumerated list (sample-enumerated2.yaml -> enumerated2-run);
# after each, the finished part is compressed to data/druglike/<part>.extxyz.xz (committed).
# Resumable: re-running continues after the last finished trajectory of each run, also from a
# fresh clone (the committed .xz files are unpacked into the run folders first).
#   nohup data/druglike/run_sample.sh > data/druglike/sample.log 2>&1 &
# Arguments name the parts to run (default: all, in this order): train heldout heterocycles more-drugs rings heldout2 boxes enumerated heldout3 heldout4 enumerated2
# PYTHON selects the interpreter (default .venv/bin/python of the repository).
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONWARNINGS=ignore
status=0
declare -A PARTS=([train]=sample.yaml:train [heldout]=sample-heldout.yaml:heldout
                  [heterocycles]=sample-heterocycles.yaml:heterocycles [more-drugs]=sample-more-drugs.yaml:more-drugs
                  [rings]=sample-rings.yaml:rings [heldout2]=sample-heldout2.yaml:heldout2
                  [boxes]=sample-boxes.yaml:boxes [enumerated]=sample-enumerated.yaml:enumerated
                  [heldout3]=sample-heldout3.yaml:heldout3 [heldout4]=sample-heldout4.yaml:heldout4
                  [enumerated2]=sample-enumerated2.yaml:enumerated2)
[ $# -gt 0 ] || set -- train heldout heterocycles more-drugs rings heldout2 boxes enumerated heldout3 heldout4 enumerated2
for run in "$@"; do
  [ -n "${PARTS[$run]}" ] || { echo "run_sample.sh: unknown part '$run' (train, heldout, heterocycles, more-drugs, rings, heldout2, boxes, enumerated, heldout3, heldout4, enumerated2)" >&2; exit 2; }
  IFS=: read -r config file <<< "${PARTS[$run]}"
  dir=data/druglike/$run-run
  mkdir -p "$dir"
  if [ ! -f "$dir/progress.jsonl" ] && [ -f "data/druglike/$run.progress.jsonl" ] && [ -f "data/druglike/$file.extxyz.xz" ]; then
    cp "data/druglike/$run.progress.jsonl" "$dir/progress.jsonl"
    xz -dkc "data/druglike/$file.extxyz.xz" > "$dir/$file.extxyz"
  fi
  "$PYTHON" -m mlffd.cli.main sample "examples/druglike/$config" || status=$?
  "$PYTHON" -c "from mlffd.sampling import load_config, snapshot; print(snapshot('$dir', load_config('examples/druglike/$config'), dest_dir='data/druglike', compress='xz'))"
  cp -f "$dir/progress.jsonl" "data/druglike/$run.progress.jsonl"
  [ $status -eq 0 ] || exit $status
done
exit $status
