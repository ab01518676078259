#!/usr/bin/env bash
# The `mlffd-validate trust` table of docs/validation.md for one shipped silicon student (default
# tiny), against 7net-0 with at most 20 teacher calls per job. Run from the repository root after
# examples/si/validate-shipped.sh (which writes the 64-atom start structures):
#
#   examples/si/trust-table.sh tiny          # ~5-10 min on 2 cores
#
# Writes runs/validate/trust/NAME-JOB/{trust.json,trust.html,summary.md}; prints one line per job.
set -euo pipefail
M=${1:-tiny}
BIN=${BIN:-.venv/bin}
V=runs/validate
$BIN/python - <<PY
from ase.build import bulk
from ase.io import read, write
d = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
write("$V/si-diamond-64.extxyz", d)
s = d.copy(); s.set_cell(s.cell * 0.6 ** (1 / 3), scale_atoms=True)
write("$V/si-diamond-60pct.extxyz", s)
liquid = [a for a in read("data/si/test.extxyz.xz", ":") if a.info.get("config_type") == "liquid"]
write("$V/si-liquid-64.extxyz", liquid[0])
PY
run() {  # JOB STRUCTURE TEMPERATURE [extra options]
  local job=$1 structure=$2 temperature=$3; shift 3
  $BIN/mlffd-validate trust --model "$M" --structure "$V/$structure" --temperature "$temperature" --time 2ps \
    --teacher sevennet:7net-0 --teacher-calls 20 --out "$V/trust/$M-$job" --quiet "$@" >/dev/null 2>&1 || true
  echo "$job: $(head -c 400 "$V/trust/$M-$job/summary.md" | tr '\n' ' ')"
}
run 300K si-diamond-64.extxyz 300
run 1200K si-diamond-64.extxyz 1200
run liquid-1800K si-liquid-64.extxyz 1800
run liquid-3400K si-liquid-64.extxyz 3400
run 10GPa-ase si-diamond-64.extxyz 300 --pressure 10
run 10GPa-lammps si-diamond-64.extxyz 300 --pressure 10 --engine lammps
run liquid-6000K si-liquid-64.extxyz 6000
run squeezed-60pct si-diamond-60pct.extxyz 300
