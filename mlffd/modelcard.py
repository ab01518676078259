"""Model cards: accuracy on held-out teacher frames and speed against the teacher, measured now.

``mlffd card MODEL --data TEST.extxyz.xz --teacher SPEC`` writes ``docs/models/NAME.md`` from
numbers it measures in the same run, so a card can always be regenerated and checked.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch


def _median_seconds(calc, atoms, repeats: int) -> float:
    """Median wall time of energy+forces (+stress where the structure has one), the positions
    moved a little each call."""
    import numpy as np

    from mlffd.geometry import reports_stress

    stress = reports_stress(atoms.cell.rank, atoms.pbc)  # a molecule has none
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(0)
    times = []
    for k in range(repeats + 1):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        if stress:
            atoms.get_stress()
        if k:  # the first call is warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_speed(model: str | Path, teacher: str, atoms, repeats: int = 5, threads: int = 1) -> dict[str, Any]:
    """Student vs teacher cost per atom-step on the same structure ``atoms`` (the card uses one
    of the model's own held-out data, :func:`speed_structure`), in this process."""
    from mlffd.calculator import DistilledCalculator
    from mlffd.geometry import reports_stress
    from mlffd.teachers import load_teacher

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        student = _median_seconds(DistilledCalculator(model), atoms, repeats)
        reference = _median_seconds(load_teacher(teacher), atoms, max(2, repeats // 2))
    finally:
        torch.set_num_threads(previous)
    n = len(atoms)
    return {
        "atoms": n,
        "threads": threads,
        "student_us_per_atom_step": student / n * 1e6,
        "teacher_us_per_atom_step": reference / n * 1e6,
        "speedup": reference / student,
        "stress": reports_stress(atoms.cell.rank, atoms.pbc),
    }


def speed_structure(frames, min_atoms: int = 64):
    """The structure a card times: the representative of ``frames`` (the held-out data, so of
    the model's own chemistry; :func:`mlffd.representative.pick_structure`), a periodic one
    repeated to at least ``min_atoms`` atoms."""
    from mlffd.representative import grown, pick_structure

    return grown(pick_structure(list(frames)), min_atoms)


def _value(record: dict[str, Any], key: str) -> str:
    v = record.get(key)
    if record.get("tolerance_kind") == "flag" and key in ("teacher", "student"):
        return "–" if v is None else ("yes" if v else "no")
    return "–" if v is None else f"{v:.4g}"


#: what a failed flag of ``mlffd-validate properties`` means for a user, by key prefix
FLAG_MEANINGS = {
    "spurious_minimum": "false energy minima in compressed or expanded phases",
    "below_ground": "competing phases falling below the ground state",
    "collapse": "atoms collapsing onto each other in relaxations from tight starts",
    "short_range_attractive": "no repulsive wall at short range (pairs pushed together attract)",
    "short_range_nonmonotonic": "a non-monotonic short-range wall",
    "elastic_instability": "a mechanically unstable ground state",
    "phonon_imaginary_modes": "imaginary phonon modes",
    "liquid_unstable": "unstable liquid MD",
    "hot_solid_unstable": "hot-solid MD (twice the melting temperature) leaving the physical regime",
}


#: the same for the molecular sections, whose flags end with the key (``MOLECULE_imaginary_modes``)
MOLECULE_FLAG_MEANINGS = {
    "imaginary_modes": "imaginary vibrational modes at its own minimum (its minimum is a saddle point)",
    "bonds_changed": "bonds breaking or forming while relaxing a molecule",
}


def failed_behaviours(report: dict[str, Any]) -> list[str]:
    """The unphysical behaviours (failed flags) of a properties report, in words, with the
    cases each was seen in (e.g. the phases, the molecules)."""
    seen: dict[str, list[str]] = {}
    meanings = FLAG_MEANINGS | MOLECULE_FLAG_MEANINGS
    for r in report.get("records", []):
        if r.get("tolerance_kind") != "flag" or r.get("passed") is not False:
            continue
        suffix = next((k for k in MOLECULE_FLAG_MEANINGS if r.get("section") in _MOLECULAR
                       and r["property"].endswith("_" + k)), None)
        if suffix is not None:
            seen.setdefault(suffix, []).append(r["property"][: -len(suffix) - 1])
            continue
        for prefix in sorted(FLAG_MEANINGS, key=len, reverse=True):
            if r["property"] == prefix or r["property"].startswith(prefix + "_"):
                seen.setdefault(prefix, []).append(r["property"][len(prefix) + 1:])
                break
    return [meanings[k] + (f" ({', '.join(c for c in cases if c)})" if any(cases) else "")
            for k, cases in seen.items()]


#: the sections of ``mlffd-validate properties`` for molecules
_MOLECULAR = ("geometry", "vibrations", "torsions", "conformers")


def properties_section(report: dict[str, Any], source: str) -> str:
    """The card's property table from a ``properties.json`` of ``mlffd-validate properties``:
    the verdict, the failures by section and in words, then every scored row, failures first."""
    records = [r for r in report.get("records", []) if r.get("passed") is not None]
    failed = [r for r in records if not r["passed"]]
    lines = [f"## Physical properties against the teacher (`{source}`)\n\n",
             f"`mlffd-validate properties --model {report.get('student')} --teacher {report.get('teacher')}`: "
             f"**{report.get('verdict', '')}**.\n\n"]
    if failed:
        lines.append("Where it fails:\n\n")
        sections = list(dict.fromkeys(r["section"] for r in records))
        for section in sections:
            bad = [r["property"] for r in failed if r["section"] == section]
            total = sum(r["section"] == section for r in records)
            if bad:
                lines.append(f"- **{section}** ({len(bad)} of {total} rows): " + ", ".join(f"`{b}`" for b in bad) + "\n")
        behaviours = failed_behaviours(report)
        if behaviours:
            lines.append("\nUnphysical behaviour found: " + "; ".join(behaviours) + ".\n")
        lines.append("\n")
    lines.append("| section | property | unit | teacher | student | error | tolerance | |\n"
                 "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    for r in failed + [r for r in records if r["passed"]]:
        kind = r.get("tolerance_kind")
        error = "" if kind == "flag" or r.get("error") is None else (
            f"{r['error']:+.3g} %" if kind == "rel_%" else f"{r['error']:+.4g}")
        tol = "must not occur" if kind == "flag" else ("" if r.get("tolerance") is None else (
            f"±{r['tolerance']:g} %" if kind == "rel_%" else f"±{r['tolerance']:g}"))
        lines.append(f"| {r['section']} | {r['property']} | {r['unit']} | {_value(r, 'teacher')} | {_value(r, 'student')} "
                     f"| {error} | {tol} | {'PASS' if r['passed'] else 'FAIL'} |\n")
    return "".join(lines) + "\n"


def _uncertainty_section(record: dict[str, Any] | None, checked: tuple[dict[str, Any], str] | None = None) -> str:
    """What the student says about its own errors (ensemble heads, refitted and calibrated at
    export), and (``checked``: a forces.json of ``mlffd-validate forces`` and its path) how well
    that ranks the true errors on other data."""
    if not record:
        return ("## Uncertainty\n\nThis student has no ensemble heads: it cannot say when it is outside its data "
                "(train with `model_overrides: {ensemble: 4}`); use `mlffd-validate trust` with a teacher.\n\n")
    refit = record.get("refit") or {}
    draws = len(refit.get("draws", ()))  # refit_best_of: the draw of frames that ranked the held-out errors best
    best_of = f" (the best of {draws} random draws by the ranking below)" if draws > 1 else ""
    how = (f"their deviations refitted to its own errors on {refit['frames']} training frames{best_of} (mean "
           "unchanged), then " if refit.get("method") == "nll" else "")
    source = f" (`{'`, `'.join(record['data'])}`)" if record.get("data") else ""
    text = ("## Uncertainty\n\n"
            f"{record['heads']} ensemble heads, {how}calibrated on {record['frames']} held-out frames{source} (predicted "
            f"RMS = observed RMS: force {record['force_rmse']:.3g} eV/Å, energy {record['energy_rmse_eV']:.3g} eV per "
            f"structure). On those frames the predicted force uncertainty ranks the true force error with Spearman "
            f"ρ = {record['spearman_structure_force']:.2f} per structure and {record['spearman_atom_force']:.2f} per "
            "atom. `DistilledCalculator(..., uncertainty=True)`, `pair_style mlffd uncertainty X` and "
            "`mlffd-validate trust` use it; `mlffd-validate forces` shows it against the true error on any data.\n\n")
    if checked is None or "uncertainty" not in checked[0]:
        return text
    u, data = checked[0]["uncertainty"], checked[0].get("inputs", {}).get("data", checked[1])
    text += (f"On `{data}` ({checked[0].get('inputs', {}).get('n_frames', '?')} frames; `{checked[1]}`): Spearman ρ = "
             f"{u['spearman_structure']:.2f} per structure and {u['spearman_atom']:.2f} per atom; predicted RMS "
             f"{u['rms_predicted']:.3g} against observed {u['rms_observed']:.3g} eV/Å. Reliability (atoms in bins of "
             "predicted uncertainty, equal counts):\n\n| atoms | predicted RMS (eV/Å) | observed RMS (eV/Å) |\n| --- | --- | --- |\n")
    for row in u.get("reliability", []):
        text += f"| {row['atoms']} | {row['predicted_rms']:.3f} | {row['observed_rms']:.3f} |\n"
    return text + "\n"


def _novelty_section(record: dict[str, Any] | None, checked: tuple[dict[str, Any], str] | None = None) -> str:
    """What the student says about how unfamiliar a structure is (its novelty reference), and
    (``checked``, as for the uncertainty) how well that ranks the true errors on other data."""
    if not record:
        return ""
    atoms = ", ".join(f"{el} {n}" for el, n in record.get("atoms", {}).items())
    text = ("## Novelty\n\n"
            f"A novelty reference fitted on {record['frames']} training frames (atoms: {atoms}): each atom's "
            "Mahalanobis distance from its element's training atoms in the features the energy is read from, "
            f"scaled so that {100 * record['training_structures_above_1']:.0f} % of those structures are above 1 "
            "(`novelty`, `novelties` with `uncertainty=True`; `pair_style mlffd novelty X`; `mlffd-validate trust "
            "--novelty`). Unlike the ensemble heads, which share this student's features, it can flag environments "
            "the heads agree on wrongly.\n\n")
    if checked is not None and "novelty" in checked[0].get("uncertainty", {}):
        n, data = checked[0]["uncertainty"]["novelty"], checked[0].get("inputs", {}).get("data", checked[1])
        text += (f"On `{data}`: frames' novelty against their energy error per atom, Spearman ρ = "
                 f"{n['spearman_energy_error']:.2f} (force RMSE {n['spearman_force_rmse']:.2f}); "
                 f"{100 * n['fraction_above_1']:.0f} % of the frames above 1, largest {n['max']:.2f}.\n\n")
    return text


def _coverage(metrics: dict[str, Any], data: str, heldout_molecules: bool = False) -> str:
    """What the student was shown: the configuration types of its held-out data."""
    types = metrics.get("by_config_type", {})
    listed = ", ".join(f"{t} ({m['frames']})" for t, m in sorted(types.items()))
    if heldout_molecules:
        return (f"Configuration types of the held-out frames (`{data}`, frames of each): {listed}. They are teacher "
                "MD frames of the held-out molecules listed below, none of which is a training molecule: the numbers "
                "measure new molecules, not new frames of known ones.\n\n")
    return (f"Configuration types of the held-out frames (`{data}`, frames of each): {listed}. The training data "
            "come from the same sampling; the property table below shows how the student does away from it.\n\n")


def _accuracy_table(metrics: dict[str, Any], data: str, bounds: Mapping[str, float] | None) -> str:
    """The card's accuracy table; with ``bounds`` a column saying whether each metric meets its bound."""

    def row(label: str, key: str, unit: str, fmt: str = "{:.4f}", lower_is_better: bool = True) -> str:
        value = metrics.get(key)
        if value is None:
            return ""
        target = (bounds or {}).get(key)
        verdict = ""
        if target is not None:
            ok = value <= target if lower_is_better else value >= target
            verdict = f"{'≤' if lower_is_better else '≥'} {target:g} — {'met' if ok else 'NOT met'}"
        return f"| {label} | {fmt.format(value)} {unit} |" + (f" {verdict} |\n" if bounds is not None else "\n")

    return "".join([
        f"## Accuracy on held-out teacher frames (`{data}`, {metrics.get('num_frames')} frames from separate teacher trajectories)\n\n",
        "| metric | value | target |\n| --- | --- | --- |\n" if bounds is not None else "| metric | value |\n| --- | --- |\n",
        row("energy MAE", "energy_mae_mev_per_atom", "meV/atom", "{:.2f}"),
        row("force RMSE", "force_rmse", "eV/Å"),
        row("force MAE", "force_mae", "eV/Å"),
        row("force R²", "force_r2", "", "{:.5f}", lower_is_better=False),
        row("mean angular error", "force_angle_mean_deg", "°", "{:.2f}"),
        row("force error p95", "force_error_p95", "eV/Å"),
        row("force error max", "force_error_max", "eV/Å"),
        row("stress MAE", "stress_mae_gpa", "GPa"),
    ])


def render(name: str, metadata: dict[str, Any], metrics: dict[str, Any], speed: dict[str, Any] | None, data: str,
           properties: tuple[dict[str, Any], str] | None = None, targets: tuple[Mapping[str, float], str] | None = None,
           stability: Sequence[tuple[dict[str, Any], str]] = (), active: tuple[dict[str, Any] | None, str] = (None, ""),
           checked: tuple[dict[str, Any], str] | None = None, recipe: str | None = None,
           molecules: Mapping[str, tuple[Mapping[str, str], str]] | None = None, notes: str = "") -> str:
    """The Markdown card of one model (``properties``: a properties.json and its path;
    ``targets``: bounds on the accuracy metrics, e.g. ``{"force_rmse": 0.12}``, and the file
    they came from, shown as a column with each verdict; ``stability``: nve.json reports and
    their paths; ``active``: its active loop's report and path; ``checked``: a forces.json of
    ``mlffd-validate forces`` and its path, for the uncertainty against the true error;
    ``recipe``: the distill YAML that made it (the Reproduce block); ``molecules``: heading ->
    (name -> SMILES, source) of the molecules it was trained and tested on; ``notes``: Markdown
    placed before Reproduce)."""
    elements = list(metadata["elements"])
    stand_in = ("SevenNet 7net-0 is the offline stand-in for Orb v3 here: its weights ship inside the `sevenn` "
                "wheel, Orb's cannot be downloaded on the machines that trained this model. Re-run `mlffd distill` "
                "with an `orb:` teacher where Orb weights are available.") if str(metadata["teacher"]).startswith("sevennet") else ""
    lines = [
        f"# Model card: `{name}`\n\n",
        f"Student potential for {'-'.join(elements)} distilled from **{metadata['teacher']}**. {stand_in}\n\n",
        "| | |\n| --- | --- |\n",
        f"| file | `mlffd/registry_models/{name}.mlffd.pt` |\n",
        f"| parameters | {metadata['num_parameters']:,} |\n",
        f"| architecture | {metadata['model'].get('architecture', '?')}: {metadata['num_interactions']} interactions, "
        f"features {metadata['model'].get('features')}, message dim {metadata['model'].get('message_dim')} |\n",
        f"| cutoff / interaction range | {metadata['cutoff']} Å / {metadata['interaction_range']} Å |\n",
        f"| dtype | {metadata['dtype']} |\n",
        f"| training data sha256 | `{metadata['dataset_sha256'][:16]}…` |\n",
        f"| created | {metadata['created']} |\n\n",
        "## Coverage\n\n",
        _coverage(metrics, data, any(k.lower().startswith("held-out") for k in (molecules or {}))),
        _accuracy_table(metrics, data, targets[0] if targets else None),
        "\nBy configuration type:\n\n| config_type | frames | energy MAE (meV/atom) | force RMSE (eV/Å) |\n| --- | --- | --- | --- |\n",
    ]
    for ctype, m in sorted(metrics.get("by_config_type", {}).items()):
        lines.append(f"| {ctype} | {m['frames']} | {m['energy_mae_mev_per_atom']:.2f} | {m['force_rmse']:.4f} |\n")
    lines.append("\n")
    lines.append(_element_table(metrics, elements))
    if molecules:
        lines.append(molecules_section(molecules))
    lines.append(_uncertainty_section(metadata.get("uncertainty"), checked))
    lines.append(_novelty_section(metadata.get("novelty"), checked))
    if properties is not None:
        lines.append(properties_section(*properties))
    else:
        lines.append("## Physical properties against the teacher\n\nNot measured for this card: run "
                     f"`mlffd-validate properties --model {name} --teacher {metadata['teacher']}` and pass its "
                     "`properties.json` to `mlffd card --properties`.\n\n")
    lines.append(stability_section(stability))
    lines.append(active_section(*active))
    lines.append("\n## Speed\n\n")
    if speed:
        lines.append(
            f"On a {speed['atoms']}-atom structure of the held-out data through ASE ({speed['threads']} thread, energy + forces{' + stress' if speed.get('stress', True) else ''}, "
            f"median, same process): student {speed['student_us_per_atom_step']:.0f} µs/atom-step, teacher "
            f"{speed['teacher_us_per_atom_step']:.0f} µs/atom-step: **{speed['speedup']:.0f}× faster**. "
            "Larger systems and LAMMPS: `docs/performance.md`.\n"
        )
    else:
        lines.append("Not measured for this card; see `docs/performance.md`.\n")
    if notes:
        lines.append("\n" + notes.strip() + "\n")
    lines.append(
        f"\n## Reproduce\n\n```bash\nmlffd distill {recipe or 'examples/si/distill.yaml'} --student "
        f"{name}\nmlffd card {name} --data {data} --teacher {metadata['teacher']}"
        + ("" if targets is None else f" --targets {targets[1]}")
        + ("" if recipe is None else f" --recipe {recipe}")
        + ("" if properties is None else f" --properties {properties[1]}\nmlffd-validate properties --model "
           f"{properties[0].get('student')} --teacher {properties[0].get('teacher')}")
        + "\n```\n\n"
        "## Intended use and limits\n\n"
        "Molecular dynamics and relaxations of " + "-".join(elements) + " in the configurations above, in ASE "
        "(`DistilledCalculator(\"" + name + "\")`) or LAMMPS (`pair_coeff * * " + name + " " + " ".join(elements) + "`). "
        "Not for other elements, for configurations far from those, or for properties the teacher "
        "itself gets wrong: a student is at best as good as its teacher. Check your use with "
        "`mlffd-validate compare --model " + name + " --teacher " + metadata["teacher"] + "`.\n\n"
        + _limits_from_properties(properties) +
        "Choosing among the shipped students: see [README.md](README.md).\n"
    )
    return "".join(lines)


def _element_table(metrics: dict[str, Any], elements: Sequence[str]) -> str:
    """Force errors per element of the held-out frames (models of more than one element)."""
    by = metrics.get("by_element") or {}
    if len(by) < 2:
        return ""
    lines = ["By element (force components of the atoms of that element):\n\n",
             "| element | atoms | force RMSE (eV/Å) | force MAE (eV/Å) | force R² | mean angle (°) |\n",
             "| --- | --- | --- | --- | --- | --- |\n"]
    order = [e for e in elements if e in by] + sorted(set(by) - set(elements))
    for el in order:
        m = by[el]
        lines.append(f"| {el} | {m.get('atoms')} | {m['rmse']:.4f} | {m['mae']:.4f} | {m['r2']:.4f} | "
                     f"{m.get('angle_mean_deg', float('nan')):.1f} |\n")
    return "".join(lines) + "\n"


def molecules_section(molecules: Mapping[str, tuple[Mapping[str, str], str]]) -> str:
    """The molecules a student was trained and tested on: one table per heading, with the atom
    counts from RDKit."""
    lines = []
    for heading, (table, source) in molecules.items():
        lines.append(f"## {heading} ({len(table)}, `{source}`)\n\n| molecule | SMILES | heavy atoms | atoms |\n| --- | --- | --- | --- |\n")
        for name, smiles in table.items():
            heavy, total = _atom_counts(smiles)
            lines.append(f"| {name} | `{smiles}` | {heavy} | {total} |\n")
        lines.append("\n")
    return "".join(lines)


def _atom_counts(smiles: str) -> tuple[Any, Any]:
    try:
        from mlffd.sampling.molecules import parse_smiles

        mol = parse_smiles(smiles)
    except (ImportError, ValueError):
        return "?", "?"
    return sum(a.GetAtomicNum() > 1 for a in mol.GetAtoms()), mol.GetNumAtoms()


def sampling_molecules(path: str | Path) -> dict[str, str]:
    """Name -> SMILES of the ``smiles`` seeds of a sampling YAML (``mlffd sample``'s config), or
    of the ``sample:`` config a distill YAML names (relative to its ``root``)."""
    import yaml

    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(raw, dict) and "seeds" not in raw and isinstance(raw.get("sample"), str):
        root = path.parent / str(raw.get("root", "."))
        return sampling_molecules(root / raw["sample"])
    seeds = raw.get("seeds") if isinstance(raw, dict) else None
    if not isinstance(seeds, list):
        raise ValueError(f"{path}: neither a sampling YAML (no 'seeds') nor a distill YAML naming one ('sample:')")
    return {str(x.get("name") or f"seed_{k}"): str(x["smiles"]) for k, x in enumerate(seeds)
            if isinstance(x, dict) and x.get("smiles")}


def _limits_from_properties(properties: tuple[dict[str, Any], str] | None) -> str:
    """The card's warning drawn from its property table: what not to use the student for."""
    if properties is None:
        return ""
    behaviours = failed_behaviours(properties[0])
    if not behaviours:
        return "Its property table against the teacher shows no unphysical behaviour.\n\n"
    molecular = all(r.get("section") in _MOLECULAR for r in properties[0].get("records", [])
                    if r.get("tolerance_kind") == "flag" and r.get("passed") is False)
    then = ("Minima, frequencies and scans of molecules like these need a check against the teacher first."
            if molecular else "Runs that reach such configurations (high pressure, close contacts, strongly distorted "
            "starts, very hot MD) need a check against the teacher first.")
    return "**Where it must not be trusted** (property table above): " + "; ".join(behaviours) + ". " + then + "\n\n"


def stability_section(reports: Sequence[tuple[dict[str, Any], str]]) -> str:
    """The card's MD-stability table from ``nve.json`` reports of ``mlffd-validate nve`` (one row each)."""
    if not reports:
        return ""
    rows = []
    for report, source in reports:
        s = report.get("settings", {})
        drift = report.get("drift_meV_per_atom_per_ps")
        dev = report.get("max_deviation_meV_per_atom")
        rows.append((report.get("engine", "?"), s.get("temperature_K"), s.get("seed"), report.get("n_atoms"),
                     s.get("thermalise_fs"), s.get("time_fs"), drift, dev, bool(report.get("passed")),
                     "; ".join(report.get("fail_reasons") or []), source))
    passed = sum(r[8] for r in rows)
    lines = ["## MD stability\n\n",
             f"`mlffd-validate nve` (Langevin thermalisation, then NVE; drift threshold "
             f"{reports[0][0].get('settings', {}).get('threshold', '?')} meV/atom/ps): **{passed} of {len(rows)} runs pass**.\n\n",
             "| engine | T (K) | seed | atoms | thermalise (fs) | NVE (fs) | drift (meV/atom/ps) | max abs ΔE (meV/atom) | |\n",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"]

    def num(v: Any, fmt: str) -> str:
        return "–" if not isinstance(v, (int, float)) or v != v else fmt.format(v)

    for engine, t, seed, n, therm, time_fs, drift, dev, ok, why, _ in sorted(rows, key=lambda r: (r[0], r[1] or 0, r[2] or 0)):
        lines.append(f"| {engine} | {num(t, '{:g}')} | {seed} | {n} | {num(therm, '{:g}')} | {num(time_fs, '{:g}')} | "
                     f"{num(drift, '{:+.3f}')} | {num(dev, '{:.2f}')} | {'PASS' if ok else 'FAIL: ' + why} |\n")
    return "".join(lines) + "\n"


def active_section(report: dict[str, Any] | None, source: str = "") -> str:
    """The card's record of the active-distillation loop (``report.json`` of :mod:`mlffd.active`):
    one row per round, the frames the teacher labelled and why, the errors before and after."""
    if not report:
        return ""
    names = report.get("member_names") or []
    lines = ["## Active distillation\n\n",
             f"{len(report.get('rounds', []))} round(s), {report.get('teacher_calls')} teacher calls (budget "
             f"{report.get('teacher_calls_total_budget')}); stopped: {report.get('stop_reason') or 'not finished'}. "
             + (f"Committee: {', '.join(f'`{n}`' for n in names)}. " if names else "")
             + "Flagged-frame force RMSE (eV/Å) of member 0 before and after the round's fine-tuning; Spearman: "
             "committee deviation vs member 0's true largest force error on the labelled frames"
             + (f" (`{source}`)" if source else "") + ".\n\n",
             "| round | explored | failed | candidates | labelled | labelled by reason | flagged RMSE before | after | Spearman |\n",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"]

    def num(v: Any) -> str:
        return "–" if not isinstance(v, (int, float)) else f"{v:.3f}"

    for rec in report.get("rounds", []):
        flags = rec.get("flags", {})
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((rec.get("selected_by_reason") or {}).items()) if v)
        before, after = rec.get("before") or {}, rec.get("after") or {}
        lines.append(f"| {rec.get('round')} | {rec.get('explored')} | {flags.get('failed')} | {flags.get('candidate')} | "
                     f"{rec.get('labelled')} | {reasons} | {num(before.get('flagged_force_rmse_member0'))} | "
                     f"{num(after.get('flagged_force_rmse_member0'))} | {num(rec.get('spearman'))} |\n")
    return "".join(lines) + "\n"


def merge_properties(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several ``properties.json`` of one student (e.g. sections run separately) as one report:
    their rows together and the verdict over all of them."""
    if not reports:
        raise ValueError("no properties reports to merge")
    merged = dict(reports[0])
    merged["records"] = [r for rep in reports for r in rep.get("records", [])]
    scored = [r for r in merged["records"] if r.get("passed") is not None]
    bad = [r for r in scored if not r["passed"]]
    merged["verdict"] = (f"FAIL: {len(bad)} of {len(scored)} scored properties outside tolerance" if bad
                         else f"PASS: all {len(scored)} scored properties within tolerance")
    return merged


def write_card(
    model: str | Path, data: str | Path, teacher: str | None = None, out_dir: str | Path = "docs/models", name: str | None = None,
    speed: bool = True, properties: str | Path | Sequence[str | Path] | None = None, targets: str | Path | None = None,
    nve: Sequence[str | Path] = (), active: str | Path | None = None, forces: str | Path | None = None,
    recipe: str | Path | None = None, heldout_molecules: str | Path | None = None, notes: Sequence[str | Path] = (),
) -> Path:
    """Measure and write ``out_dir/NAME.md``; returns its path. ``properties``: the
    ``properties.json`` of ``mlffd-validate properties`` for this model, or several merged (its
    table goes in the card); ``targets``: a JSON file of bounds on the accuracy metrics
    (``{"force_rmse": 0.12, ...}``) to state met or not next to each metric; ``nve``:
    ``nve.json`` reports of ``mlffd-validate nve`` (the MD-stability table); ``active``: the
    ``report.json`` of its active-distillation loop; ``forces``: the ``forces.json`` of
    ``mlffd-validate forces`` for this model (its uncertainty against the true error);
    ``recipe``: its distill YAML (the Reproduce block, and the training molecules when its
    sampling config has SMILES seeds); ``heldout_molecules``: the sampling YAML of the held-out
    molecules (listed); ``notes``: Markdown files of measurements made elsewhere, each with its
    command, placed before Reproduce."""
    from mlffd.artifact import read_metadata
    from mlffd.registry import resolve
    from mlffd.training.evaluate import evaluate

    path = resolve(model)
    metadata = read_metadata(path)
    name = name or Path(path).name.split(".")[0]
    metrics = evaluate(path, data)
    teacher = teacher or metadata["teacher"]
    timing = None
    if speed:
        from mlffd.data import read_frames

        timing = measure_speed(path, teacher, atoms=speed_structure(read_frames(data)))
    table = None
    if properties is not None:
        files = [properties] if isinstance(properties, (str, Path)) else list(properties)
        table = (merge_properties([_read_report(f, *PROPERTIES_REPORT) for f in files]), " --properties ".join(str(f) for f in files))
    bounds = None if targets is None else (_read_targets(targets), str(targets))
    stability = [(_read_report(f, *NVE_REPORT), str(f)) for f in nve]
    loop = None if active is None else _read_report(active, *ACTIVE_REPORT)
    checked = None if forces is None else (_read_report(forces, *FORCES_REPORT), str(forces))
    molecules: dict[str, tuple[dict[str, str], str]] = {}
    if recipe is not None:
        train = sampling_molecules(recipe)
        if train:
            molecules["Training molecules"] = (train, str(recipe))
    if heldout_molecules is not None:
        molecules["Held-out molecules"] = (sampling_molecules(heldout_molecules), str(heldout_molecules))
    text = "\n".join(Path(f).read_text(encoding="utf-8").strip() + "\n" for f in notes)
    out = Path(out_dir) / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(name, metadata, metrics, timing, str(data), table, bounds, stability, (loop, str(active or "")),
                          checked, None if recipe is None else str(recipe), molecules, text))
    return out


#: (what, key, type of its value) of each JSON report a card reads: _read_report's checks
PROPERTIES_REPORT = ("properties.json of mlffd-validate properties", "records", list)
NVE_REPORT = ("nve.json of mlffd-validate nve", "drift_meV_per_atom_per_ps", object)
ACTIVE_REPORT = ("report.json of an active-distillation loop", "rounds", object)
FORCES_REPORT = ("forces.json of mlffd-validate forces", "overall", dict)


def _read_json(path: str | Path, what: str) -> Any:
    """The JSON in ``path``, a ``what``; ValueError naming the file when it cannot be read."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def _read_report(path: str | Path, what: str, key: str, kind: type = object) -> dict[str, Any]:
    """A JSON report, a ``what`` (one of the ``*_REPORT`` triples); ValueError naming the file when
    it is unreadable or not an object with ``key`` (a ``kind``)."""
    report = _read_json(path, what)
    if not isinstance(report, dict) or key not in report or not isinstance(report[key], kind):
        raise ValueError(f"{path} is not a {what} (no {key!r}{'' if kind is object else ' ' + kind.__name__})")
    return report


def _read_targets(path: str | Path) -> dict[str, float]:
    """A JSON object of metric name -> bound; ValueError naming the file otherwise."""
    raw = _read_json(path, "targets")
    if not isinstance(raw, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw.values()):
        raise ValueError(f"{path}: expected a JSON object of metric name -> number (e.g. {{\"force_rmse\": 0.12}})")
    return {str(k): float(v) for k, v in raw.items()}
