"""Cost of a shipped student's uncertainty, CPU or CUDA: the student (a shallow ensemble whose
heads give the uncertainty outputs) against its single-head twin (one readout whose last layer is
the heads' mean: the same energies and forces, no uncertainty), in one run, interleaved.

Three ways a user pays for it, each ``with / without``:
- ``artifact``: the TorchScript module's call (energy, forces, virial, uncertainty outputs);
- ``calculator``: ``DistilledCalculator(uncertainty=True)`` against the twin's plain calculator
  along an MD walk (energy, forces, stress per step);
- ``lammps``: ``pair_style mlffd ... uncertainty 100 action warn every 1`` (per-atom uncertainty
  gathered every step) against the twin's plain ``pair_style mlffd``, 1 rank.

usage: python tools/uncertainty_cost.py [--device cpu|cuda] [--models tiny,...] [--sizes 4096,...]
       [--ways artifact,calculator,lammps] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from mlffd.bench.workers import run_worker
from mlffd.models import build, export_like, load_student
from mlffd.registry import resolve


def single_head_twin(path: str, dst: Path) -> Path:
    """Export the student at ``path`` with its ensemble heads replaced by their mean (one head)."""
    model, config, meta = load_student(path)
    if config.ensemble < 2:
        raise ValueError(f"{path} has no ensemble heads")
    twin_config = type(config).from_dict({**config.to_dict(), "ensemble": 0})
    twin = build(twin_config, next(model.parameters()).dtype)
    state = model.state_dict()
    last = max(int(k.split(".")[2]) for k in state if k.startswith("readout.net."))
    for end in ("weight", "bias"):  # the energy is the heads' mean, linear in the last layer
        key = f"readout.net.{last}.{end}"
        state[key] = state[key].mean(0, keepdim=True)
    twin.load_state_dict(state)
    meta = {k: v for k, v in meta.items() if k != "uncertainty"}
    return Path(export_like(twin.eval(), twin_config, meta, dst))


def case(way: str, path: str, atoms: int, device: str, uncertainty: bool, workdir: Path) -> dict:
    common = {"path": path, "atoms": atoms, "device": device, "threads": 4 if device == "cuda" else 1}
    if way == "artifact":
        return {**common, "method": "artifact", "repeats": 3, "warmup": 3, "min_time": 0.3}
    if way == "calculator":
        return {**common, "method": "calculator", "repeats": 3, "warmup": 3, "min_time": 0.3, "uncertainty": uncertainty}
    return {**common, "method": "lammps", "pair": "mlffd", "ranks": 1, "steps": 20, "warmup_steps": 5, "repeats": 3,
            "timeout": 120, "workdir": str(workdir / f"lmp-{atoms}-{uncertainty}"),
            "pair_options": "uncertainty 100 action warn every 1" if uncertainty else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--models", default="ultra-tiny,tiny,original")
    p.add_argument("--sizes", default="512,4096")
    p.add_argument("--ways", default="artifact,calculator,lammps")
    p.add_argument("--repeats", type=int, default=3, help="interleaved with/without pairs per case")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in a.models.split(","):
            path = str(resolve(name))
            twin = str(single_head_twin(path, work / f"{Path(name).stem}-single-head.mlffd.pt"))
            for way in a.ways.split(","):
                for n in (int(s) for s in a.sizes.split(",")):
                    us = {True: [], False: []}
                    try:
                        for _ in range(a.repeats):  # interleaved: drifts of the machine hit both alike
                            for on in (True, False):
                                res = run_worker(case(way, path if on else twin, n, a.device, on, work))
                                us[on].append(statistics.median(res["samples_us"]))
                    except Exception as exc:  # noqa: BLE001 - one failing case is reported, the rest still run
                        print(f"{name:10s} {way:10s} {n:7d} atoms: FAILED {type(exc).__name__}: {str(exc)[-300:]}", flush=True)
                        continue
                    w, wo = min(us[True]), min(us[False])
                    rows.append({"model": name, "way": way, "atoms": n, "device": a.device, "with_us": us[True],
                                 "without_us": us[False], "ratio": w / wo})
                    print(f"{name:10s} {way:10s} {n:7d} atoms {a.device}: with {w:8.4f}, without {wo:8.4f} us/atom-step, "
                          f"ratio {w / wo:.3f}", flush=True)
    if a.out:
        a.out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
