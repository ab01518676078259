"""Independent reference potentials written against the artifact contract (docs/artifact.md).

They let the engines (ASE calculator, LAMMPS ``pair_style mlffd``) be checked against
implementations that no one here wrote, e.g. LAMMPS' own ``pair_style sw``.
"""
