"""How a student's stress follows its teacher's on strained diamond: the least-squares slope of
student against teacher stress, for the pressure (mean normal stress) and for the deviatoric
normal stress (each normal component minus the pressure), over the ``strained`` frames of
data/si-elastic (64-atom diamond under random strains up to +-1.5 %, teacher-labelled).

A slope of 1 means the same response. In diamond a volume-conserving tetragonal strain leaves
every bond length unchanged to first order and changes only bond angles, so the deviatoric slope
measures the angular stiffness behind C' = (C11 - C12) / 2.

usage: python tools/stress_response.py MODEL [MODEL...]   (shipped names or artifact paths)
"""

from __future__ import annotations

import sys

import numpy as np
from ase.io import read

from md_validation.units import EV_PER_A3_TO_GPA
from mlffd.calculator import DistilledCalculator

FILES = ("data/si-elastic/train.extxyz.xz", "data/si-elastic/test.extxyz.xz")


def main(models: list[str]) -> None:
    frames = [a for f in FILES for a in read(f, ":") if a.info.get("config_type") == "strained"]
    teacher = np.array([a.get_stress() for a in frames]) * EV_PER_A3_TO_GPA
    for model in models:
        calc = DistilledCalculator(model)
        student = []
        for a in frames:
            b = a.copy()
            b.calc = calc
            student.append(b.get_stress())
        student = np.array(student) * EV_PER_A3_TO_GPA
        p_t, p_s = teacher[:, :3].mean(1), student[:, :3].mean(1)
        dev_t, dev_s = teacher[:, :3] - p_t[:, None], student[:, :3] - p_s[:, None]
        print(f"{model}: {len(frames)} strained frames; slope student/teacher: pressure {np.polyfit(p_t, p_s, 1)[0]:.3f}, "
              f"deviatoric normal {np.polyfit(dev_t.ravel(), dev_s.ravel(), 1)[0]:.3f}, "
              f"shear {np.polyfit(teacher[:, 3:].ravel(), student[:, 3:].ravel(), 1)[0]:.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
