"""Cost of the options that add physics to a student, each against the same student without it:
the ZBL short-range prior (``repulsion``), a 4-head shallow ensemble with its uncertainty
outputs (``ensemble``) and the novelty outputs (``novelty``, also for ``original``, whose
features are widest). Scripted models, one thread, rattled diamond Si of 512 and 4,096 atoms
with no contact inside the prior's reach (the common MD step). Ratios within one run,
interleaved repeats; prints one line per option, model and size.

    python tools/option_cost.py [OPTION ...]      # default: all three"""

from __future__ import annotations

import sys
import time

import torch

from mlffd.models import preset
from mlffd.testing import model_inputs, random_student, silicon


def seconds_per_call(fn, calls: int, warm: int = 3) -> float:
    for _ in range(warm):  # TorchScript optimises during its first calls
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def pair(name: str, option: str):
    """The student with the option and without it (same weights where they share them)."""
    if option == "repulsion":
        # 1.9 Å: below the rattled crystal's bonds, as training sets it from its data
        model, config = random_student(name, dtype=torch.float32, repulsion_outer=1.9)
        with_it = torch.jit.script(model.eval())
        without = torch.jit.script(model.eval())
        without.use_repulsion = False
        return with_it, without, config
    if option == "novelty":  # a unit whitening: the cost does not depend on the reference's values
        model, config = random_student(name, dtype=torch.float32)
        with torch.no_grad():
            model.novelty_whiten.copy_(torch.eye(config.features).expand_as(model.novelty_whiten))
        model.use_novelty = True
        with_it = torch.jit.script(model.eval())
        without = torch.jit.script(model.eval())
        without.use_novelty = False
        return with_it, without, config
    with_it, config = random_student(preset(name, ensemble=4), dtype=torch.float32)
    without, _ = random_student(name, dtype=torch.float32)
    return torch.jit.script(with_it.eval()), torch.jit.script(without.eval()), config


def main() -> None:
    torch.set_num_threads(1)
    options = sys.argv[1:] or ["repulsion", "ensemble", "novelty"]
    unknown = set(options) - {"repulsion", "ensemble", "novelty"}
    if unknown:
        raise SystemExit(f"option_cost.py: unknown option(s) {sorted(unknown)}; expected repulsion, ensemble, novelty")
    for option in options:
        for name in ("ultra-tiny", "tiny") + (("original",) if option == "novelty" else ()):
            for reps in (4, 8):
                with_it, without, config = pair(name, option)
                inputs = model_inputs(silicon(reps, rattle=0.05), torch.float32, config.cutoff)
                best = {True: float("inf"), False: float("inf")}
                for _ in range(3):  # interleaved repeats: drifts of the machine hit both alike
                    for on, model in ((True, with_it), (False, without)):
                        best[on] = min(best[on], seconds_per_call(lambda: model(*inputs), 10 if reps == 4 else 3))
                n = inputs[0].shape[0]
                print(f"{option:9s} {name:10s} {n:5d} atoms: with {best[True] * 1e3:7.2f} ms, without "
                      f"{best[False] * 1e3:7.2f} ms, ratio {best[True] / best[False]:.3f}", flush=True)


if __name__ == "__main__":
    main()
