"""``mlffd-validate properties``: the physical properties a potential is judged by (equations of
state of competing phases, elastic constants, phonons, point defects, surfaces, short-range
repulsion, liquid and hot solid), computed with a teacher and a student side by side.

One module per section (``eos``, ``elastic``, ``phonons``, ``defects``, ``surfaces``,
``short_range``, ``liquid``), run by :func:`run_properties`; see ``runner`` for the contract a
section module follows.
"""

from md_validation.properties.config import SECTIONS, PropertiesConfig, Tolerances
from md_validation.properties.records import PropertyRecord
from md_validation.properties.runner import PropertiesResult, Side, run_properties
from md_validation.properties.system import System, element_system, structures_system

__all__ = ["SECTIONS", "PropertiesConfig", "Tolerances", "PropertyRecord", "PropertiesResult", "Side",
           "run_properties", "System", "element_system", "structures_system"]
