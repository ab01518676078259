"""Ratios of the same run and the headline numbers drawn from them."""

from __future__ import annotations

import math

from mlffd.bench.records import cost_of, index_measurements, succeeded, series_key
from mlffd.jsonable import jsonable
from mlffd.bench.workers import summarize



RATIO_KINDS = ("vs_sw", "vs_tersoff", "speedup_vs_teacher", "plugin_vs_artifact", "batched_speedup", "size_scaling", "size_scaling_side_by_side",
               "plugin_vs_artifact_side_by_side", "allocator_default_vs_mlffd", "allocator_growth")
SIDE_BY_SIDE_KINDS = {"scaling": "size_scaling_side_by_side", "plugin": "plugin_vs_artifact_side_by_side"}


def compute_ratios(result: dict) -> list[dict]:
    """Every ratio between measurements of the same run (same atom count unless the kind says otherwise).

    Kinds: ``vs_sw`` / ``vs_tersoff`` (student cost / classical cost with ``threads`` ranks),
    ``speedup_vs_teacher`` (teacher cost / student cost), ``plugin_vs_artifact`` (LAMMPS
    ``pair_style mlffd`` / raw artifact call), ``batched_speedup`` (one-by-one / batched cost),
    ``size_scaling`` (cost at N / cost at the reference size, 512 when measured, for each curve),
    ``allocator_default_vs_mlffd`` (glibc defaults / mlffd settings) and ``allocator_growth``
    (cost at N / cost at the smallest allocator size, per setting); ``size_scaling_side_by_side``
    and ``plugin_vs_artifact_side_by_side``: the same two ratios from both costs measured
    alternately in one process (median of the ratios within each alternation, all rounds). With ``rounds`` (the main
    measurements repeated, raw ones in ``result["round_measurements"]``) each ratio is the median
    over rounds of the ratio within each round (``per_round``), robust to a machine whose speed
    drifts during a run.
    """
    threads = result["config"]["threads"]
    ms = [m for m in result["measurements"] if succeeded(m)]
    sections = _allocator_ratios([m for m in ms if m.get("section") == "allocator"])
    sections += _side_by_side_ratios([m for m in ms if m.get("section") == "side-by-side"])
    raw = result.get("round_measurements")
    if not raw:
        return [jsonable(r) for r in _main_ratios([m for m in ms if m.get("section", "main") == "main"], threads)] + sections
    # rounds: each ratio within each round (its two measurements minutes apart, not a whole run),
    # then the median over rounds
    main_raw = [m for m in raw if succeeded(m) and m.get("section", "main") == "main" and m.get("round") is not None]
    per_kind: dict[tuple, list[dict]] = {}
    for rnd in sorted({m["round"] for m in main_raw}):
        this_round = [dict(m, id=strip_round(m["id"])) for m in main_raw if m["round"] == rnd]
        for r in _main_ratios(this_round, threads):
            per_kind.setdefault((r["kind"], r["numerator"], r["denominator"]), []).append(r)
    ratios = []
    for group in per_kind.values():
        values = [r["value"] for r in group]
        ratios.append({**group[0], "value": summarize(values)["median"], "per_round": values, "rounds": [len(values), len(values)],
                       "description": group[0]["description"] + f" (median over {len(values)} rounds of the ratio within each round)"})
    return [jsonable(r) for r in ratios] + sections


def strip_round(measurement_id: str) -> str:
    """A measurement's id without its ``/roundK`` suffix."""
    return measurement_id.split("/round")[0]


def pool_rounds(measurements: list[dict]) -> list[dict]:
    """Main-section measurements repeated in rounds, one per measurement: the samples of every
    round (median and IQR over all of them), the per-round medians in ``round_medians``, the
    largest peak memory; the allocator section (pooled by its own analysis) unchanged."""
    groups: dict[str, list[dict]] = {}
    order: list[str | dict] = []
    for m in measurements:
        if m.get("section", "main") == "main" and m.get("round") is not None:
            gid = strip_round(m["id"])
            if gid not in groups:
                order.append(gid)
            groups.setdefault(gid, []).append(m)
        else:
            order.append(m)
    out = []
    for item in order:
        if isinstance(item, dict):
            out.append(item)
            continue
        group = groups[item]
        ok = [m for m in group if succeeded(m)]
        pooled = {k: v for k, v in (ok or group)[0].items() if k != "round"}
        pooled["id"] = item
        pooled["rounds"] = len(ok)
        samples = [s for m in ok for s in m["samples_us"]]
        pooled["samples_us"] = samples
        pooled["us_per_atom_step"] = summarize(samples)
        med = pooled["us_per_atom_step"]["median"]
        pooled["atom_steps_per_s"] = 1e6 / med if ok and med > 0 else math.nan
        pooled["round_medians"] = [m["us_per_atom_step"]["median"] for m in ok]
        for key in ("peak_rss_mb", "peak_increment_mb", "peak_device_mb"):
            values = [m[key] for m in ok if m.get(key) == m.get(key) and m.get(key) is not None]
            pooled[key] = max(values) if values else math.nan
        pooled["error"] = None if ok else group[0].get("error")
        out.append(pooled)
    return out


def _main_ratios(main: list[dict], threads: int) -> list[dict]:
    """The ratios between main-section measurements (see :func:`compute_ratios`)."""
    idx = index_measurements(main)
    ratios: list[dict] = []

    def add(kind: str, num: dict, den: dict, description: str, invert: bool = False, **extra) -> None:
        a, b = (cost_of(den), cost_of(num)) if invert else (cost_of(num), cost_of(den))
        ratios.append({"kind": kind, "model": num["model"], "atoms": num["atoms"], "value": a / b if b > 0 else math.nan,
                       "numerator": (den if invert else num)["id"], "denominator": (num if invert else den)["id"], "description": description, **extra})

    students = [m for m in main if m.get("kind") == "student" and m["method"] in ("artifact", "calculator", "calculator-compiled", "lammps-mlffd")]
    ref_ranks = f"r{min(threads, max([m['ranks'] for m in main if m['method'] == 'lammps-sw'] or [threads]))}"
    for pot in ("sw", "tersoff"):
        for s in students:
            ref = idx.get(("main", f"lammps-{pot}", pot, s["atoms"], ref_ranks, None))
            if ref:
                add(f"vs_{pot}", s, ref, f"student cost / LAMMPS {pot} ({ref_ranks[1:]} ranks)")
    teachers = [m for m in main if m.get("kind") == "teacher"]
    for t in teachers:
        for s in students:
            if s["atoms"] == t["atoms"]:
                add("speedup_vs_teacher", s, t, f"{t['model']} cost / student cost", invert=True, teacher=t["model"])
    for s in students:
        if s["method"] == "lammps-mlffd":
            ref = idx.get(("main", "artifact", s["model"], s["atoms"], f"t{threads}", None))
            if ref:
                add("plugin_vs_artifact", s, ref, "LAMMPS pair_style mlffd / raw artifact call")
    for b in main:
        if b["method"] == "batch":
            one = idx.get(("main", "one-by-one", b["model"], b["atoms"], b["parallel"], None))
            if one:
                add("batched_speedup", b, one, "one-by-one cost / batched cost", invert=True)
    series: dict[str, list[dict]] = {}
    for m in main:
        if m["method"] not in ("batch", "one-by-one"):
            series.setdefault(series_key(m), []).append(m)
    for key, group in series.items():
        group = sorted(group, key=lambda m: m["atoms"])
        ref = next((m for m in group if m["atoms"] == 512), None) or next((m for m in group if m["atoms"] >= 512), None) or group[0]
        for m in group:
            if m is not ref and m["atoms"] > ref["atoms"]:
                add("size_scaling", m, ref, f"cost at {m['atoms']} atoms / cost at {ref['atoms']} atoms")
    return ratios


def _side_by_side_ratios(ms: list[dict]) -> list[dict]:
    """Side-by-side measurements (one per round) of the same comparison: the median of all their
    within-alternation ratios; ``per_round`` the median of each round's."""
    groups: dict[tuple, list[dict]] = {}
    for m in ms:
        groups.setdefault((m["compare"], m["model"], m["atoms"]), []).append(m)
    ratios = []
    for (compare, model, atoms), group in groups.items():
        pairs = [r for m in group for r in m.get("pair_ratios", [])]
        if not pairs:
            continue
        first = group[0]
        if compare == "scaling":
            num, den = f"artifact at {atoms} atoms", f"artifact at {first.get('reference_atoms')} atoms"
            what = f"cost at {atoms} atoms / cost at {first.get('reference_atoms')} atoms (raw artifact call)"
        else:
            num, den = f"lammps-mlffd r1 at {atoms} atoms", f"artifact at {atoms} atoms"
            what = "LAMMPS pair_style mlffd (1 rank, in the same process) / raw artifact call"
        ratios.append({"kind": SIDE_BY_SIDE_KINDS[compare], "model": model, "atoms": atoms, "value": summarize(pairs)["median"],
                       "numerator": num, "denominator": den, "measurements": [m["id"] for m in group],
                       "per_round": [summarize(m["pair_ratios"])["median"] for m in group if m.get("pair_ratios")], "pairs": pairs,
                       "description": f"{what}, both measured alternately in one process: median of {len(pairs)} alternations"})
    return [jsonable(r) for r in ratios]


def _allocator_ratios(ms: list[dict]) -> list[dict]:
    """Allocator-section ratios: rounds of the same (method, size, setting) pool into the median
    of their medians."""
    ratios: list[dict] = []
    groups: dict[tuple, list[dict]] = {}
    for m in ms:
        groups.setdefault((m["method"], m["model"], m["atoms"], m["parallel"], m.get("malloc")), []).append(m)

    def pooled(key: tuple) -> tuple[float, str, list[float]] | None:
        g = groups.get(key)
        if not g:
            return None
        costs = [cost_of(m) for m in g]
        gid = strip_round(g[0]["id"])
        return summarize(costs)["median"], gid, costs

    def add_pooled(kind: str, a: tuple, b: tuple, description: str, **extra) -> None:
        (ca, ida, la), (cb, idb, lb) = a, b
        ratios.append({"kind": kind, "model": extra.pop("model"), "atoms": extra.pop("atoms"), "value": ca / cb if cb > 0 else math.nan,
                       "numerator": ida, "denominator": idb, "description": description, "rounds": [len(la), len(lb)], **extra})

    for key in sorted(groups, key=lambda k: (k[0], k[2])):
        method, model, atoms, parallel, malloc = key
        if malloc != "default":
            continue
        a, b = pooled(key), pooled((method, model, atoms, parallel, "mlffd"))
        if a and b:
            per_round = [x / y for x, y in zip(a[2], b[2])]
            add_pooled("allocator_default_vs_mlffd", a, b, "cost with glibc defaults / cost with mlffd's malloc settings",
                       model=model, atoms=atoms, method=method, per_round=per_round)
    for setting in ("default", "mlffd"):
        for method in sorted({k[0] for k in groups}):
            keys = sorted((k for k in groups if k[0] == method and k[4] == setting), key=lambda k: k[2])
            for k in keys[1:]:
                if k[2] > keys[0][2]:
                    add_pooled("allocator_growth", pooled(k), pooled(keys[0]), f"cost at {k[2]} / cost at {keys[0][2]} atoms ({setting} malloc)",
                               model=k[1], atoms=k[2], malloc=setting, method=method)
    return [jsonable(r) for r in ratios]


#: the headline quantities of each student, and which direction is better (for readers and the
#: tests that hold them to a bound): cost against SW and the plugin's overhead are ratios to
#: minimise, the speed-ups to maximise
HEADLINE = {
    "cost_vs_sw": "lower", "speedup_vs_orb_v3_conservative": "higher", "speedup_vs_7net0": "higher",
    "peak_memory_gb_32768": "lower", "flat_per_atom_512_to_max": "lower", "plugin_overhead_vs_artifact": "lower",
    "batched_speedup": "higher",
}


def headline(result: dict) -> list[dict]:
    """The headline numbers of each student in this run, one row per quantity of :data:`HEADLINE`
    (``value`` None where not measured), with the ratio each comes from.

    Student cost is the raw artifact call (``threads`` threads) against LAMMPS SW on ``threads``
    ranks at the largest size both have; the teacher speed-ups are ASE-to-ASE
    (``DistilledCalculator`` vs the teacher's calculator) at the largest teacher size. Flatness
    and plugin overhead come side by side in one process when measured (immune to the drift
    between processes), with the separate-process ratio in a row marked ``[separate processes]``.
    Where ``DistilledCalculator(compile=True)`` was measured, its cost, speed-ups and flatness
    follow in rows marked ``[compile=True]``.
    """
    ratios = result.get("ratios") or compute_ratios(result)
    ms = {m["id"]: m for m in result["measurements"] if succeeded(m)}
    out: list[dict] = []

    def pick(kind: str, model: str, method: str | None = None, teacher: str | None = None) -> dict | None:
        cands = [r for r in ratios if r["kind"] == kind and r["model"] == model and r["value"] is not None]
        if method:
            cands = [r for r in cands if ms.get(r["numerator"], {}).get("method") == method or ms.get(r["denominator"], {}).get("method") == method]
        if teacher:
            cands = [r for r in cands if r.get("teacher") == teacher]
        return max(cands, key=lambda r: r["atoms"]) if cands else None

    def largest(rows: list[dict]) -> dict | None:
        return max(rows, key=lambda r: r["atoms"]) if rows else None

    def entry(model: str, name: str, r: dict | None, **extra) -> None:
        out.append({"model": model, "quantity": name, "better": HEADLINE[name.split(" [")[0]],
                    "value": None if r is None else r["value"], "atoms": None if r is None else r["atoms"], "ratio": r, **extra})

    def scaling(model: str, method: str) -> list[dict]:
        return [r for r in ratios if r["kind"] == "size_scaling" and r["model"] == model and ms.get(r["numerator"], {}).get("method") == method
                and ms.get(r["denominator"], {}).get("atoms") == 512]

    for model in result.get("models", {}):
        entry(model, "cost_vs_sw", pick("vs_sw", model, "artifact"))
        entry(model, "speedup_vs_orb_v3_conservative", pick("speedup_vs_teacher", model, "calculator", "orb-v3-conservative"))
        entry(model, "speedup_vs_7net0", pick("speedup_vs_teacher", model, "calculator", "sevennet-7net-0"))
        big = [m for m in ms.values() if m["model"] == model and m["method"] == "artifact" and m.get("section") == "main" and m["atoms"] >= 32768]
        entry(model, "peak_memory_gb_32768", {"value": big[0]["peak_rss_mb"] / 1e3, "atoms": big[0]["atoms"], "id": big[0]["id"]} if big else None)
        plug = [r for r in ratios if r["kind"] == "plugin_vs_artifact" and r["model"] == model and ms.get(r["numerator"], {}).get("ranks") == 1]
        plug4k = [r for r in plug if r["atoms"] == 4096] or plug
        for name, kind, separate in (("flat_per_atom_512_to_max", "size_scaling_side_by_side", scaling(model, "artifact")),
                                     ("plugin_overhead_vs_artifact", "plugin_vs_artifact_side_by_side", plug4k)):
            side = [r for r in ratios if r["kind"] == kind and r["model"] == model]
            if side:
                entry(model, name, largest(side), method="side by side")
            entry(model, name + (" [separate processes]" if side else ""), largest(separate))
        entry(model, "batched_speedup", pick("batched_speedup", model))
        if any(m["model"] == model and m["method"] == "calculator-compiled" for m in ms.values()):
            entry(model, "cost_vs_sw [compile=True]", pick("vs_sw", model, "calculator-compiled"))
            entry(model, "speedup_vs_orb_v3_conservative [compile=True]",
                  pick("speedup_vs_teacher", model, "calculator-compiled", "orb-v3-conservative"))
            entry(model, "speedup_vs_7net0 [compile=True]", pick("speedup_vs_teacher", model, "calculator-compiled", "sevennet-7net-0"))
            entry(model, "flat_per_atom_512_to_max [compile=True]", largest(scaling(model, "calculator-compiled")))
    return [jsonable(e) for e in out]
