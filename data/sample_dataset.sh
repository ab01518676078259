#!/bin/bash
# Produce (or resume) a dataset of one sampling config: DATA_DIR/{train,test}.extxyz, compressed
# to .xz after every call (the committed copies hold the finished trajectories; progress.jsonl
# records them). Resumable: re-running continues after the last finished trajectory, also from a
# fresh clone (the .xz files are unpacked first when the raw files are missing).
#   data/sample_dataset.sh DATA_DIR CONFIG      (from anywhere; paths relative to the repository root)
set -u
[ $# -eq 2 ] || { echo "usage: $0 DATA_DIR CONFIG" >&2; exit 2; }
dir=$1 config=$2
cd "$(dirname "$0")/.." || exit 1
. .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
for f in train test; do
  [ -f "$dir/$f.extxyz" ] || [ ! -f "$dir/$f.extxyz.xz" ] || xz -dk "$dir/$f.extxyz.xz"
done
mlffd sample "$config"
status=$?
python -c "import sys; from mlffd.sampling import snapshot; print(snapshot(sys.argv[1], compress='xz'))" "$dir"
exit $status
