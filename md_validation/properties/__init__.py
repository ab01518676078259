"""``mlffd-validate properties``: the physical properties a potential is judged by (equations of
state of competing phases, elastic constants, phonons, point defects, surfaces, short-range
repulsion, liquid and hot solid), for molecules geometry, vibrations, torsion profiles and
conformer energies, and for molecular crystals the cell and the lattice energy, computed with a
teacher and a student side by side.

One module per section (``eos``, ``elastic``, ``phonons``, ``defects``, ``surfaces``,
``short_range``, ``liquid``; ``geometry``, ``vibrations``, ``torsions``, ``conformers`` over
the minima of ``molecules``; ``molecular_crystal``), run by :func:`run_properties`; see
``runner`` for the contract a section module follows.
"""

from md_validation.properties.config import (CRYSTAL_SECTIONS, MOLECULAR_CRYSTAL_SECTIONS, MOLECULAR_SECTIONS, SECTIONS,
                                              PropertiesConfig, Tolerances)
from md_validation.properties.records import PropertyRecord
from md_validation.properties.runner import PropertiesResult, Side, run_properties
from md_validation.properties.system import System, element_system, molecule_system, structures_system

__all__ = ["SECTIONS", "CRYSTAL_SECTIONS", "MOLECULAR_SECTIONS", "MOLECULAR_CRYSTAL_SECTIONS", "molecule_system", "PropertiesConfig", "Tolerances", "PropertyRecord", "PropertiesResult", "Side",
           "run_properties", "System", "element_system", "structures_system"]
