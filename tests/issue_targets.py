"""The targets the issues set for the shipped students, held here, by the tests, not by the
product: ``mlffd bench`` and ``mlffd card`` report numbers; whether they meet a bound is a test."""

from __future__ import annotations

#: accuracy on held-out teacher frames per size preset (force RMSE eV/Å, R², mean angle °,
#: energy MAE meV/atom); ``mlffd card --targets FILE`` takes one preset's row as JSON
ACCURACY: dict[str, dict[str, float]] = {
    "original": {"force_rmse": 0.08, "force_r2": 0.995, "force_angle_mean_deg": 5.0, "energy_mae_mev_per_atom": 3.0},
    "tiny": {"force_rmse": 0.12, "force_r2": 0.99, "force_angle_mean_deg": 8.0, "energy_mae_mev_per_atom": 5.0},
    "ultra-tiny": {"force_rmse": 0.20, "force_r2": 0.97, "force_angle_mean_deg": 12.0, "energy_mae_mev_per_atom": 8.0},
}

#: issue 20's accuracy targets for the drug-like family on its held-out molecules (300-800 K MD
#: frames); ``examples/druglike/targets.json`` holds the same for ``mlffd card --targets``
DRUGLIKE_ACCURACY: dict[str, float] = {"force_r2": 0.98, "force_rmse": 0.15, "energy_mae_mev_per_atom": 2.0}

#: speed and memory per size preset: cost / LAMMPS SW <=, speed-up vs Orb v3 conservative >=,
#: speed-up vs 7net-0 >=, peak memory at 32,768 atoms <= GB
PERFORMANCE: dict[str, dict[str, float]] = {
    "ultra-tiny": {"vs_sw": 30.0, "vs_orb": 1000.0, "vs_7net": 200.0, "mem_gb": 0.4},
    "tiny": {"vs_sw": 75.0, "vs_orb": 400.0, "vs_7net": 100.0, "mem_gb": 0.6},
    "original": {"vs_sw": 375.0, "vs_orb": 80.0, "vs_7net": 20.0, "mem_gb": 2.0},
}
FLATNESS_LIMIT = 1.2  #: cost(32,768) / cost(512)
PLUGIN_OVERHEAD_LIMIT = 1.10  #: lammps-mlffd (1 rank) / artifact at 4,096 atoms
BATCH_SPEEDUP_TARGET = 10.0

#: headline quantity (without its ``[...]`` qualifier) -> key of :data:`PERFORMANCE` or a fixed limit
_BOUNDS = {"cost_vs_sw": "vs_sw", "speedup_vs_orb_v3_conservative": "vs_orb", "speedup_vs_7net0": "vs_7net",
           "peak_memory_gb_32768": "mem_gb", "flat_per_atom_512_to_max": FLATNESS_LIMIT,
           "plugin_overhead_vs_artifact": PLUGIN_OVERHEAD_LIMIT, "batched_speedup": BATCH_SPEEDUP_TARGET}


def check_performance(headline: list[dict]) -> dict[str, dict]:
    """Each row of ``mlffd.bench.headline`` of a preset with targets, by quantity, with its
    ``limit`` and ``pass`` (None where not measured)."""
    out = {}
    for row in headline:
        targets = PERFORMANCE.get(row["model"])
        if targets is None:
            continue
        bound = _BOUNDS[row["quantity"].split(" [")[0]]
        limit = targets[bound] if isinstance(bound, str) else bound
        value = row["value"]
        ok = None if value is None else (value <= limit if row["better"] == "lower" else value >= limit)
        out[row["quantity"]] = {**row, "limit": limit, "pass": ok}
    return out
