"""Cost of the short-range prior: the same scripted student with and without it, one thread,
rattled diamond Si of 512 and 4,096 atoms with no contact inside the prior's reach (the common
MD step). Ratios within one run; prints one line per model and size."""

from __future__ import annotations

import time

import torch

from mlffd.testing import model_inputs, random_student, silicon


def seconds_per_call(fn, calls: int, warm: int = 3) -> float:
    for _ in range(warm):  # TorchScript optimises during its first calls
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    torch.set_num_threads(1)
    for name in ("ultra-tiny", "tiny"):
        for reps in (4, 8):
            # 1.9 Å: below the rattled crystal's bonds, as training sets it from its data
            model, config = random_student(name, dtype=torch.float32, repulsion_outer=1.9)
            scripted = torch.jit.script(model.eval())
            atoms = silicon(reps, rattle=0.05)
            inputs = model_inputs(atoms, torch.float32, config.cutoff)
            best = {True: float("inf"), False: float("inf")}
            for _ in range(3):  # interleaved repeats: drifts of the machine hit both alike
                for on in (True, False):
                    scripted.use_repulsion = on
                    best[on] = min(best[on], seconds_per_call(lambda: scripted(*inputs), 10 if reps == 4 else 3))
            print(f"{name:10s} {len(atoms):5d} atoms: with prior {best[True] * 1e3:7.2f} ms, without "
                  f"{best[False] * 1e3:7.2f} ms, ratio {best[True] / best[False]:.3f}", flush=True)


if __name__ == "__main__":
    main()
