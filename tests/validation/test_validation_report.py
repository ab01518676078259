"""md_validation.report and compare: every figure in the HTML, every metric in the JSON, MD reused."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from matplotlib.figure import Figure

from md_validation import report
from md_validation.compare import CompareSettings, compare
from md_validation.md import AseEngine
from md_validation.structure_metrics import StabilityCriteria
from mlffd import DistilledCalculator
from mlffd.testing import random_artifact

FIGURES = ("rdf", "bond_angles", "msd", "thermo", "nve_energy", "stability_rdf", "stability_distance")
RUN_METRICS = ("rdf", "angle_cutoff_A", "mean_bond_angle_deg", "msd_final_A2", "D_A2_per_ps", "D_cm2_per_s",
               "temperature_K_mean", "temperature_K_std", "pressure_GPa_mean", "pressure_GPa_std", "stability",
               "nve", "speed", "completed", "cached", "trajectories")
COMPARISON = ("rdf_error", "rdf_error_mean", "angle_distribution_error", "temperature_K_mean_difference",
              "pressure_GPa_mean_difference", "D_A2_per_ps_difference", "speedup")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _figure() -> bytes:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return report.figure_png(fig)


def test_html_embeds_every_figure(tmp_path):
    figs = {"one": _figure(), "two": _figure()}
    sections = [report.Section("A", text="PASS", metrics={"x": 1.0, "nested": {"y": float("nan")}}, figures=figs),
                report.Section("B", metrics={"z": [1, 2, 3]}, figures={"three": _figure()})]
    html = report.write_html("t", sections, tmp_path / "r.html").read_text()
    for name in ("one", "two", "three"):
        match = re.search(rf'id="fig-{name}"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
        assert match, name
        assert base64.b64decode(match.group(1))[:4] == b"\x89PNG"
    assert "nested.y" in html and "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_json_is_strict():
    data = {"a": np.float64(1.5), "b": float("nan"), "c": np.arange(3), "d": {"e": np.int64(2), "f": np.bool_(True)}}
    out = report.jsonable(data)
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": 1.5, "b": None, "c": [0, 1, 2], "d": {"e": 2, "f": True}}


def _settings():
    return CompareSettings(temperature_K=400.0, time_fs=240.0, equilibration_fs=60.0, nve_fs=80.0, dt_fs=2.0,
                           interval=5, r_max=5.0, nbins=100, stability=StabilityCriteria(window_fs=60.0, r_max=5.0, nbins=100))


def test_compare_teacher_with_itself(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    m = compare(cu, AseEngine(EMT()), AseEngine(EMT()), "emt", "emt-again", _settings(), tmp_path, progress=False)
    comp = m["comparison"]
    assert comp["rdf_error"]["Cu-Cu"]["mean"] == pytest.approx(0.0, abs=1e-12)  # same start, thermostat and seed
    assert comp["angle_distribution_error"] == pytest.approx(0.0, abs=1e-12)
    assert comp["temperature_K_mean_difference"] == pytest.approx(0.0, abs=1e-9)
    for name in ("teacher", "student"):
        run = m["runs"][name]
        assert run["completed"] and run["stability"]["stable"], run["stability"]
        assert run["stability"]["stable_time_ps"] == pytest.approx(0.24)
        assert abs(run["nve"]["drift_meV_per_atom_per_ps"]) < 5.0
        assert run["rdf"]["Cu-Cu"]["coordination"] == pytest.approx(12.0, abs=0.5)


def test_compare_report_and_cache(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    path = random_artifact(tmp_path / "cu.mlffd.pt", "ultra-tiny", dtype=torch.float64, elements=("Cu",))
    student = DistilledCalculator(path)
    m = compare(cu, AseEngine(EMT()), AseEngine(student), "emt", "random-cu", _settings(), tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name in ("teacher", "student"):
        missing = [k for k in RUN_METRICS if k not in saved["runs"][name]]
        assert not missing, (name, missing)
        for key in ("stable", "stable_time_ps", "reason", "window_rdf_error", "min_distance_A"):
            assert key in saved["runs"][name]["stability"]
        for key in ("s_per_step", "us_per_atom_step"):
            assert saved["runs"][name]["speed"][key] > 0
        for key in ("drift_meV_per_atom_per_ps", "fluctuation_meV_per_atom", "max_deviation_meV_per_atom"):
            assert key in saved["runs"][name]["nve"]
    assert all(k in saved["comparison"] for k in COMPARISON)
    assert saved["comparison"]["rdf_error"]["Cu-Cu"]["mean"] > 0.05  # a random student is not EMT
    html = (tmp_path / "out" / "report.html").read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in html, name
        assert (tmp_path / "out" / "figures" / f"{name}.png").exists()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| metric | teacher | student |" in summary and "RDF error" in summary
    assert not saved["runs"]["student"]["cached"]
    # second run with the same settings: no MD redone, same numbers
    again = compare(cu, AseEngine(EMT()), AseEngine(student), "emt", "random-cu", _settings(), tmp_path / "out", progress=False)
    assert again["runs"]["teacher"]["cached"] and again["runs"]["student"]["cached"]
    assert math.isclose(again["comparison"]["rdf_error_mean"], m["comparison"]["rdf_error_mean"])
    trajs = sorted(p.name for p in (tmp_path / "out" / "md").glob("*.traj"))
    assert len(trajs) == 4 and all(re.match(r"(teacher|student)-(nvt|nve)-[0-9a-f]{12}\.traj", t) for t in trajs)
