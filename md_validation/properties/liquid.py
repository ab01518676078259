"""Liquid and hot solid: the structure and self-diffusion of the melt, and whether the potential
stays physical in a crystal driven far above its melting point.

Cell and ensemble: the calculator's own relaxed ground state repeated to about
``config.supercell_atoms`` atoms (64 for diamond silicon), Langevin NVT (friction
:data:`FRICTION_PER_FS`, centre of mass held by ASE's ``FixCom``) at the crystal's density. Both
potentials are compared at equal conditions (same temperature, each at its own zero-pressure
crystal density); this is a comparison, not a prediction of the experimental liquid: real
liquid silicon is ~10 % denser than the crystal, liquid copper ~5 % less dense. At the crystal's
density the liquid at ``liquid_factor`` x Tm may sit below the melting point of that density
(supercooled); in runs of picoseconds it stays liquid, and a student whose liquid froze would
show D ~ 0. Tm is ``config.melting_K``, else the system's (``--melting-K``, else tabulated for
the element); without one the section is skipped with a note.

Liquid protocol:

1. start: random positions in the supercell, at least :func:`start_distance` apart (0.85 bonds,
   less in dense cells; random sequential addition), not the crystal: at the crystal's density a metal's
   crystal superheats far past 2 Tm (EMT copper is still a crystal after 600 fs at 2716 K), so
   a crystal that "melts" in a fixed time is not a reliable start; the random start is
   disordered by construction;
2. melt: NVT at ``hot_factor`` x Tm for :data:`MELT_FRACTION` x ``liquid_time_fs`` (at least
   :data:`MIN_MELT_FS`; friction :data:`MELT_FRICTION_PER_FS`), forgetting the random packing;
3. for each of ``config.seeds`` seeds: new Maxwell-Boltzmann velocities at ``liquid_factor`` x Tm,
   NVT for :data:`EQUILIBRATION_FRACTION` x ``liquid_time_fs`` (cooling from the melt and
   decorrelation from the other seeds), then production for ``liquid_time_fs`` with a frame
   every :data:`FRAME_FS` fs.

Per seed, from the production frames: the total g(r) (``rdf.partial_rdfs``, bins of
:data:`RDF_BIN_A` out to :data:`RDF_R_MAX_BONDS` x the start structure's bond, the same grid for
both calculators); its first peak (position from ``rdf.first_peak`` on g smoothed by
:data:`PEAK_SMOOTH_A`, height of the smoothed g there: the smoothing lowers a ~0.3 Å wide peak by
a few %, equally for both); the coordination number, 4πρ∫g r² dr up to the first minimum; the
self-diffusion coefficient D from the Einstein relation MSD = 6 D t (positions unwrapped across
the cell, centre-of-mass drift removed, averaged over :data:`MSD_ORIGINS` time origins; MSD on
lags up to half the run, where every origin contributes, fitted linearly over the second half of
those lags, past the ballistic start). D is in Å²/ps (1 Å²/ps = 10⁻⁴ cm²/s = 10 x 10⁻⁵ cm²/s;
liquid silicon at its melting point, experiment: ~2 x 10⁻⁴ cm²/s). Thermostat friction slows diffusion a
little, equally for both calculators.

Each property is the mean over the seeds with its standard error std/√n (n = seeds whose
production finished; one seed: NaN, no error bar). One run is noise: D of a 64-atom liquid
over a few ps varies by tens of % from run to run. ``compare`` scores each with tolerance = max(documented tolerance,
2√(se_T² + se_S²)) (relative ones as % of the teacher's mean), so a difference within twice the
combined noise is not a failure, and the note says when the noise set the tolerance.

Hot solid: for each seed, the perfect supercell with velocities at ``hot_factor`` x Tm, NVT for
``hot_time_fs``. At the crystal's density it may melt (silicon) or stay a superheated crystal
(copper); the question is whether atoms fall onto each other.

A run is unstable when the calculator raises, an energy or force is not finite, any |F| exceeds
:data:`MAX_FORCE_EV_A`, the temperature exceeds :data:`MAX_TEMPERATURE_FACTOR` x its target (each
stops the run), or two atoms come closer than ``tolerances.hot_collapse_fraction`` x the
teacher's bulk bond (checked every frame). Random streams: numpy Generators seeded with (seed,
stream), the same for both calculators; no global random state is touched.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from md_validation.properties.common import FAILURES, error_text, num
from md_validation.properties.config import PropertiesConfig, Tolerances
from md_validation.properties.recipes import diagonal_repeats, nearest_distance
from md_validation.properties.records import PropertyRecord, absolute, flag, relative
from md_validation.properties.system import System

SECTION = "liquid"
#: modules outside this package its numbers depend on (part of the teacher cache key)
DEPENDS = ("md_validation.md", "md_validation.structure_metrics", "md_validation.rdf")
#: Langevin friction (1/fs): a 100 fs coupling time, gentle on the dynamics, firm on the temperature
FRICTION_PER_FS = 0.01
#: friction of the melt (1/fs): a 20 fs coupling time drains the energy the random start releases
#: (with 100 fs, Stillinger-Weber silicon overshoots to ~3 x its target); its dynamics are not measured
MELT_FRICTION_PER_FS = 0.05
#: a frame (RDF, MSD, distance check) every this many fs
FRAME_FS = 10.0
#: length of the melt, as a fraction of ``liquid_time_fs`` ...
MELT_FRACTION = 0.25
#: ... but at least this long (fs): a few hundred fs to forget the random start
MIN_MELT_FS = 200.0
#: decorrelation of each seed at the liquid temperature, as a fraction of ``liquid_time_fs``
EQUILIBRATION_FRACTION = 0.25
#: atoms of the random liquid start are at least this x the bulk bond apart (a hot liquid comes
#: to ~0.8 bonds; at 0.7 bonds Stillinger-Weber silicon's forces exceed MAX_FORCE_EV_A) ...
START_DISTANCE_BONDS = 0.85
#: ... or less, where spheres of that diameter would fill more than this fraction of space
#: (random sequential addition jams at ~38 %; fcc at 0.85 bonds would need 45 %, so it starts at 0.72)
START_PACKING = 0.28
#: random placements tried per atom before the start distance is lowered by 5 %
START_TRIES_PER_ATOM = 500
#: g(r) grid: bins of this width (Å) ...
RDF_BIN_A = 0.02
#: ... out to this x the start structure's shortest bond (past the second shell)
RDF_R_MAX_BONDS = 2.5
#: Gaussian smoothing (Å) of g(r) before its first peak is located and read
PEAK_SMOOTH_A = 0.04
#: time origins averaged in the MSD
MSD_ORIGINS = 50
#: MSD points kept for the figure
MSD_POINTS = 100
#: a force beyond this (eV/Å) is unphysical for any condensed phase: the run is unstable and stops
MAX_FORCE_EV_A = 50.0
#: a temperature beyond this x the target means energy is pouring in: unstable, stops
MAX_TEMPERATURE_FACTOR = 10.0
#: random streams of the (seed, stream) Generators
MELT_STREAM, LIQUID_STREAM, HOT_STREAM = 1, 2, 3
#: (key in compute's "liquid" summaries, record name, unit, Tolerances field, relative?)
PROPERTIES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("peak_A", "liquid_rdf_peak_A", "Å", "rdf_peak_A", False),
    ("peak_height", "liquid_rdf_peak_height", "", "rdf_height_pct", True),
    ("coordination", "liquid_coordination", "", "coordination", False),
    ("diffusion_A2_per_ps", "liquid_diffusion_A2_per_ps", "Å²/ps", "diffusion_pct", True),
)


class _Stop(Exception):
    """Ends a run that has left the physical regime."""


# ----------------------------------------------------------------------------- MD


def min_distance(atoms: Atoms, search: float) -> float:
    """Shortest interatomic distance (Å, own periodic images included), inf when none is within ``search``."""
    from md_validation.structure_metrics import nearest_neighbor_distances

    if len(atoms) < 2 and not atoms.pbc.any():
        return math.inf
    return float(nearest_neighbor_distances(atoms, search=search).min())


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` from ``rng``, centre-of-mass motion removed."""
    from ase.md.velocitydistribution import Stationary

    from md_validation.md import thermalize as maxwell_boltzmann

    maxwell_boltzmann(atoms, temperature_K, rng)
    Stationary(atoms)


def run_nvt(atoms: Atoms, calc: Calculator, temperature_K: float, steps: int, dt_fs: float, rng: np.random.Generator,
            search: float, keep_frames: bool = False, on_step: Callable[[], None] | None = None,
            friction_per_fs: float = FRICTION_PER_FS) -> tuple[Atoms, dict[str, Any], list[Atoms]]:
    """Langevin NVT from ``atoms`` (with momenta) for ``steps``; never raises for the calculator.

    Returns the final state (momenta kept), the run's record (``steps_done``, ``error``, ``finite``,
    ``max_force``, ``min_distance`` over the frames, ``min_distance_series``, ``mean_temperature``,
    ``max_temperature``) and, with ``keep_frames``, the frames every :data:`FRAME_FS` fs
    (constraint-free copies, positions not wrapped).
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    atoms = atoms.copy()
    atoms.calc = calc
    atoms.set_constraint(FixCom())
    every = max(1, int(round(FRAME_FS / dt_fs)))
    dof = max(3 * len(atoms) - 3, 1)
    log: dict[str, Any] = {"steps_planned": int(steps), "steps_done": 0, "error": "", "finite": True,
                           "max_force": 0.0, "min_distance": math.inf, "min_distance_series": [],
                           "mean_temperature": math.nan, "max_temperature": 0.0}
    frames: list[Atoms] = []
    temperatures: list[float] = []
    state = {"last": -1}

    def frame() -> None:
        e = atoms.get_potential_energy()
        if not math.isfinite(e):
            log["finite"] = False
            raise _Stop("non-finite energy")
        d = min_distance(atoms, search)
        log["min_distance"] = min(log["min_distance"], d)
        log["min_distance_series"].append(d)
        t = 2.0 * atoms.get_kinetic_energy() / (dof * units.kB)
        temperatures.append(t)
        log["max_temperature"] = max(log["max_temperature"], float(t))
        if t > MAX_TEMPERATURE_FACTOR * max(temperature_K, 1.0):
            raise _Stop(f"temperature {t:.0f} K above {MAX_TEMPERATURE_FACTOR:g} x the target {temperature_K:.0f} K")
        if keep_frames:
            snap = atoms.copy()
            snap.set_constraint()
            frames.append(snap)

    def observe() -> None:
        n = dyn.nsteps
        if n == state["last"]:
            return
        state["last"] = n
        f = atoms.get_forces()
        if not np.isfinite(f).all():
            log["finite"] = False
            raise _Stop("non-finite forces")
        fmax = float(np.sqrt((f ** 2).sum(axis=1)).max()) if len(f) else 0.0
        log["max_force"] = max(log["max_force"], fmax)
        if fmax > MAX_FORCE_EV_A:
            raise _Stop(f"force {fmax:.3g} eV/Å above {MAX_FORCE_EV_A:g} eV/Å")
        if n % every == 0 or n == steps:
            frame()
        log["steps_done"] = n
        if n > 0 and on_step is not None:
            on_step()

    try:
        dyn = Langevin(atoms, timestep=dt_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
        dyn.attach(observe, interval=1)
        dyn.run(steps)
    except _Stop as exc:
        log["error"] = f"stopped at {log['steps_done'] * dt_fs:.0f} fs: {exc}"
    except FAILURES as exc:
        log["finite"] = False
        log["error"] = f"calculator failed at {log['steps_done'] * dt_fs:.0f} fs: {error_text(exc)}"
    if temperatures:
        log["mean_temperature"] = float(np.mean(temperatures))
    out = atoms.copy()
    out.set_constraint()
    out.calc = None
    return out, log, frames


# ----------------------------------------------------------------------------- analysis


def diffusion(frames: list[Atoms], dt_fs: float) -> dict[str, Any]:
    """MSD(t) and D of ``frames`` ``dt_fs`` apart (module docstring): ``t_ps``, ``msd_A2`` (lags up to
    half the run), ``D_A2_per_ps``."""
    from md_validation.structure_metrics import diffusion_coefficient, mean_square_displacement

    msd = mean_square_displacement(frames, max_origins=MSD_ORIGINS)
    half = len(msd) // 2 + 1
    t_ps = np.arange(len(msd)) * dt_fs / 1000.0
    d = diffusion_coefficient(t_ps[:half], msd[:half], fit_from=0.5)["D_A2_per_ps"] if half >= 4 else math.nan
    return {"t_ps": t_ps[:half], "msd_A2": msd[:half], "D_A2_per_ps": d}


def rdf_grid(system: System) -> tuple[float, int]:
    """``(r_max, nbins)`` of the g(r), from the start structure: the same for both calculators."""
    bond = nearest_distance(system.ground_atoms)
    nbins = int(math.ceil(RDF_R_MAX_BONDS * bond / RDF_BIN_A))
    return nbins * RDF_BIN_A, nbins


def liquid_structure(frames: list[Atoms], r_max: float, nbins: int) -> dict[str, Any]:
    """Total g(r) of ``frames``, its first peak (position, height), first minimum and coordination."""
    from md_validation.rdf import coordination_number, first_minimum, first_peak, partial_rdfs, smooth

    res = partial_rdfs(frames, r_max=r_max, nbins=nbins, pairs=[("*", "*")])
    r, g = res.r, res.g["all"]
    peak, _ = first_peak(r, g, sigma=PEAK_SMOOTH_A)
    height = float(smooth(r, g, PEAK_SMOOTH_A)[int(np.argmin(np.abs(r - peak)))]) if math.isfinite(peak) else math.nan
    r_min = first_minimum(r, g)
    cn = coordination_number(r, g, res.density["all"], r_min) if math.isfinite(r_min) else math.nan
    return {"r": r, "g": g, "peak_A": peak, "peak_height": height, "first_minimum_A": r_min, "coordination": cn}


def summarize(values: list[float]) -> dict[str, Any]:
    """Per-seed ``values``, their ``mean``, standard error ``se`` = std/√n (NaN for one value) and ``n`` (finite ones)."""
    x = np.array([v for v in values if math.isfinite(v)], float)
    n = len(x)
    return {"values": [float(v) for v in values], "mean": float(x.mean()) if n else math.nan,
            "se": float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, "n": n}


def _run_summary(log: dict[str, Any]) -> dict[str, Any]:
    return {k: log[k] for k in ("steps_planned", "steps_done", "error", "finite", "max_force", "min_distance",
                                "mean_temperature", "max_temperature")}


def start_distance(cell: Atoms, bond: float) -> float:
    """Shortest distance (Å) of the random liquid start: :data:`START_DISTANCE_BONDS` bonds, less in
    dense cells so that the spheres fill at most :data:`START_PACKING` of the cell."""
    packing = len(cell) * math.pi * bond ** 3 / (6.0 * abs(cell.get_volume()))
    return bond * min(START_DISTANCE_BONDS, (START_PACKING / packing) ** (1.0 / 3.0))


def random_start(cell: Atoms, rng: np.random.Generator, distance: float) -> Atoms:
    """``cell``'s atoms (species, cell) at random positions at least ``distance`` apart (periodic
    images included), by random sequential addition; the distance drops by 5 % whenever an atom
    finds no place in :data:`START_TRIES_PER_ATOM` tries."""
    m = cell.cell.array
    # rounding fractional differences finds the nearest image only in near-orthogonal cells; the
    # 27 neighbouring images cover oblique ones (hcp's 120 degrees) too
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)
    frac = np.empty((0, 3))
    tries = 0
    while len(frac) < len(cell):
        p = rng.random(3)
        d = frac - p
        d -= np.round(d)
        if not len(d) or np.linalg.norm((d[:, None, :] + shifts) @ m, axis=2).min() >= distance:
            frac = np.vstack([frac, p])
            tries = 0
            continue
        tries += 1
        if tries > START_TRIES_PER_ATOM:
            distance *= 0.95
            tries = 0
    out = cell.copy()
    out.set_constraint()
    out.positions = frac @ m
    return out


# ----------------------------------------------------------------------------- compute


def melting_temperature(system: System, config: PropertiesConfig) -> float | None:
    return config.melting_K if config.melting_K is not None else system.melting_K


def _steps(fs: float, dt_fs: float) -> int:
    return max(1, int(round(fs / dt_fs)))


def _curve_stats(curves: list[np.ndarray], keep: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Mean and standard error (NaN for one curve) over ``curves``, at indices ``keep``."""
    c = np.asarray(curves, float)
    se = c.std(axis=0, ddof=1) / math.sqrt(len(c)) if len(c) > 1 else np.full(c.shape[1], math.nan)
    mean = c.mean(axis=0)
    if keep is not None:
        mean, se = mean[keep], se[keep]
    return mean.tolist(), se.tolist()


def run_liquid(calc: Calculator, cell: Atoms, bond: float, temps: tuple[float, float], steps: tuple[int, int, int],
               dt_fs: float, seeds: int, grid: tuple[float, int], tick: Callable[[int], None]) -> dict[str, Any]:
    """Melt from a random start at ``temps[1]``, then ``seeds`` liquid runs at ``temps[0]`` (module
    docstring); ``steps`` = (melt, equilibration, production); ``tick(n)`` reports n MD steps done."""
    t_liquid, t_hot = temps
    melt_steps, eq_steps, prod_steps = steps
    search = 1.5 * bond
    frame_fs = max(1, int(round(FRAME_FS / dt_fs))) * dt_fs
    out: dict[str, Any] = {"notes": []}
    rng = np.random.default_rng([0, MELT_STREAM])
    start = random_start(cell, rng, start_distance(cell, bond))
    thermalize(start, t_hot, rng)
    melted, melt_log, _ = run_nvt(start, calc, t_hot, melt_steps, dt_fs, rng, search, on_step=lambda: tick(1),
                                  friction_per_fs=MELT_FRICTION_PER_FS)
    tick(melt_steps - melt_log["steps_done"])
    out["melt"] = _run_summary(melt_log) | {"start_min_distance": min_distance(start, search)}
    if melt_log["error"]:
        out["notes"].append(f"melt run: {melt_log['error']}")
    runs: list[dict[str, Any]] = []
    per_seed: dict[str, list[float]] = {k: [] for k, *_ in PROPERTIES}
    gs, msds, r_grid, t_msd = [], [], None, None
    for seed in range(seeds):
        values = {k: math.nan for k in per_seed}
        run: dict[str, Any] = {}
        if melt_log["error"]:
            run["error"] = "not run: the melt failed"
            tick(eq_steps + prod_steps)
        else:
            rng = np.random.default_rng([seed, LIQUID_STREAM])
            atoms = melted.copy()
            thermalize(atoms, t_liquid, rng)
            atoms, eq_log, _ = run_nvt(atoms, calc, t_liquid, eq_steps, dt_fs, rng, search, on_step=lambda: tick(1))
            tick(eq_steps - eq_log["steps_done"])
            run["equilibration"] = _run_summary(eq_log)
            frames: list[Atoms] = []
            if eq_log["error"]:
                tick(prod_steps)
            else:
                _, prod_log, frames = run_nvt(atoms, calc, t_liquid, prod_steps, dt_fs, rng, search, keep_frames=True,
                                              on_step=lambda: tick(1))
                tick(prod_steps - prod_log["steps_done"])
                run["production"] = _run_summary(prod_log)
                if prod_log["error"]:
                    frames = []
            if len(frames) >= 4:
                try:
                    st = liquid_structure(frames, *grid)
                    d = diffusion(frames, frame_fs)
                except FAILURES as exc:
                    run["error"] = f"analysis failed: {error_text(exc)}"
                else:
                    values = {"peak_A": st["peak_A"], "peak_height": st["peak_height"],
                              "coordination": st["coordination"], "diffusion_A2_per_ps": d["D_A2_per_ps"]}
                    run["first_minimum_A"] = st["first_minimum_A"]
                    gs.append(st["g"])
                    msds.append(d["msd_A2"])
                    r_grid, t_msd = st["r"], d["t_ps"]
        for k in per_seed:
            per_seed[k].append(values[k])
        runs.append(run)
    out["liquid_runs"] = runs
    out["liquid"] = {k: summarize(v) for k, v in per_seed.items()}
    if gs:
        mean, se = _curve_stats(gs)
        out["g"] = {"r": np.asarray(r_grid).tolist(), "mean": mean, "se": se}
        n = len(msds[0])
        keep = np.unique(np.linspace(0, n - 1, min(MSD_POINTS, n)).astype(int))
        mean, se = _curve_stats(msds, keep)
        out["msd"] = {"t_ps": np.asarray(t_msd)[keep].tolist(), "mean": mean, "se": se}
    return out


def run_hot_solid(calc: Calculator, cell: Atoms, bond: float, temperature_K: float, steps: int, dt_fs: float,
                  seeds: int, tick: Callable[[int], None]) -> list[dict[str, Any]]:
    """One NVT run of the perfect ``cell`` per seed at ``temperature_K``: each run's record, with
    its shortest distance at every frame."""
    hot = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, HOT_STREAM])
        atoms = cell.copy()
        thermalize(atoms, temperature_K, rng)
        _, log, _ = run_nvt(atoms, calc, temperature_K, steps, dt_fs, rng, 1.5 * bond, on_step=lambda: tick(1))
        tick(steps - log["steps_done"])
        hot.append(_run_summary(log) | {"min_distance_series": log["min_distance_series"]})
    return hot


def compute(calc: Calculator, system: System, ground: Atoms, config: PropertiesConfig) -> dict[str, Any]:
    """Liquid and hot-solid runs of one calculator (JSON-able; module docstring)."""
    from tqdm.auto import tqdm

    tm = melting_temperature(system, config)
    if tm is None:
        return {"skipped": "no melting temperature for this system: pass --melting-K to run the liquid section"}
    dt = config.timestep_fs
    melt = _steps(max(MELT_FRACTION * config.liquid_time_fs, MIN_MELT_FS), dt)
    eq, prod = _steps(EQUILIBRATION_FRACTION * config.liquid_time_fs, dt), _steps(config.liquid_time_fs, dt)
    hot_steps = _steps(config.hot_time_fs, dt)
    t_liquid, t_hot = config.liquid_factor * tm, config.hot_factor * tm
    ground = ground.copy()
    ground.set_constraint()
    repeats = diagonal_repeats(ground, config.supercell_atoms)
    cell = ground.repeat(repeats)
    bond = nearest_distance(ground)
    out: dict[str, Any] = {
        "melting_K": tm, "liquid_K": t_liquid, "hot_K": t_hot, "natoms": len(cell), "repeats": list(repeats),
        "bond_A": bond, "density_per_A3": len(cell) / abs(cell.get_volume()), "seeds": config.seeds,
        "timestep_fs": dt, "frame_fs": max(1, int(round(FRAME_FS / dt))) * dt, "melt_fs": melt * dt,
        "equilibration_fs": eq * dt, "production_fs": prod * dt, "hot_fs": hot_steps * dt,
    }
    total = melt + config.seeds * (eq + prod + hot_steps)
    with tqdm(total=total, desc=f"liquid and hot solid ({len(cell)} atoms)", unit="step", leave=False, disable=None) as bar:
        out |= run_liquid(calc, cell, bond, (t_liquid, t_hot), (melt, eq, prod), dt, config.seeds, rdf_grid(system),
                          bar.update)
        out["hot_runs"] = run_hot_solid(calc, cell, bond, t_hot, hot_steps, dt, config.seeds, bar.update)
    return out


# ----------------------------------------------------------------------------- comparison


def noise_tolerance(documented: float, se_teacher: float, se_student: float, scale: float = 1.0) -> tuple[float, bool]:
    """max(documented, 2√(se_T² + se_S²) x ``scale``) and whether the noise term set it; a NaN
    standard error (one seed) adds nothing."""
    se = [s for s in (se_teacher, se_student) if math.isfinite(s)]
    noise = 2.0 * math.sqrt(sum(s * s for s in se)) * scale if se else 0.0
    return (noise, True) if math.isfinite(noise) and noise > documented else (documented, False)


def _runs(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every run record of ``kind`` ("liquid": the melt and each seed's stages; "hot")."""
    if kind == "hot":
        return [r or {} for r in result.get("hot_runs") or []]
    if not result.get("melt"):
        return []
    out = [result["melt"]]
    for run in result.get("liquid_runs") or []:
        run = run or {}
        out += [run.get(k) or {} for k in ("equilibration", "production") if run.get(k)]
        if run.get("error") and not run.get("equilibration"):
            out.append({"error": run["error"], "not_run": True})
    return out


def _min_over(runs: list[dict[str, Any]]) -> float:
    return min((num(r.get("min_distance")) for r in runs if math.isfinite(num(r.get("min_distance")))), default=math.nan)


def _instability(runs: list[dict[str, Any]], limit: float) -> str:
    """Why ``runs`` are unstable ('' when they are not)."""
    if not runs:
        return "no runs"
    for r in runs:
        if r.get("not_run"):
            continue
        if r.get("error"):
            return str(r["error"])
        if r.get("finite") is False:
            return "non-finite energy or forces"
        if num(r.get("max_force")) > MAX_FORCE_EV_A:
            return f"|F| {num(r.get('max_force')):.3g} eV/Å"
        d = num(r.get("min_distance"))
        if not math.isfinite(d) or not math.isfinite(limit) or d < limit:
            return f"atoms {d:.3g} Å apart (limit {limit:.3g} Å)"
    return ""


def compare(teacher: dict[str, Any], student: dict[str, Any], tolerances: Tolerances) -> list[PropertyRecord]:
    """Scored rows: g(r) first peak and height, coordination, D (each with a noise-widened
    tolerance); instability flags of the liquid and the hot solid; shortest distances (not scored)."""
    skipped = teacher.get("skipped") or student.get("skipped")
    if skipped:
        return [PropertyRecord(SECTION, "liquid", "", None, None, None, None, "flag", None, str(skipped))]
    rows: list[PropertyRecord] = []
    notes = [f"{who}: {n}" for who, r in (("teacher", teacher), ("student", student)) for n in r.get("notes") or []]
    common = "; ".join(notes)
    tl, sl = teacher.get("liquid") or {}, student.get("liquid") or {}
    for key, name, unit, tol_name, rel in PROPERTIES:
        t, s = tl.get(key) or {}, sl.get(key) or {}
        tm, sm, tse, sse = num(t.get("mean")), num(s.get("mean")), num(t.get("se")), num(s.get("se"))
        documented = getattr(tolerances, tol_name)
        scale = 100.0 / abs(tm) if rel and math.isfinite(tm) and tm != 0 else 1.0
        tol, widened = noise_tolerance(documented, tse, sse, scale)
        n_t, n_s = (int(x) if math.isfinite(x) else 0 for x in (num(t.get("n")), num(s.get("n"))))
        parts = [f"mean ± standard error over seeds: teacher {tm:.4g} ± {tse:.2g} (n={n_t}), student {sm:.4g} ± {sse:.2g} (n={n_s})"]
        if widened:
            parts.append(f"tolerance set by the run-to-run noise 2√(se_T²+se_S²) = {tol:.3g}{' %' if rel else ''} "
                         f"(documented {documented:g}{' %' if rel else ''})")
        elif 1 in (n_t, n_s):
            parts.append("a single seed has no error bar: documented tolerance")
        if common:
            parts.append(common)
        note = "; ".join(parts)
        rows.append((relative if rel else absolute)(SECTION, name, unit, tm, sm, tol, note))
    bond = num(teacher.get("bond_A"))
    if not math.isfinite(bond):
        bond = num(student.get("bond_A"))
    limit = tolerances.hot_collapse_fraction * bond
    temps = (num(teacher.get("hot_K")), num(teacher.get("liquid_K")))
    for kind, name, what in (("liquid", "liquid_unstable",
                              f"liquid runs (melt at {temps[0]:.0f} K, equilibration and production at {temps[1]:.0f} K)"),
                             ("hot", "hot_solid_unstable", f"hot-solid runs at {temps[0]:.0f} K")):
        t_runs, s_runs = _runs(teacher, kind), _runs(student, kind)
        t_why, s_why = _instability(t_runs, limit), _instability(s_runs, limit)
        note = (f"{what}: unstable on a calculator error, non-finite values, |F| > {MAX_FORCE_EV_A:g} eV/Å "
                f"or atoms closer than {tolerances.hot_collapse_fraction:g} x the teacher's bond {bond:.4g} Å"
                + "".join(f"; {who}: {why}" for who, why in (("teacher", t_why), ("student", s_why)) if why))
        if not t_runs or not teacher:
            rows.append(PropertyRecord(SECTION, name, "flag", None, float(bool(s_why)), None, None, "flag", False,
                                       note + "; teacher result missing"))
        else:
            rows.append(flag(SECTION, name, bool(t_why), bool(s_why), note))
        rows.append(absolute(SECTION, f"{'hot_solid' if kind == 'hot' else 'liquid'}_min_distance_A", "Å",
                             _min_over(t_runs), _min_over(s_runs), None, f"shortest distance over all {what}"))
    return rows


# ----------------------------------------------------------------------------- figure


def _curve(result: dict[str, Any], key: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    c = result.get(key) or {}
    if c.get(x) is None or c.get("mean") is None or not len(c[x]):
        return None
    xs = np.array([num(v) for v in c[x]])
    mean = np.array([num(v) for v in c["mean"]])
    se = np.array([num(v) for v in (c.get("se") or [None] * len(mean))])
    if len(xs) != len(mean) or len(se) != len(mean):
        return None
    return xs, mean, se


def figures(teacher: dict[str, Any], student: dict[str, Any], labels: dict[str, str]) -> dict[str, bytes]:
    """g(r) and MSD(t) of the liquid (mean over seeds, band ± standard error) and the hot solid's
    shortest distance over time, teacher vs student."""
    from matplotlib.figure import Figure

    from md_validation.properties.plots import COLORS, no_data
    from md_validation.report import figure_png

    styles = {"teacher": "-", "student": "--"}  # a student on top of its teacher leaves the teacher visible
    fig = Figure(figsize=(13.0, 4.2))
    axes = fig.subplots(1, 3)
    for role, res in (("teacher", teacher), ("student", student)):
        label = labels.get(role, role)
        for ax, key, x in ((axes[0], "g", "r"), (axes[1], "msd", "t_ps")):
            c = _curve(res, key, x)
            if c is None:
                continue
            xs, mean, se = c
            n = (res.get("liquid") or {}).get("peak_A", {}).get("n", "?")
            ax.plot(xs, mean, color=COLORS[role], lw=1.3, ls=styles[role], label=f"{label} ({n} seeds)")
            band = np.nan_to_num(se, nan=0.0)
            ax.fill_between(xs, mean - band, mean + band, color=COLORS[role], alpha=0.25, lw=0)
        dt = num(res.get("frame_fs")) / 1000.0
        for k, run in enumerate(res.get("hot_runs") or []):
            series = np.array([num(v) for v in (run or {}).get("min_distance_series") or []])
            if len(series) and math.isfinite(dt):
                axes[2].plot(np.arange(len(series)) * dt, series, color=COLORS[role], lw=1.0, alpha=0.8, ls=styles[role],
                             label=label if k == 0 else None)
    bond = num(teacher.get("bond_A"))
    if math.isfinite(bond):
        axes[2].axhline(bond, color="0.5", lw=0.6, ls=":")
    axes[0].axhline(1.0, color="0.5", lw=0.6)
    axes[0].set_xlabel("r (Å)")
    axes[0].set_ylabel("g(r)")
    axes[0].set_title(f"liquid g(r) at {num(teacher.get('liquid_K')):.0f} K")
    axes[1].set_xlabel("lag (ps)")
    axes[1].set_ylabel("MSD (Å²)")
    axes[1].set_title("liquid mean-square displacement")
    axes[2].set_xlabel("time (ps)")
    axes[2].set_ylabel("shortest distance (Å)")
    axes[2].set_title(f"hot solid at {num(teacher.get('hot_K')):.0f} K (each seed)")
    for ax in axes:
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
        else:
            no_data(ax, "no results" if not (teacher.get("skipped") or student.get("skipped")) else "skipped")
    fig.tight_layout()
    return {"liquid_and_hot_solid": figure_png(fig)}
