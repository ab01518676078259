"""The property instrument's frame: recipes, settings, records, the teacher cache, the report
files and the CLI's handling of bad input (the sections have their own test files)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from ase.calculators.emt import EMT
from click.testing import CliRunner

from md_validation.cli import cli
from md_validation.properties import PropertiesConfig, Side, Tolerances, element_system, run_properties
from md_validation.properties.cache import ResultCache, cache_key
from md_validation.properties.config import SECTIONS
from md_validation.properties.records import absolute, flag, relative
from md_validation.properties.recipes import PROTOTYPES, nearest_distance, prototype
from md_validation.properties.relax import relax
from md_validation.properties.report import summary_markdown, write_properties_report
from md_validation.properties.runner import PropertiesResult

SPACE_GROUPS = {"diamond": 227, "hex_diamond": 194, "beta_sn": 141, "simple_hexagonal": 191, "bc8": 206, "st12": 96,
                "fcc": 225, "bcc": 229, "hcp": 194, "sc": 221}


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_prototypes_have_their_space_group_and_bond_length(name):
    spglib = pytest.importorskip("spglib")
    atoms = prototype(name, "Si")
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    assert spglib.get_symmetry_dataset(cell, symprec=1e-4).number == SPACE_GROUPS[name]
    assert 2.2 < nearest_distance(atoms) < 2.6  # Si's 2.35 Å bond, stretched for dense phases


def test_element_system_ground_state_from_ase_reference():
    si, cu = element_system("Si"), element_system("Cu", phases=("bcc",))
    assert si.ground == "diamond" and set(si.phases) == set(PROTOTYPES) and si.melting_K == pytest.approx(1687)
    assert cu.ground == "fcc" and set(cu.phases) == {"fcc", "bcc"}
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        element_system("Xx")


def test_relax_emt_copper_to_its_lattice_constant():
    r = relax(prototype("fcc", "Cu"), EMT(), fmax=1e-4)
    assert r.converged and not r.error
    a = r.atoms.cell.lengths()[0]
    # EMT Cu: a0 = 3.5898 Å (minimum of ASE's EMT, independent of our relaxation)
    energies = []
    grid = np.linspace(3.57, 3.61, 41)
    for x in grid:
        at = prototype("fcc", "Cu")
        at.set_cell(np.eye(3) * x, scale_atoms=True)
        at.calc = EMT()
        energies.append(at.get_potential_energy())
    assert a == pytest.approx(grid[int(np.argmin(energies))], abs=1.5e-3)


def test_relax_reports_failure_instead_of_raising():
    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise FloatingPointError("non-finite energy on atom 3")

    r = relax(prototype("fcc", "Cu"), Broken())
    assert not r.converged and math.isnan(r.energy) and "non-finite energy on atom 3" in r.error


def test_records_score_and_fail_missing_values():
    assert absolute("eos", "x", "eV", 1.0, 1.05, 0.1).passed
    assert not absolute("eos", "x", "eV", 1.0, 1.2, 0.1).passed
    assert not absolute("eos", "x", "eV", 1.0, float("nan"), 0.1).passed
    assert absolute("eos", "x", "eV", 1.0, 1.2, None).passed is None
    r = relative("elastic", "C11_GPa", "GPa", 100.0, 94.0, 5.0)
    assert r.error == pytest.approx(-6.0) and not r.passed
    assert not relative("elastic", "x", "GPa", 0.0, 1.0, 5.0).passed  # no relative error to a zero reference
    assert flag("eos", "spurious", False, True).passed is False
    assert flag("eos", "spurious", True, True).passed and flag("eos", "spurious", False, False).passed


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="unknown section"):
        PropertiesConfig(sections=("eos", "magic"))
    with pytest.raises(ValueError, match="eos_points=3"):
        PropertiesConfig(eos_points=3)
    with pytest.raises(ValueError, match="unknown tolerance"):
        Tolerances().with_overrides({"bulk_modulus": 1.0})
    with pytest.raises(ValueError, match="a0_pct=nan"):
        Tolerances().with_overrides({"a0_pct": float("nan")})
    assert Tolerances().with_overrides({"a0_pct": 1}).a0_pct == 1.0


def test_cache_keys_change_only_with_what_a_section_reads():
    c = PropertiesConfig()
    longer_liquid = PropertiesConfig(liquid_time_fs=5000.0)
    assert c.settings("eos") == longer_liquid.settings("eos")
    assert c.settings("liquid") != longer_liquid.settings("liquid")
    assert {s for s in SECTIONS} <= {s for s in SECTIONS if c.settings(s)["section"] == s}
    k = cache_key("emt", "eos", c.settings("eos"), ["a"])
    assert k != cache_key("emt", "eos", c.settings("eos"), ["b"]) and k != cache_key("lj", "eos", c.settings("eos"), ["a"])


def test_cache_reuses_and_recovers_from_a_damaged_entry(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"x": 1.5, "bad": float("nan")}  # noqa: E731
    assert cache.get_or_compute("ab" * 32, compute) == {"x": 1.5, "bad": None}
    assert cache.get_or_compute("ab" * 32, compute) == {"x": 1.5, "bad": None} and len(calls) == 1
    entry = next(tmp_path.rglob("*.json"))
    entry.write_text('{"x": 1.')  # truncated by a crash or a full disk
    with pytest.warns(UserWarning, match=str(entry.name)):
        assert cache.get_or_compute("ab" * 32, compute)["x"] == 1.5
    assert len(calls) == 2 and json.loads(entry.read_text())["x"] == 1.5


def test_two_writers_of_one_entry_do_not_move_each_others_files(tmp_path, monkeypatch):
    """Another run (here: another cache object) finishes the same entry between this run's write
    and its rename, as two students validated side by side do; both get the value, none fails."""
    from pathlib import Path

    key, inner = "cd" * 32, {}
    rename = Path.replace

    def interleaved(self, target):
        if not inner:  # only the outer run's rename lets the other run in first
            inner["started"] = True
            inner["value"] = ResultCache(tmp_path).get_or_compute(key, lambda: {"x": 2.0})
        return rename(self, target)

    monkeypatch.setattr(Path, "replace", interleaved)
    assert ResultCache(tmp_path).get_or_compute(key, lambda: {"x": 2.0}) == {"x": 2.0} == inner["value"]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.json"]


def _fake_result(passed: bool) -> PropertiesResult:
    rows = [relative("elastic", "C11_GPa", "GPa", 100.0, 101.0 if passed else 80.0, 5.0),
            flag("short_range", "short_range_attractive_Si-Si", False, False, note="<script>")]
    return PropertiesResult(rows, {"elastic": {}}, {"elastic": {"teacher": {}, "student": {}}}, {"teacher": "T<b>", "student": "S"})


def test_report_files_and_escaping(tmp_path):
    config = PropertiesConfig(sections=("elastic", "short_range"))
    files = write_properties_report(_fake_result(False), tmp_path, config, {"model": "<i>m</i>"})
    data = json.loads(files["json"].read_text())
    assert data["passed"] is False and data["records"][0]["property"] == "C11_GPa"
    assert set(data["records"][0]) >= {"property", "unit", "teacher", "student", "error", "tolerance", "passed"}
    page = files["html"].read_text()
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert 'class="fail">FAIL' in page
    md = files["markdown"].read_text()
    assert "FAIL: 1 of 2 scored" in md and "| C11_GPa | GPa | 100 | 80 | -20 % | ±5 % | FAIL |" in md
    assert "PASS: all 2 scored" in summary_markdown(_fake_result(True), "t")


def test_runner_caches_the_teacher_not_the_student(tmp_path, monkeypatch):
    """A section module's compute is called once for the teacher across two runs, twice for the student."""
    import types

    from md_validation.properties import runner

    calls = []

    def compute(calc, system, ground, config):
        calls.append(type(calc).__name__)
        atoms = ground.copy()
        atoms.calc = calc
        return {"e": atoms.get_potential_energy() / len(atoms)}

    fake = types.SimpleNamespace(compute=compute, compare=lambda t, s, tol: [absolute("eos", "e", "eV", t["e"], s["e"], 0.01)],
                                 figures=lambda t, s, labels: {}, __file__=__file__)
    monkeypatch.setattr(runner, "section_module", lambda name: fake)

    class Student(EMT):
        pass

    system = element_system("Cu", phases=("fcc",))
    config = PropertiesConfig(sections=("eos",), fmax=0.01)
    for _ in range(2):
        result = run_properties(Side(EMT(), "emt", "emt"), Side(Student(), "student"), system, config,
                                cache=ResultCache(tmp_path), progress=False)
    assert calls == ["EMT", "Student", "Student"] and result.passed and result.cache == {"hits": 2, "misses": 0}


def test_cache_key_follows_the_section_code(tmp_path, monkeypatch):
    """Editing a section's source changes its cache key: old teacher results are not reused."""
    import types

    from md_validation.properties import runner

    source = tmp_path / "section.py"
    real = runner.section_module
    monkeypatch.setattr(runner, "section_module",
                        lambda name: types.SimpleNamespace(__file__=str(source)) if name == "fake" else real(name))
    source.write_text("A = 1\n")
    before = runner.code_version("fake")
    source.write_text("A = 2\n")
    assert runner.code_version("fake") != before
    assert runner.code_version("ground") == runner.code_version("ground")


def test_cli_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    for args, text in ((["--sections", "eos,magic"], "unknown section(s) magic"),
                       (["--tolerance", "a0_pct"], "expected NAME=NUMBER"),
                       (["--tolerance", "nonsense=1"], "unknown tolerance(s) nonsense"),
                       (["--model", str(tmp_path / "none.pt")], "cannot load model")):
        res = runner.invoke(cli, ["properties", "--teacher", "emt", "--out", str(tmp_path / "o"), *args])
        assert res.exit_code != 0 and text in res.output, (args, res.output)


def test_model_card_property_table_lists_failures_first(tmp_path):
    from mlffd.modelcard import PROPERTIES_REPORT, _read_report, properties_section

    files = write_properties_report(_fake_result(False), tmp_path, PropertiesConfig(sections=("elastic", "short_range")))
    report = _read_report(files["json"], *PROPERTIES_REPORT)
    text = properties_section(report, "properties.json")
    assert "- **elastic** (1 of 1 rows): `C11_GPa`" in text and "**short_range**" not in text
    assert "Unphysical behaviour" not in text  # the one flag passed
    rows = [line for line in text.splitlines() if line.startswith("| elastic") or line.startswith("| short_range")]
    assert rows[0].startswith("| elastic | C11_GPa | GPa | 100 | 80 | -20 % | ±5 % | FAIL")
    assert rows[1].endswith("| no | no |  | must not occur | PASS |")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="junk.json is not a properties.json"):
        _read_report(tmp_path / "junk.json", *PROPERTIES_REPORT)


def test_model_card_names_unphysical_behaviour_in_words(tmp_path):
    """Failed flags become sentences in the table's summary and the card's limits, each with
    the cases it was seen in; passed flags and failed values do not."""
    from mlffd.modelcard import _limits_from_properties, failed_behaviours

    rows = [relative("elastic", "C11_GPa", "GPa", 100.0, 80.0, 5.0),
            flag("short_range", "short_range_attractive_Si-Si", False, True),
            flag("short_range", "short_range_nonmonotonic_Si-Si", False, False),
            flag("eos", "spurious_minimum_fcc", False, True), flag("eos", "spurious_minimum_bcc", False, True),
            flag("defects", "collapse_vacancy_tight", False, True)]
    result = PropertiesResult(rows, {}, {}, {"teacher": "T", "student": "S"})
    files = write_properties_report(result, tmp_path, PropertiesConfig(sections=("eos", "elastic", "defects", "short_range")))
    report = json.loads(files["json"].read_text())
    words = failed_behaviours(report)
    assert words == ["no repulsive wall at short range (pairs pushed together attract) (Si-Si)",
                     "false energy minima in compressed or expanded phases (fcc, bcc)",
                     "atoms collapsing onto each other in relaxations from tight starts (vacancy_tight)"]
    assert "non-monotonic" not in " ".join(words)
    limits = _limits_from_properties((report, "properties.json"))
    assert limits.startswith("**Where it must not be trusted**") and "(fcc, bcc)" in limits
    clean = json.loads(write_properties_report(_fake_result(True), tmp_path / "ok", PropertiesConfig(sections=("elastic", "short_range")))["json"].read_text())
    assert "no unphysical behaviour" in _limits_from_properties((clean, "p.json"))


def test_documented_tolerances_are_the_defaults():
    """docs/validation.md's table of default tolerances lists every Tolerances field with its value."""
    from dataclasses import fields
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "validation.md").read_text(encoding="utf-8")
    table = text.split("### Default tolerances", 1)[1].split("\n## ", 1)[0]
    documented = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| `(\w+)` \| ([0-9.]+) \|", table, re.M)}
    defaults = {f.name: float(getattr(Tolerances(), f.name)) for f in fields(Tolerances)}
    assert documented == defaults


def test_cache_key_code_covers_a_sections_dependencies():
    """The liquid's teacher results depend on the MD and RDF modules, on the prototypes and on the
    sections' shared helpers: their source is in its code hash (the ground state's does not need
    the helpers)."""
    import hashlib
    import importlib
    from pathlib import Path

    from md_validation.properties import common, liquid
    from md_validation.properties.runner import code_version, section_module

    modules = [section_module("relax"), section_module("recipes"), importlib.import_module("mlffd.prototypes"), common,
               liquid]
    modules += [importlib.import_module(m) for m in liquid.DEPENDS]
    h = hashlib.sha256()
    for module in modules:
        h.update(Path(module.__file__).read_bytes())
    assert "md_validation.md" in liquid.DEPENDS
    assert code_version("liquid") == h.hexdigest()
    assert code_version("liquid") != code_version("short_range")


def test_cache_key_follows_the_shared_section_helpers(tmp_path, monkeypatch):
    """Editing the helpers every section's ``compute`` uses (``common``) changes every section's
    cache key, and not the ground state's, which does not use them."""
    import types

    from md_validation.properties import runner

    source = tmp_path / "common.py"
    real = runner.section_module
    monkeypatch.setattr(runner, "section_module",
                        lambda name: types.SimpleNamespace(__file__=str(source)) if name == "common" else real(name))
    source.write_text("A = 1\n")
    before = {s: runner.code_version(s) for s in ("ground", "eos", "short_range")}
    source.write_text("A = 2\n")
    assert runner.code_version("ground") == before["ground"]
    assert runner.code_version("eos") != before["eos"]
    assert runner.code_version("short_range") != before["short_range"]


def test_card_carries_the_table_the_limits_and_the_command(tmp_path):
    """`mlffd card --properties` on a real (random) student and Stillinger-Weber-labelled data:
    the card has the table, the limits drawn from it and the command that reproduces it."""
    from ase.io import write

    from mlffd.calculator import DistilledCalculator
    from mlffd.modelcard import write_card
    from mlffd.reference.sw import export_sw
    from mlffd.testing import random_artifact, silicon

    model = random_artifact(tmp_path / "m.mlffd.pt", "ultra-tiny")
    sw = DistilledCalculator(str(export_sw(tmp_path / "sw.mlffd.pt")))
    frames = []
    for seed in range(2):
        atoms = silicon(1, rattle=0.1, seed=seed)
        atoms.calc = sw
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    write(tmp_path / "data.extxyz", frames)
    rows = [flag("short_range", "short_range_attractive_Si-Si", False, True)]
    files = write_properties_report(PropertiesResult(rows, {}, {}, {"teacher": "sw", "student": str(model)}), tmp_path / "p",
                                    PropertiesConfig(sections=("short_range",)))
    card = write_card(model, tmp_path / "data.extxyz", teacher="sw", out_dir=tmp_path / "cards", speed=False,
                      properties=files["json"]).read_text()
    assert "| short_range | short_range_attractive_Si-Si | flag | no | yes |  | must not occur | FAIL |" in card
    assert "**Where it must not be trusted** (property table above): no repulsive wall at short range" in card
    assert f"mlffd-validate properties --model {model} --teacher sw" in card
    assert f"--properties {files['json']}" in card
