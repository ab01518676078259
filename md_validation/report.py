"""Reports: one self-contained HTML page (figures embedded as base64 PNG), JSON and Markdown."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlffd.jsonable import jsonable


@dataclass
class Section:
    """A report section: a heading, optional text, a metrics table, figures (name -> PNG bytes)
    and ``html``: markup built by md_validation itself (every value in it already escaped)."""

    title: str
    text: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, bytes] = field(default_factory=dict)
    html: str = ""


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def write_figures(figures: Mapping[str, bytes], directory: str | Path) -> dict[str, Path]:
    """Write each figure to ``DIR/NAME.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in figures.items():
        paths[name] = directory / f"{name}.png"
        paths[name].write_bytes(png)
    return paths


def write_json(data: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=2, sort_keys=True, allow_nan=False))
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "–"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return html.escape(f"[{len(v)} values]")
    return html.escape(str(v))


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows.extend(_flatten(v, key + "."))
        else:
            rows.append((key, v))
    return rows


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """An HTML table of (nested) metrics, one ``a.b.c`` row per leaf."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in _flatten(metrics))
    return f'<table class="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>'


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446}h2{color:#335;margin-top:1.6em}
table.metrics{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:2px 8px;text-align:left}
table.metrics td:last-child{font-family:monospace}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:0.85em;color:#555}
.pass{color:#070;font-weight:bold}.fail{color:#a00;font-weight:bold}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML page; each figure is an ``<img id="fig-NAME">`` with a data URI."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} by md_validation</p>"]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            cls = "pass" if sec.text.startswith("PASS") else "fail" if sec.text.startswith("FAIL") else ""
            parts.append(f'<p class="{cls}">{html.escape(sec.text)}</p>')
        if sec.metrics:
            parts.append(metrics_table(sec.metrics))
        if sec.html:
            parts.append(sec.html)
        for name, png in sec.figures.items():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img id="fig-{html.escape(name)}" alt="{html.escape(name)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{html.escape(name)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(title: str, sections: list[Section], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(title, sections), encoding="utf-8")
    return path


def markdown_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table."""
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|") if not isinstance(v, str) else v.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
