#!/bin/bash
# Produce (or resume) the silicon elastic and equation-of-state dataset (examples/si/sample-elastic.yaml, 7net-0):
# data/si-elastic/{train,test}.extxyz, compressed to .xz after every call (the committed copies
# hold the finished trajectories; progress.jsonl records them).
# Resumable: re-running continues after the last finished trajectory, also from a fresh clone
# (the .xz files are unpacked first when the raw files are missing).
#   nohup data/si-elastic/run_sample.sh > /tmp/si-elastic.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 1
. .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
for f in train test; do
  [ -f data/si-elastic/$f.extxyz ] || [ ! -f data/si-elastic/$f.extxyz.xz ] || xz -dk data/si-elastic/$f.extxyz.xz
done
mlffd sample examples/si/sample-elastic.yaml
status=$?
python -c "from mlffd.sampling import snapshot; print(snapshot('data/si-elastic', compress='xz'))"
exit $status
