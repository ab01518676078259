#!/bin/bash
# Produce (or resume) the drug-like datasets labelled by GFN2-xTB. Each part PART is the sampling
# config examples/druglike/sample-PART.yaml (the training molecules: sample.yaml) run in
# data/druglike/PART-run; after each, the finished part is compressed to
# data/druglike/PART.extxyz.xz (committed). Parts, in order: the training molecules, the held-out
# molecules, heterocycles, more drugs, ring systems, a second held-out set, boxes of
# hydrogen-bonding molecules, molecules enumerated from building blocks (written by
# enumerate_molecules.py), a third and a fourth held-out set, the later enumerated lists and the
# calibration set of the ensemble uncertainty (not for training), boxes at other densities, a sixth
# held-out set and a third list of real drugs.
# Resumable: re-running continues after the last finished trajectory of each run, also from a
# fresh clone (the committed .xz files are unpacked into the run folders first).
#   nohup data/druglike/run_sample.sh > data/druglike/sample.log 2>&1 &
# Arguments name the parts to run (default: all, in the order of ORDER below).
# PYTHON selects the interpreter (default .venv/bin/python of the repository).
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONWARNINGS=ignore
status=0
ORDER=(train heldout heterocycles more-drugs rings heldout2 boxes enumerated heldout3 heldout4 enumerated2 heldout5 enumerated3 enumerated4 enumerated5 enumerated6 enumerated7 calibration boxes2 heldout6 drugs3)
[ $# -gt 0 ] || set -- "${ORDER[@]}"
for run in "$@"; do
  [[ " ${ORDER[*]} " == *" $run "* ]] || { echo "run_sample.sh: unknown part '$run' (${ORDER[*]})" >&2; exit 2; }
  config=sample-$run.yaml
  [ "$run" = train ] && config=sample.yaml
  dir=data/druglike/$run-run
  mkdir -p "$dir"
  if [ ! -f "$dir/progress.jsonl" ] && [ -f "data/druglike/$run.progress.jsonl" ] && [ -f "data/druglike/$run.extxyz.xz" ]; then
    cp "data/druglike/$run.progress.jsonl" "$dir/progress.jsonl"
    xz -dkc "data/druglike/$run.extxyz.xz" > "$dir/$run.extxyz"
  fi
  "$PYTHON" -m mlffd.cli.main sample "examples/druglike/$config" || status=$?
  "$PYTHON" -c "from mlffd.sampling import load_config, snapshot; print(snapshot('$dir', load_config('examples/druglike/$config'), dest_dir='data/druglike', compress='xz'))"
  cp -f "$dir/progress.jsonl" "data/druglike/$run.progress.jsonl"
  [ $status -eq 0 ] || exit $status
done
exit $status
