"""The active-distillation report: ``report.json`` (everything), ``report.md`` (the table of
rounds) and a self-contained ``report.html`` (the table and, per round, the committee's
deviation against the true force error, as a PNG embedded in the page)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

#: per-round fields of report.json (tests check them)
ROUND_FIELDS = ("round", "explored", "flags", "selected", "selected_by_reason", "teacher_calls", "labelled", "dropped",
                "converged", "members_after")

_COLUMNS = ("round", "explored", "accurate", "candidate", "failed: deviation", "failed: sanity", "false minima", "labelled", "teacher calls",
            "force RMSE before", "force RMSE after", "member 0 before", "member 0 after", "Spearman", "test RMSE m0")


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib :class:`~matplotlib.figure.Figure` as PNG bytes (Agg canvas: no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _minima_cell(minima: Mapping[str, Any] | None) -> str:
    """``false/checked`` student minima, and the teacher's descent frames from the false ones."""
    if not minima or not minima.get("checked"):
        return "–"
    others = "".join(f", {minima[k]} {k}" for k in ("shifted", "unresolved") if minima.get(k))
    descent = f" (+{minima['descent_frames']} descent)" if minima.get("descent_frames") else ""
    return f"{minima['false']}/{minima['checked']}{others}{descent}"


def round_row(rec: Mapping[str, Any]) -> tuple[str, ...]:
    """One table row of a round record."""
    flags = rec.get("flags", {})
    sanity = flags.get("failed_sanity", 0)
    reasons = ", ".join(f"{k} {v}" for k, v in (flags.get("sanity_reasons") or {}).items() if v)
    before, after = rec.get("before") or {}, rec.get("after") or {}
    test = rec.get("test_force_rmse_member0") or {}
    t_before, t_after = (test.get("before") or {}).get("force_rmse"), (test.get("after") or {}).get("force_rmse")
    return (
        str(rec["round"]), str(rec.get("explored", 0)), str(flags.get("accurate", 0)), str(flags.get("candidate", 0)),
        str(flags.get("failed_deviation", 0)), f"{sanity}" + (f" ({reasons})" if reasons else ""), _minima_cell(rec.get("minima")),
        f"{rec.get('labelled', 0)}/{rec.get('selected', 0)}", str(rec.get("teacher_calls", 0)),
        _num(before.get("flagged_force_rmse_mean")), _num(after.get("flagged_force_rmse_mean")),
        _num(before.get("flagged_force_rmse_member0")), _num(after.get("flagged_force_rmse_member0")),
        _num(rec.get("spearman"), 3), f"{_num(t_before)} → {_num(t_after)}" if t_before is not None else "–",
    )


def markdown(data: Mapping[str, Any]) -> str:
    """``report.md``: the summary and one row per round."""
    lines = [f"# Active distillation of `{data['student']}`", "",
             f"- teacher calls: {data['teacher_calls']} (budget {data['teacher_calls_total_budget']})",
             f"- rounds: {len(data['rounds'])}; stopped: {data.get('stop_reason') or 'not finished'}",
             f"- final student (member 0): `{data['artifact']}`",
             f"- committee: {', '.join(f'`{n}`' for n in data.get('member_names') or []) or data['config']['committee']}", "",
             "Force RMSE (eV/Å) of the committee's mean and of member 0 on the round's flagged frames (audit frames "
             "excluded), before and after fine-tuning; Spearman: rank correlation of the committee's max force deviation "
             "with member 0's largest per-atom force error over all labelled frames of the round, before fine-tuning; "
             "test RMSE: member 0 on the held-out set. False minima: of the student's converged relaxations whose end "
             "the teacher checked, those the teacher's descent got `false_minimum_drop` lower (shifted: the teacher's "
             "minimum is near; unresolved: the descent was cut short first), and the descent frames.", ""]
    lines.append("| " + " | ".join(_COLUMNS) + " |")
    lines.append("| " + " | ".join("---" for _ in _COLUMNS) + " |")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in round_row(rec)) + " |" for rec in data["rounds"]]
    return "\n".join(lines) + "\n"


def scatter_png(rec: Mapping[str, Any], lo: float, hi: float) -> bytes | None:
    """Committee deviation vs member 0's true largest force error on a round's labelled frames,
    before fine-tuning (by reason) and after (open circles); None when there is nothing to plot."""
    from matplotlib.figure import Figure

    before, after = rec.get("before"), rec.get("after")
    if not before:
        return None
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_subplot()
    frames = before["frames"]
    reasons = frames["reason"]
    plotted = []
    for reason in sorted(set(reasons)):
        pts = [(x, y) for x, y, r in zip(frames["max_devi_f"], frames["max_error_member0"], reasons)
               if r == reason and x is not None and y is not None and x > 0 and y > 0]
        if pts:
            ax.scatter(*zip(*pts), s=18, label=f"{reason} (before)")
            plotted += pts
    if after:
        f = after["frames"]
        pts = [(x, y) for x, y in zip(f["max_devi_f"], f["max_error_member0"]) if x is not None and y is not None and x > 0 and y > 0]
        if pts:
            ax.scatter(*zip(*pts), s=18, facecolors="none", edgecolors="0.4", label="after fine-tuning")
            plotted += pts
    if not plotted:
        return None
    lim = (min(min(p) for p in plotted) / 1.5, max(max(p) for p in plotted) * 1.5)
    ax.plot(lim, lim, color="0.7", lw=0.8, ls=":")
    for v, name in ((lo, "force_lo"), (hi, "force_hi")):
        ax.axvline(v, color="0.5", lw=0.8, ls="--")
        ax.text(v, lim[1], f" {name}", fontsize=7, va="top", rotation=90, color="0.4")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("committee max force deviation (eV/Å)")
    ax.set_ylabel("member 0 max |F - F_teacher| (eV/Å)")
    rho = rec.get("spearman")
    ax.set_title(f"round {rec['round']}: Spearman {'n/a' if rho is None else f'{rho:.2f}'}", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return figure_png(fig)


def render_html(data: Mapping[str, Any]) -> str:
    """``report.html``: one self-contained page."""
    e = html.escape
    cfg = data["config"]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>Active distillation: {e(str(data['student']))}</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
             "td{font-family:monospace}figure img{max-width:100%}figcaption{font-size:0.85em;color:#555}",
             "</style></head><body>", f"<h1>Active distillation of {e(str(data['student']))}</h1>",
             f"<p>Teacher calls: {int(data['teacher_calls'])} (budget {int(data['teacher_calls_total_budget'])}); rounds: "
             f"{len(data['rounds'])}; stopped: {e(str(data.get('stop_reason') or 'not finished'))}.<br>Final student (member 0): "
             f"<code>{e(str(data['artifact']))}</code></p>",
             f"<p>Trust levels: force_lo {cfg['force_lo']} eV/Å, force_hi {cfg['force_hi']} eV/Å; committee of {cfg['committee']}"
             f"{': ' + e(', '.join(data.get('member_names') or [])) if data.get('member_names') else ''}.</p>",
             "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in _COLUMNS) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in round_row(rec)) + "</tr>" for rec in data["rounds"]]
    parts.append("</table>")
    for rec in data["rounds"]:
        png = scatter_png(rec, cfg["force_lo"], cfg["force_hi"])
        if png is None:
            continue
        img = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img id='fig-round-{int(rec['round'])}' alt='round {int(rec['round'])}' src='data:image/png;base64,{img}'>"
                     f"<figcaption>Round {int(rec['round'])}: predicted uncertainty (committee max force deviation) against "
                     "the true error of member 0 on the labelled frames.</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(data: Mapping[str, Any], directory: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``directory``; their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md", "html": directory / "report.html"}
    _atomic_text(paths["json"], json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n")
    _atomic_text(paths["markdown"], markdown(data))
    _atomic_text(paths["html"], render_html(data))
    return paths


__all__ = ["ROUND_FIELDS", "figure_png", "markdown", "render_html", "round_row", "scatter_png", "write_report"]
