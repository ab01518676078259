"""md_validation: does a student potential behave like its teacher in molecular dynamics?

Library functions behind the ``mlffd-validate`` CLI. Every function takes plain ASE
calculators, so any potential can be validated against any other; mlffd is used only through
:class:`mlffd.DistilledCalculator`, :mod:`mlffd.registry` and ``mlffd.teachers.load_teacher``.

Modules (each owns one thing):

- :mod:`md_validation.units` — time strings (``50ps``, ``500fs``) and unit constants
- :mod:`md_validation.inputs` — models, teachers and the built-in structures
- :mod:`md_validation.md` — running and caching MD (the engine interface and the ASE engine)
- :mod:`md_validation.lammps_engine` — the same MD stages in LAMMPS with ``pair_style mlffd``
- :mod:`md_validation.nve` — NVE energy drift
- :mod:`md_validation.rdf` — partial RDFs (MDAnalysis ``InterRDF``) and the RDF error
- :mod:`md_validation.forces` — force/energy/stress parity metrics
- :mod:`md_validation.structure_metrics` — bond angles, MSD/diffusion, stability
- :mod:`md_validation.compare` — teacher vs student MD comparison
- :mod:`md_validation.plots`, :mod:`md_validation.report` — figures and HTML/JSON/Markdown
"""

from __future__ import annotations

__all__: list[str] = []
