"""Markdown tables, the log-log plot and the output files of a benchmark run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from mlffd.bench.analysis import SIDE_BY_SIDE_KINDS
from mlffd.bench.records import cost_of, succeeded
from mlffd.bench.workers import summarize
from mlffd.jsonable import jsonable



def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or x != x:
        return "–"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _label(m: dict) -> str:
    if m["method"] == "teacher":
        return f"teacher {m['model']} ({m['weights']} weights)"
    if m["method"].startswith("lammps-") and m.get("kind") == "classical":
        return f"LAMMPS {m['model']} ({m['ranks']} rank{'s' if m['ranks'] > 1 else ''})"
    if m["method"] == "lammps-mlffd":
        return f"{m['model']}: LAMMPS mlffd ({m['ranks']} rank{'s' if m['ranks'] > 1 else ''})"
    return f"{m['model']}: {m['method']}"


def markdown_report(result: dict) -> str:
    """Markdown tables of a results dict: cost, throughput, memory, ratios, batch, side by side,
    allocator, headline numbers and failures, each section where the run has its measurements."""
    lines = _header_lines(result)
    lines += summary_table(result)
    for section in (_cost_tables, _ratio_lines, _batch_lines, _side_by_side_lines, _allocator_lines, _headline_lines, _failed_lines):
        lines += section(result)
    return "\n".join(lines)


def _header_lines(result: dict) -> list[str]:
    cfg = result["config"]
    host = result["host"]
    lines = [
        f"mlffd bench — {result['created']} — {host.get('cpu') or '?'}, {host.get('cpu_count')} CPUs, "
        f"threads {cfg['threads']}, repeats {cfg['repeats']}"
        + (f" in each of {cfg['rounds']} rounds (costs over all rounds' samples; each ratio the median over rounds of the ratio within a round)"
           if cfg.get("rounds", 1) > 1 else "")
        + f", load average {_fmt((host.get('load_average') or [math.nan])[0])} → "
        f"{_fmt((host.get('load_average_end') or [math.nan])[0])}",
        "",
    ]
    models = result.get("models", {})
    if models:
        lines.append("Students: " + "; ".join(f"{k} ({v['num_parameters']:,} params, {v['dtype']}, {v['weights']} weights)" for k, v in models.items()))
        lines.append("")
    return lines


def _cost_cell(m: dict) -> str:
    if m.get("error"):
        return "failed"
    s = m["us_per_atom_step"]
    return f"{_fmt(s['median'])} ({_fmt(s['q1'])}–{_fmt(s['q3'])})"


def _cost_tables(result: dict) -> list[str]:
    """Cost, throughput and memory of the main measurements: one row per method, model and
    parallelism, one column per atom count."""
    main = [m for m in result["measurements"] if m.get("section", "main") == "main" and m["method"] not in ("batch", "one-by-one")]
    if not main:
        return []
    sizes = sorted({m["atoms"] for m in main})
    order = {"artifact": 0, "calculator": 1, "calculator-compiled": 1.5, "lammps-mlffd": 2, "lammps-sw": 3, "lammps-tersoff": 4, "teacher": 5}
    rows: dict[str, dict[int, dict]] = {}
    model_order = {name: k for k, name in enumerate(result.get("models", {}))}
    for m in sorted(main, key=lambda m: (m.get("kind") != "student", order.get(m["method"], 9), model_order.get(m["model"], 99), m["model"], m.get("ranks") or 0)):
        rows.setdefault(_label(m), {})[m["atoms"]] = m
    lines: list[str] = []

    def table(title: str, cell: Callable[[dict], str]) -> None:
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| method | " + " | ".join(f"{n:,} atoms" for n in sizes) + " |")
        lines.append("| --- |" + " --- |" * len(sizes))
        for label, by in rows.items():
            lines.append(f"| {label} | " + " | ".join(cell(by[n]) if n in by else "" for n in sizes) + " |")
        lines.append("")

    table("Cost, µs per atom-step: median (IQR)", _cost_cell)
    table("Throughput, atom-steps per second (median)", lambda m: "failed" if m.get("error") else _fmt(m["atom_steps_per_s"]))
    table("Peak memory, MB (ru_maxrss of the measuring process; LAMMPS: largest rank)", lambda m: "failed" if m.get("error") else _fmt(m["peak_rss_mb"]))
    table(
        "Peak memory of the evaluation, MB (peak minus the process's RSS before the first call: torch, the structure and its neighbour list excluded)",
        lambda m: "failed" if m.get("error") else _fmt(m.get("peak_increment_mb")),
    )
    return lines


_ALLOCATOR_KINDS = ("allocator_default_vs_mlffd", "allocator_growth")


def _ratio_lines(result: dict) -> list[str]:
    ratios = [r for r in result.get("ratios", []) if r["kind"] not in _ALLOCATOR_KINDS]
    if not ratios:
        return []
    lines = ["### Ratios (same run)", "", "| kind | numerator | denominator | ratio |", "| --- | --- | --- | --- |"]
    for r in ratios:
        per_round = f" (rounds: {', '.join(_fmt(v) for v in r['per_round'])})" if len(r.get("per_round") or []) > 1 else ""
        lines.append(f"| {r['kind']} | {r['numerator']} | {r['denominator']} | {_fmt(r['value'])}{per_round} |")
    return lines + [""]


def _batch_lines(result: dict) -> list[str]:
    batch = [m for m in result["measurements"] if m["method"] in ("batch", "one-by-one")]
    if not batch:
        return []
    lines = ["### Many small structures", "",
             "| model | mode | structures × atoms | µs per atom-step (IQR) | atom-steps/s | peak MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in batch:
        lines.append(f"| {m['model']} | {m['method']} | {m.get('structures', '?')} × {m.get('atoms_per_structure', '?')} | {_cost_cell(m)} | "
                     f"{_fmt(m['atom_steps_per_s'])} | {_fmt(m['peak_rss_mb'])} |")
    return lines + [""]


def _side_by_side_lines(result: dict) -> list[str]:
    side = [r for r in result.get("ratios", []) if r["kind"] in SIDE_BY_SIDE_KINDS.values()]
    if not side:
        return []
    by_id = {m["id"]: m for m in result["measurements"]}
    lines = ["### Side by side (both costs alternating in one process, immune to drift between processes)", "",
             "| model | ratio | µs per atom-step: numerator / denominator (medians) | ratio: median of alternations | per round |",
             "| --- | --- | --- | --- | --- |"]
    for r in side:
        group = [by_id[i] for i in r.get("measurements", []) if i in by_id]
        num = summarize([x for m in group for x in m.get("samples_us", [])])["median"]
        den = summarize([x for m in group for x in m.get("reference_samples_us", [])])["median"]
        lines.append(f"| {r['model']} | {r['numerator']} / {r['denominator']} | {_fmt(num)} / {_fmt(den)} | **{_fmt(r['value'])}** "
                     f"({len(r.get('pairs', []))} alternations) | {', '.join(_fmt(v) for v in r.get('per_round', []))} |")
    return lines + [""]


def _allocator_lines(result: dict) -> list[str]:
    alloc = [m for m in result["measurements"] if m.get("section") == "allocator"]
    if not alloc:
        return []
    lines = ["### Allocator: glibc defaults (MLFFD_MALLOC=default) vs mlffd's settings", "",
             "| model | method | atoms | malloc | round | µs per atom-step (IQR) | peak MB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in alloc:
        lines.append(f"| {m['model']} | {m['method']} | {m['atoms']:,} | {m['malloc']} | {m.get('round', 0)} | {_cost_cell(m)} | {_fmt(m['peak_rss_mb'])} |")
    lines.append("")
    for r in result.get("ratios", []):
        if r["kind"] in _ALLOCATOR_KINDS:
            rounds = f"; median over {r['rounds'][0]} rounds, per round {', '.join(_fmt(v) for v in r['per_round'])}" if r.get("per_round") and len(r["per_round"]) > 1 else ""
            lines.append(f"- {r['description']}: **{_fmt(r['value'])}** ({r['numerator']} / {r['denominator']}{rounds})")
    return lines + [""]


def _headline_lines(result: dict) -> list[str]:
    rows = result.get("headline", [])
    if not any(h["value"] is not None for h in rows):
        return []
    lines = ["### Headline numbers (this run)", "", "| model | quantity | value | better | at atoms |", "| --- | --- | --- | --- | --- |"]
    for h in rows:
        lines.append(f"| {h['model']} | {h['quantity']} | {_fmt(h['value'])} | {h['better']} | {h['atoms'] or '–'} |")
    return lines + [""]


def _failed_lines(result: dict) -> list[str]:
    failed = [m for m in result["measurements"] if m.get("error")]
    if not failed:
        return []
    return ["### Failed measurements", ""] + [f"- {m['id']}: {m['error'].splitlines()[-1][:300]}" for m in failed] + [""]


def summary_table(result: dict) -> list[str]:
    """Markdown lines: per student, the headline ratios of this run (a digest of ``ratios``)."""
    ratios = result.get("ratios", [])
    ms = {m["id"]: m for m in result["measurements"]}
    students = list(result.get("models", {}))
    if not students or not ratios:
        return []

    def method_of(r: dict, side: str) -> dict:
        return ms.get(r[side], {})

    def best(kind: str, model: str, method: str, ranks: int | None = None, teacher: str | None = None, atoms: int | None = None):
        cands = []
        for r in ratios:
            if r["kind"] != kind or r["model"] != model or r["value"] is None:
                continue
            side = "denominator" if kind == "speedup_vs_teacher" else "numerator"
            m = method_of(r, side)
            if m.get("method") != method or (ranks is not None and m.get("ranks") != ranks):
                continue
            if teacher and r.get("teacher") != teacher:
                continue
            if atoms is not None and r["atoms"] != atoms:
                continue
            cands.append(r)
        return max(cands, key=lambda r: r["atoms"]) if cands else None

    def cell(r) -> str:
        return "–" if r is None else f"{_fmt(r['value'])} ({r['atoms']:,})"

    teachers = sorted({r["teacher"] for r in ratios if r["kind"] == "speedup_vs_teacher"})
    head = ["student", "artifact / SW", "calculator / SW", "LAMMPS 1 rank / SW", "LAMMPS 2 ranks / SW"]
    head += [f"{t} / calculator" for t in teachers]
    head += ["plugin 1 rank / artifact", "one-by-one / batched"]
    threads = result["config"]["threads"]
    lines = [f"### Summary (ratios of this run; SW = LAMMPS sw on {threads} rank{'s' if threads > 1 else ''}; "
             "in brackets the atom count, the largest measured)", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model in students:
        row = [model, cell(best("vs_sw", model, "artifact")), cell(best("vs_sw", model, "calculator")),
               cell(best("vs_sw", model, "lammps-mlffd", 1)), cell(best("vs_sw", model, "lammps-mlffd", 2))]
        row += [cell(best("speedup_vs_teacher", model, "calculator", teacher=t)) for t in teachers]
        plug = best("plugin_vs_artifact", model, "lammps-mlffd", 1, atoms=4096) or best("plugin_vs_artifact", model, "lammps-mlffd", 1)
        row += [cell(plug), cell(next((r for r in ratios if r["kind"] == "batched_speedup" and r["model"] == model), None))]
        if any(c != "–" for c in row[1:]):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines if len(lines) > 5 else []


def plot(result: dict, path: str | Path) -> Path:
    """Log-log plot of µs per atom-step versus atoms (one curve per method, model and parallelism)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.0, 6.5))
    curves: dict[str, list[dict]] = {}
    for m in result["measurements"]:
        if succeeded(m) and m.get("section", "main") == "main" and m["method"] not in ("batch", "one-by-one"):
            curves.setdefault(_label(m), []).append(m)
    palette = {"ultra-tiny": "tab:blue", "tiny": "tab:orange", "original": "tab:green", "sw": "black", "tersoff": "dimgray",
               "sevennet-7net-0": "tab:red", "orb-v3-conservative": "tab:purple", "orb-v3-direct": "tab:brown"}
    extra = iter(["tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 10)
    markers = {"artifact": "o", "calculator": "s", "calculator-compiled": "P", "lammps-mlffd": "^", "lammps-sw": "v", "lammps-tersoff": "D", "teacher": "x"}

    def style(m: dict) -> str:
        if m["kind"] == "teacher":
            return ":"
        if m["method"].startswith("lammps"):
            return (0, (3, 1, 1, 1, 1, 1)) if (m.get("ranks") or 1) > 1 else (0, (3, 1, 1, 1))
        return "-" if m["method"] == "artifact" else (0, (6, 2))

    for label, group in curves.items():
        group.sort(key=lambda m: m["atoms"])
        first = group[0]
        if first["model"] not in palette:
            palette[first["model"]] = next(extra)
        x = [m["atoms"] for m in group]
        y = [cost_of(m) for m in group]
        lo = [max(0.0, cost_of(m) - m["us_per_atom_step"]["q1"]) for m in group]
        hi = [max(0.0, m["us_per_atom_step"]["q3"] - cost_of(m)) for m in group]
        ax.errorbar(x, y, yerr=[lo, hi], label=label, linestyle=style(first), color=palette[first["model"]],
                    marker=markers.get(first["method"], "o"), capsize=2, markersize=4,
                    fillstyle="none" if (first.get("ranks") or 1) > 1 else "full")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (diamond Si)")
    ax.set_ylabel("µs per atom-step (median, IQR bars)")
    cfg = result["config"]
    ranks = ", ".join(str(r) for r in cfg.get("ranks") or []) or "-"
    ax.set_title(f"mlffd bench {result['created'][:10]}: torch threads {cfg['threads']}, LAMMPS ranks {ranks}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    """``bench.json``, ``bench.md`` and ``bench_cost.png`` in ``out``."""
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench_cost.png"}
    paths["json"].write_text(json.dumps(jsonable(result), indent=1) + "\n")
    paths["markdown"].write_text(markdown_report(result) + "\n")
    plot(result, paths["plot"])
    return paths


#: top-level fields of the results JSON and of each measurement (tests check them)
