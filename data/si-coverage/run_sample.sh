#!/bin/bash
# Produce (or resume) the silicon coverage dataset (examples/si/sample-coverage.yaml, 7net-0):
# data/si-coverage/{train,test}.extxyz, compressed to .xz after every call (the committed copies
# hold the finished trajectories; progress.jsonl records them).
# Resumable: re-running continues after the last finished trajectory, also from a fresh clone
# (the .xz files are unpacked first when the raw files are missing).
#   nohup data/si-coverage/run_sample.sh > /tmp/si-coverage.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 1
. .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
for f in train test; do
  [ -f data/si-coverage/$f.extxyz ] || [ ! -f data/si-coverage/$f.extxyz.xz ] || xz -dk data/si-coverage/$f.extxyz.xz
done
mlffd sample examples/si/sample-coverage.yaml
status=$?
python -c "from mlffd.sampling import snapshot; print(snapshot('data/si-coverage', compress='xz'))"
exit $status
