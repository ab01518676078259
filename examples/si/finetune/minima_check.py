"""The active loop's minimum check (mlffd.active.minima) on a silicon student's interstitial relaxations, by 7net-0.

Starts as in student_relax_paths.py: the 64-atom diamond cell (data/si-interstitials' lattice
constant) with one atom added at a random open site (``interstitial_point(..., "open")``, which
includes the hexagonal site; ``--extra 2``: two atoms, one after the other), every atom rattled
by 0.03 Å. The student relaxes each start (BFGS, the active loop's default fmax and step limit;
positions only, or with ``--cell`` positions and cell through ``FrechetCellFilter``, as the loop's
relaxations do); 7net-0 checks every converged end and descends from the false ones (the loop's
default threshold and descent length; with the cell too under ``--cell``).
Prints one line per relaxation and the count of false minima. ``--out FILE`` writes what the
teacher labelled as the active loop would add it (checked ends and descent frames, ``config_type``
``active_*``): training data from starts drawn with another ``--seed`` than the check's default.
``--path-images N`` adds, for every end the check calls false, 7net-0's relaxation of that end
to convergence and N straight-line images from the student's end to 7net-0's (positions and
cell), labelled (``config_type`` ``active_path``): the way down the student puts a barrier on,
where the check's descent of 30 calls stops part-way.
Run from the repository root:
    python examples/si/finetune/minima_check.py original 12
    python examples/si/finetune/minima_check.py tiny 12 --cell --extra 2
    python examples/si/finetune/minima_check.py ultra-tiny 48 --seed 7 --out runs/si/minima-ultra-tiny/train.extxyz
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS

from student_relax_paths import TEACHER, labelled, lattice_constant, open_site_start  # this directory: the same starts

from mlffd.active import ActiveConfig
from mlffd.active.minima import check_minima, minima_frames
from mlffd.calculator import DistilledCalculator
from mlffd.sampling.frames import sane_frame
from mlffd.sampling.relax import cell_filter_quiet
from mlffd.teachers import load_teacher, teacher_info


def path_frames(end: Atoms, teacher, cell: bool, images: int, fmax: float, sha: str | None, max_force: float) -> list[Atoms]:
    """7net-0's relaxation of a false ``end`` (at most 300 steps) and ``images`` straight-line
    images from ``end`` to where it arrives (the last is 7net-0's end), labelled by 7net-0.
    A teacher that fails on the way loses only this end's path (one line says so); a label that is
    not finite or has a force component above ``max_force`` is dropped, as the loop drops it."""
    source = end.info["active_source"]
    work = end.copy()
    work.calc = teacher
    try:
        with cell_filter_quiet():
            BFGS(FrechetCellFilter(work) if cell else work, logfile=None).run(fmax=fmax, steps=300)
        out = []
        for i, t in enumerate(np.linspace(0.0, 1.0, images + 1)[1:]):
            image = Atoms(numbers=end.numbers, positions=(1 - t) * end.positions + t * work.positions,
                          cell=(1 - t) * end.cell[:] + t * work.cell[:], pbc=True)
            out.append(labelled(image, teacher, f"path-{source}", i + 1, 0, sha or "", config_type="active_path"))
    except Exception as exc:  # noqa: BLE001 -- any teacher failure: this path is lost, the check's labels are not
        print(f"path-{source}: no path frames, 7net-0 failed on the way ({type(exc).__name__}: {exc})")
        return []
    kept = [f for f in out if sane_frame(f, max_force)]
    if len(kept) < len(out):
        print(f"path-{source}: {len(out) - len(kept)} of {len(out)} path frames dropped (non-finite or above {max_force} eV/A)")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a shipped name or an artifact path")
    parser.add_argument("starts", type=int, help="number of relaxations")
    parser.add_argument("--seed", type=int, default=20261206, help="draws the starts (the default: the check's own)")
    parser.add_argument("--out", help="write the labelled frames here (extxyz)")
    parser.add_argument("--cell", action="store_true", help="relax the cell too (student and teacher)")
    parser.add_argument("--extra", type=int, default=1, help="atoms added at open sites (2: di-interstitials)")
    parser.add_argument("--path-images", type=int, default=0,
                        help="with --out: label N images from each false end to 7net-0's relaxed end")
    args = parser.parse_args()
    if args.starts < 1 or args.extra < 1:
        parser.error("starts and --extra must be at least 1")
    if args.path_images < 0 or (args.path_images and not args.out):
        parser.error("--path-images must be at least 0 and needs --out")
    host = bulk("Si", "diamond", a=lattice_constant(), cubic=True) * (2, 2, 2)
    student, c = DistilledCalculator(args.model), ActiveConfig()
    rng = np.random.default_rng(args.seed)
    frames, runs = [], []
    for k in range(args.starts):
        atoms = open_site_start(host, rng, args.extra)
        atoms.calc = student
        opt = BFGS(FrechetCellFilter(atoms) if args.cell else atoms, logfile=None)
        with cell_filter_quiet():
            converged = bool(opt.run(fmax=c.relax_fmax, steps=c.relax_steps))
        end = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        end.info.update(active_source=f"relax-{k}", active_step=int(opt.nsteps))
        frames.append(end)
        runs.append({"run": f"relax-{k}", "kind": "relax", "converged": converged, "stopped": None, "steps": int(opt.nsteps),
                     "student_energy": float(atoms.get_potential_energy())})
    with tempfile.TemporaryDirectory() as tmp:
        found, record = check_minima(frames, runs, load_teacher(TEACHER), budget=10_000, false_minimum_force=c.false_minimum_force,
                                 false_minimum_drop=c.false_minimum_drop,
                                 descent_steps=c.descent_steps, relax_fmax=c.relax_fmax, relax_cell=args.cell,
                                 label_max_force=c.label_max_force, journal=Path(tmp) / "minima.jsonl")
    ends = {e["run"]: e for e in record["ends"]}
    for run in runs:
        e = ends.get(run["run"], {})
        print(f"{run['run']}: student {run['steps']} steps, converged {run['converged']}; 7net-0 largest force "
              f"{e.get('teacher_fmax', float('nan')):.3f} eV/A -> {e.get('verdict', 'not checked')}"
              + (f", descent {e['descent_steps']} calls ({e.get('kicks', 0)} kicks), lowest -{e['descent_drop_eV']:.3f} eV"
                 if e.get("verdict") not in ("agrees", None) else ""))
    if args.out:
        sha = teacher_info(TEACHER).get("checkpoint_sha256")
        out = minima_frames(found, {"teacher": TEACHER, **({"teacher_sha256": sha} if sha else {})}, 0)
        if args.path_images:
            teacher = load_teacher(TEACHER)
            false_ends = [frames[k] for k, run in enumerate(runs) if ends.get(run["run"], {}).get("verdict") == "false"]
            out += [f for end in false_ends for f in path_frames(end, teacher, args.cell, args.path_images, c.relax_fmax, sha,
                                                                      c.label_max_force)]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write(args.out, out)
        print(f"{len(out)} labelled frames -> {args.out}")
    starts = f"{args.extra} added atom{'s' if args.extra > 1 else ''}{', cell relaxed' if args.cell else ''}"
    print(f"{args.model} ({starts}): {record['false']} false and {record['shifted']} shifted minima of {record['checked']} checked"
          f"{f' ({u} unresolved)' if (u := record['unresolved']) else ''}; "
          f"{record['teacher_calls']} teacher calls")


if __name__ == "__main__":
    main()
