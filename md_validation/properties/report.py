"""The files of ``mlffd-validate properties``: one self-contained HTML page (property table,
then each section's figures), ``properties.json`` (one record per property, stable keys) and
``summary.md`` (the table in Markdown, for model cards and CI logs)."""

from __future__ import annotations

import html
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from md_validation.properties.config import SECTIONS, PropertiesConfig
from md_validation.properties.records import PropertyRecord
from md_validation.properties.runner import PropertiesResult
from md_validation.report import Section, markdown_table, render_html, write_json

#: section name -> heading in reports
TITLES: dict[str, str] = {
    "eos": "Equations of state and competing phases",
    "elastic": "Elastic constants",
    "phonons": "Phonons",
    "defects": "Point defects",
    "surfaces": "Surfaces",
    "short_range": "Short range: dimers and close pairs",
    "liquid": "Liquid and hot solid",
    "geometry": "Molecular geometry at each one's minimum",
    "vibrations": "Harmonic vibrational frequencies",
    "torsions": "Torsion profiles",
    "conformers": "Conformer energies",
    "molecular_crystal": "Molecular crystals: cell and lattice energy",
}


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.4g}"


def _tolerance(r: PropertyRecord) -> str:
    if r.tolerance_kind == "flag":
        return "must not occur" if r.passed is not None else ""
    if r.tolerance is None:
        return ""
    return f"±{r.tolerance:g} %" if r.tolerance_kind == "rel_%" else f"±{r.tolerance:g}"


def _error(r: PropertyRecord) -> str:
    if r.tolerance_kind == "flag":
        return ""
    if r.error is None:
        return "–"
    return f"{r.error:+.3g} %" if r.tolerance_kind == "rel_%" else f"{r.error:+.4g}"


def _flag_value(v: float | None) -> str:
    return "–" if v is None else ("yes" if v else "no")


def _verdict(r: PropertyRecord) -> str:
    return "" if r.passed is None else ("PASS" if r.passed else "FAIL")


def record_rows(records: list[PropertyRecord]) -> list[tuple[str, ...]]:
    """(property, unit, teacher, student, error, tolerance, verdict) as text, one per record."""
    rows = []
    for r in records:
        value = _flag_value if r.tolerance_kind == "flag" else _num
        rows.append((r.property, r.unit, value(r.teacher), value(r.student), _error(r), _tolerance(r), _verdict(r)))
    return rows


HEADER = ("property", "unit", "teacher", "student", "error", "tolerance", "")


def html_table(records: list[PropertyRecord]) -> str:
    """The property table as HTML, failed rows marked."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = []
    for r, row in zip(records, record_rows(records)):
        cls = "" if r.passed is None else ("pass" if r.passed else "fail")
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row[:-1]) + f'<td class="{cls}">{row[-1]}</td>'
        note = f' title="{html.escape(r.note)}"' if r.note else ""
        body.append(f"<tr{note}>{cells}</tr>")
    return f'<table class="metrics"><tr>{head}</tr>{"".join(body)}</table>'


def verdict_line(result: PropertiesResult) -> str:
    """``PASS``/``FAIL`` with the number of scored rows and the failed properties."""
    scored = result.scored
    failed = [r.property for r in scored if not r.passed]
    if not failed:
        return f"PASS: all {len(scored)} scored properties within tolerance"
    shown = ", ".join(failed[:12]) + (f" and {len(failed) - 12} more" if len(failed) > 12 else "")
    return f"FAIL: {len(failed)} of {len(scored)} scored properties outside tolerance ({shown})"


def summary_markdown(result: PropertiesResult, title: str) -> str:
    """The Markdown summary: verdict and one table per section."""
    lines = [f"# {title}", "", f"teacher: `{result.labels['teacher']}`, student: `{result.labels['student']}`", "",
             f"**{verdict_line(result)}**", ""]
    for section in SECTIONS:
        records = [r for r in result.records if r.section == section]
        if records:
            lines += [f"## {TITLES[section]}", "", markdown_table(record_rows(records), HEADER), ""]
    return "\n".join(lines)


def write_properties_report(result: PropertiesResult, out_dir: str | Path, config: PropertiesConfig,
                            meta: Mapping[str, Any] | None = None, molecules: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``properties.html``, ``properties.json`` and ``summary.md`` under ``out_dir``
    (``molecules``: a molecular system's molecules, whose SMILES the JSON lists)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"Properties: {result.labels['student']} against {result.labels['teacher']}"
    sections = [Section("Verdict", verdict_line(result), dict(meta or {}))]
    for section in config.sections:
        records = [r for r in result.records if r.section == section]
        sections.append(Section(TITLES[section], "", {}, result.figures.get(section, {}), html=html_table(records)))
    page = render_html(title, sections)
    files = {"html": out / "properties.html", "json": out / "properties.json", "markdown": out / "summary.md"}
    files["html"].write_text(page, encoding="utf-8")
    write_json({
        "passed": result.passed,
        "verdict": verdict_line(result),
        "teacher": result.labels["teacher"],
        "student": result.labels["student"],
        "records": [r.as_dict() for r in result.records],
        "settings": {s: config.settings(s) for s in ("ground", *config.sections)},
        "molecules": {name: a.info.get("smiles", "") for name, a in (molecules or {}).items()},
        "tolerances": asdict(config.tolerances),
        "meta": dict(meta or {}),
        "timings_s": result.timings,
        "cache": result.cache,
        "raw": result.raw,
    }, files["json"])
    files["markdown"].write_text(summary_markdown(result, title), encoding="utf-8")
    return files
