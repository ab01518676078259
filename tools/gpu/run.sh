#!/bin/bash
# CUDA checks and benchmarks of mlffd on a lent GPU machine (Python 3.12 with its own CUDA torch,
# no network). Prepare first, here: tools/gpu/prepare.sh (fills the git-ignored .gpu/), then run
# this on the device machine with .gpu carried:  bash tools/gpu/run.sh OUTDIR
# STAGES="parity students teachers sweep lammps" (the default) picks stages; also: calc (tiny through
# DistilledCalculator, 32,768 and 1,000,000 atoms), students1m (tiny and original at 1,000,000),
# batch (64 x 64-atom cells batched vs one by one, every student) and compiled (tiny through
# DistilledCalculator(compile=True): Inductor's CUDA kernels, 4,096 and 32,768 atoms) and graph
# (the plugin's CUDA parity tests, then 'graph reuse' vs 'graph rebuild' for tiny, 4,096 and 32,768 atoms) and
# uncertainty (CUDA parity of the uncertainty in ASE and LAMMPS, then tools/uncertainty_cost.py: tiny and
# original against their single-head twins through the artifact, DistilledCalculator and LAMMPS).
# Stages, in this order (each with its own time limit, later ones skipped past DEADLINE seconds):
#   setup, CUDA parity tests (ASE), students' cost 4k-1M atoms (artifact + calculator; sizes:
#   STUDENT_SIZES, limit STUDENTS_LIMIT s), LAMMPS pair_style mlffd device cuda (parity tests +
#   cost vs sw), batch, compiled, teachers on the same GPU (sizes: TEACHER_SIZES; 32,768 atoms
#   need ~120 GB, an H200), evaluation block sweep at 1M atoms. Results: OUTDIR/results.tar.gz and OUTDIR/log.txt.
set -u
OUTDIR=${1:-${OUT:-/tmp/mlffd-gpu}}
DEADLINE=${DEADLINE:-450}
mkdir -p "$OUTDIR"
R=/tmp/mlffd-gpu-results
rm -rf "$R" && mkdir -p "$R"
exec > >(tee "$OUTDIR/log.txt") 2>&1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
T0=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
run_for() {  # run_for SECONDS CMD...: bounded by the stage limit and the deadline
  local lim=$1; shift
  local l; l=$(left)
  (( l < lim )) && lim=$l
  if (( lim < 15 )); then echo "SKIPPED (deadline): $*"; return 0; fi
  timeout "$lim" "$@"; local rc=$?
  (( rc != 0 )) && echo "EXIT $rc: $*"
  return 0
}
finish() {
  stage "packing results"
  tar -czf "$OUTDIR/results.tar.gz" -C "$R" . 2>/dev/null
  ls -la "$OUTDIR"
}
trap finish EXIT

stage "setup"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
PFX=/tmp/mlffd-pfx
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$PFX" .gpu/wheels/*.whl || exit 1
PYV=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SITE=$PFX/lib/python$PYV/site-packages
ln -sf liblammps.so.0 "$SITE/lammps/liblammps.so"
export PYTHONPATH=$ROOT:$SITE:$ROOT/tools/gpu/shim PATH=$PFX/bin:/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -c "import torch, ase, vesin; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'threads', torch.get_num_threads())"
# mlffd's fused CPU kernels, built against this torch (artifacts that call them load only with them)
SKBUILD_BUILD_VERBOSE=true python3 -m pip install -v --no-build-isolation --no-deps --no-index --prefix "$PFX" ./kernels > "$R/kernels_build.log" 2>&1 \
  || { tail -20 "$R/kernels_build.log"; exit 1; }
python3 -c "import torch, mlffd.kernels as k; k.load(); print('kernels', torch.ops.mlffd_kernels.isa())"
# A library with libstdc++ linked statically (no libstdc++.so NEEDED, its own __cxa_throw) crashes on
# every error a kernel raises (TORCH_CHECK). This image's /opt/gcc/bin/g++ has no libstdc++.so link,
# so kernels/CMakeLists.txt links the shared runtime by its path; warn if the library is static anyway.
KLIB=$(python3 -c "import mlffd_kernels; print(mlffd_kernels.library_path())")
if ! readelf -d "$KLIB" | grep -q 'libstdc++'; then
  echo "WARNING: $KLIB links libstdc++ statically: kernel errors crash here (CXXFLAGS='${CXXFLAGS:-}' LDFLAGS='${LDFLAGS:-}')"
  grep -E "static-libstdc|-o libmlffd_kernels.so" "$R/kernels_build.log" | head -3
fi
printf '#!/bin/sh\nexec python3 -c "from mlffd.cli.main import cli; cli(prog_name=\\"mlffd\\")" "$@"\n' > "$PFX/bin/mlffd"
chmod +x "$PFX/bin/mlffd"
MODELS=$(python3 tools/gpu/models.py 2> "$R/models.err") || cat "$R/models.err"
cat "$R/models.err"; echo "models: $MODELS"

want() { [[ " ${STAGES:-parity students teachers sweep lammps} " == *" $1 "* ]]; }
stage "plugin build (background)"
(want lammps || want graph || want uncertainty) && ( python3 -m pip install -q --no-build-isolation --no-deps --no-index --prefix "$PFX" ./lammps_plugin > "$R/plugin_build.log" 2>&1; echo "rc=$?" >> "$R/plugin_build.log" ) &
BUILD=$!

stage "CUDA parity (ASE calculator, float64 random students)"
want parity && run_for 60 python3 -m pytest -q -p no:cacheprovider tests/runtime/test_neighbors.py tests/runtime/test_calculator.py -k "(cuda or device or block or neighbors or lists or kernel) and not errors" 2>&1 | tail -5
want uncertainty && run_for 60 python3 -m pytest -q -p no:cacheprovider tests/model/test_uncertainty.py -k cuda 2>&1 | tail -3

B="--device cuda --threads 4 --repeats 3 --warmup 5 --min-time 0.3"
stage "students on the GPU: artifact + DistilledCalculator, 4,096 to 1,000,000 atoms"
want students && run_for "${STUDENTS_LIMIT:-170}" mlffd bench $B --models "$MODELS" --sizes "${STUDENT_SIZES:-4096,32768,262144,1000000}" --no-teachers --no-lammps --no-batch --no-allocator --out "$R/students" | grep -E "µs/atom-step|FAILED|Error"

want calc && run_for 120 mlffd bench $B --min-time 1.0 --models "$(echo "$MODELS" | cut -d, -f2)" --sizes 32768,1000000 --no-teachers --no-lammps --no-batch --no-allocator --out "$R/calc" | grep -E "µs/atom-step|FAILED|Error"

want students1m && run_for 150 mlffd bench $B --models "$(echo "$MODELS" | cut -d, -f2,3)" --sizes 1000000 --no-teachers --no-lammps --no-batch --no-allocator --out "$R/students1m" | grep -E "µs/atom-step|FAILED|Error"

stage "LAMMPS pair_style mlffd device cuda"
wait $BUILD
tail -3 "$R/plugin_build.log"
if (want lammps || want graph || want uncertainty) && grep -q "rc=0" "$R/plugin_build.log"; then
  (want lammps || want graph) && run_for 60 python3 -m pytest -q -p no:cacheprovider tests/lammps/test_lammps_plugin.py -k "cuda or block" 2>&1 | tail -5
  want lammps && run_for 90 mlffd bench lammps --device cuda --threads 1 --repeats 3 --min-time 0.3 --models "$(echo "$MODELS" | cut -d, -f2,3)" --sizes 4096,32768 --ranks 1 --pairs mlffd,sw --out "$R/lammps" | grep -E "µs/atom-step|FAILED|Error"
  # graph reuse (the default on CUDA) against rebuilding the graph every step, same run
  want graph && for spec in 32768:rebuild 32768:reuse 4096:rebuild 4096:reuse; do
    run_for 40 python3 - "$(echo "$MODELS" | cut -d, -f2)" "${spec%%:*}" "${spec##*:}" "$R/graph-${spec%%:*}-${spec##*:}.json" <<'PY'
import json, statistics, sys
from mlffd.bench.workers import run_worker
from mlffd.registry import resolve
model, atoms, mode, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
case = {"method": "lammps", "pair": "mlffd", "path": str(resolve(model)), "atoms": atoms, "ranks": 1, "threads": 1, "steps": 20,
        "warmup_steps": 5, "repeats": 3, "timeout": 35, "device": "cuda", "pair_options": f"graph {mode}", "workdir": f"/tmp/graph-{atoms}-{mode}"}
try:
    res = run_worker(case)
    print(f"{model} LAMMPS cuda {atoms} atoms graph {mode}: {statistics.median(res['samples_us']):.3f} us/atom-step {['%.3f' % s for s in res['samples_us']]}")
except Exception as exc:
    res = {"error": f"{type(exc).__name__}: {str(exc)[-500:]}"}
    print(res["error"])
json.dump({"case": case, "result": res}, open(out, "w"))
PY
  done
fi
stage "uncertainty cost on the GPU: shipped students against their single-head twins"
if want uncertainty; then
  grep -q "rc=0" "$R/plugin_build.log" && run_for 60 python3 -m pytest -q -p no:cacheprovider tests/lammps/test_lammps_plugin.py -k "uncertainty and cuda" 2>&1 | tail -3
  run_for "${UNCERTAINTY_LIMIT:-300}" python3 tools/uncertainty_cost.py --device cuda --models "$(echo "$MODELS" | cut -d, -f2,3)" \
    --sizes "${UNCERTAINTY_SIZES:-4096,32768}" --ways "${UNCERTAINTY_WAYS:-artifact,calculator,lammps}" --repeats "${UNCERTAINTY_REPEATS:-3}" --out "$R/uncertainty.json"
fi
stage "many small structures: 64 x 64-atom cells batched vs one by one"
want batch && run_for 150 mlffd bench $B --models "$MODELS" --no-students --no-teachers --no-lammps --no-allocator --out "$R/batch" | grep -E "µs/atom-step|batch|one-by-one|FAILED|Error"

stage "torch.compile on the GPU (tiny through DistilledCalculator, compile=True)"
want compiled && run_for 150 mlffd bench $B --models "$(echo "$MODELS" | cut -d, -f2)" --sizes 4096,32768 --compiled --no-teachers --no-lammps --no-batch --no-allocator --out "$R/compiled" | grep -E "µs/atom-step|FAILED|Error"

stage "teachers on the same GPU (Orb-v3 random weights, 7net-0), 4,096 and 32,768 atoms"
want teachers && run_for 110 mlffd bench $B --no-students --no-lammps --no-batch --no-allocator --teacher-sizes "${TEACHER_SIZES:-4096,32768}" --out "$R/teachers" | grep -E "µs/atom-step|FAILED|Error"

stage "evaluation block sweep (artifact, 1,000,000 atoms)"
want sweep && for spec in tiny:16384 tiny:262144 tiny:1048576 original:16384 original:262144; do
  name=${spec%%:*}; block=${spec##*:}
  model=$(echo "$MODELS" | tr ',' '\n' | grep -E "(^|/)$name(\.mlffd\.pt)?$" | head -1)
  run_for 40 python3 - "$model" "$block" "$R/sweep-$name-$block.json" <<'PY'
import json, sys
from mlffd.bench.workers import run_worker
from mlffd.registry import resolve
model, block, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
case = {"method": "artifact", "path": str(resolve(model)), "atoms": 1000000, "threads": 4, "repeats": 3, "warmup": 2,
        "min_time": 0.3, "device": "cuda", "block_atoms": block}
try:
    res = run_worker(case)
    import statistics
    print(f"{model} block {block}: {statistics.median(res['samples_us']):.4f} us/atom-step, GPU peak {res['peak_device_mb']:.0f} MB")
except Exception as exc:  # e.g. out of memory: recorded, not fatal
    res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    print(f"{model} block {block}: {res['error']}")
json.dump({"case": case, "result": res}, open(out, "w"))
PY
done

stage "done"
