#!/bin/bash
# Produce (or resume) the silicon dataset: data/si/{train,test}.extxyz, then compress to .xz.
# Resumable: re-running continues after the last finished trajectory (progress.jsonl).
#   nohup data/si/run_sample.sh > data/si/sample.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 1
. .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
for attempt in 1 2 3; do
  if mlffd sample examples/si/sample.yaml; then
    for f in train test; do xz -9 -k -f -T1 data/si/$f.extxyz; done
    echo "DONE $(date -u)"
    exit 0
  fi
  echo "attempt $attempt failed $(date -u)"; sleep 10
done
exit 1
