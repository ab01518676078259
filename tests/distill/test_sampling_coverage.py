"""Coverage sampling (issue 18): prototypes, volume scans from the teacher's equilibrium, close
contacts, random search, the default recipe and its resumable run, with EMT as the teacher."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read
from ase.neighborlist import neighbor_list

from mlffd.prototypes import PROTOTYPES, bond_length, prototype
from mlffd.sampling import SampleConfig, config_hash, coverage_tasks, load_config, plan, run_sampling
from mlffd.sampling.structures import build_seed

ROOT = Path(__file__).resolve().parents[2]
CU = dict(name="cu", symbol="Cu", crystal="fcc", a=3.61, cubic=True, supercell=[2, 2, 2])


class CountingEMT(EMT):
    """EMT that counts its evaluations (one per calculate: energy, forces and stress together)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        super().calculate(*args, **kwargs)


def _config(out, tasks, seeds=(CU,), **over) -> SampleConfig:
    return SampleConfig.from_dict(dict(teacher="emt", output_dir=str(out), random_seed=5, coverage=False,
                                       seeds=list(seeds), tasks=list(tasks), **over))


def _pair_distances(atoms, cutoff: float = 6.0) -> np.ndarray:
    """Every unordered pair distance (images included) below ``cutoff`` Å, from ASE's own neighbour list."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    return np.sort(d[i < j]) if len(d) else d


# --- prototypes ---------------------------------------------------------------------------------


#: space group (International number) and atoms per cell of each prototype (conventional cells)
SPACE_GROUPS = {"diamond": (227, 8), "hex_diamond": (194, 4), "beta_sn": (141, 4), "simple_hexagonal": (191, 1),
                "bc8": (206, 16), "st12": (96, 12), "fcc": (225, 4), "bcc": (229, 2), "hcp": (194, 2), "sc": (221, 1)}


def test_prototypes_have_their_space_groups_and_live_in_the_library():
    import spglib

    from md_validation.properties import recipes

    assert set(PROTOTYPES) == set(SPACE_GROUPS)
    for name, (number, count) in SPACE_GROUPS.items():
        atoms = prototype(name, "Si")
        cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == number, name
        assert len(atoms) == count, name
        seed = build_seed(SampleConfig.from_dict(dict(teacher="emt", coverage=False, seeds=[
            dict(name="s", symbol="Si", prototype=name, supercell=[1, 2, 1])], tasks=[dict(name="t", seed="s")])).seeds[0])
        assert len(seed) == 2 * count and np.isclose(seed.get_volume(), 2 * atoms.get_volume())
    assert recipes.prototype is prototype and recipes.PROTOTYPES is PROTOTYPES  # moved, not copied
    # the library never imports the validation package (data flows teacher -> student -> validation)
    code = "import sys, mlffd.sampling, mlffd.prototypes; sys.exit(any(m.startswith('md_validation') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- volume scan ----------------------------------------------------------------------------------


def _emt_equilibrium_volume_per_atom() -> float:
    """EMT's fcc Cu minimum, found independently by an equation-of-state fit."""
    from ase.build import bulk
    from ase.eos import EquationOfState

    volumes, energies = [], []
    for a in np.linspace(3.50, 3.70, 9):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume() / 4)
        energies.append(atoms.get_potential_energy() / 4)
    v0, _, _ = EquationOfState(volumes, energies).fit()
    return float(v0)


def test_volume_scan_spans_the_range_around_the_teachers_own_equilibrium(tmp_path):
    seed = {**CU, "a": 3.80, "supercell": [1, 1, 2]}  # 5 % off EMT's lattice constant on purpose
    task = dict(name="vol", seed="cu", relax=True, volume_range=[0.70, 1.25], strain=0.05, repeats=4, test_repeats=1,
                temperatures=[300], equilibrate=2, steps=6, sample_every=3, timestep_fs=1.0)
    cfg = _config(tmp_path, [task], seeds=[seed])
    run_sampling(cfg, progress=False)
    relaxed = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    relaxed = [r for r in relaxed if r["type"] == "relaxed"]
    assert len(relaxed) == 1 and relaxed[0]["converged"]
    v_relaxed = abs(np.linalg.det(relaxed[0]["cell"])) / len(relaxed[0]["numbers"])
    assert v_relaxed == pytest.approx(_emt_equilibrium_volume_per_atom(), rel=2e-3)
    scales = {}
    for frame in read(tmp_path / "train.extxyz", ":") + read(tmp_path / "test.extxyz", ":"):
        s = frame.get_volume() / len(frame) / v_relaxed
        assert 0.70 <= s <= 1.25
        assert frame.info["config_type"] == ("compressed" if s < 1 else "expanded")
        assert not np.allclose(frame.cell.angles(), 90.0, atol=0.1)  # sheared, at the drawn volume
        scales.setdefault(frame.info["trajectory"], set()).add(round(s, 9))
    assert all(len(v) == 1 for v in scales.values())  # NVT: one volume per trajectory
    train = sorted(next(iter(v)) for k, v in scales.items() if "/train" in k)
    width = (1.25 - 0.70) / 4  # one draw in each quarter of the range
    assert all(0.70 + k * width <= s <= 0.70 + (k + 1) * width for k, s in enumerate(train))


# --- close contacts --------------------------------------------------------------------------------


def test_pushed_pairs_end_at_the_drawn_distance_and_are_the_closest(tmp_path):
    b = bond_length("Cu")
    tasks = [dict(name="push", seed="cu", kind="single", push_pairs=1, steps=12, copy_rattle=0.05),
             dict(name="hot", seed="cu", temperatures=[2500], equilibrate=10, steps=20, sample_every=5, timestep_fs=1.0,
                  copies=2, copy_rattle=0.0, copy_strain=0.0, push_pairs=1, contact_range=[1.7, 2.0])]
    run_sampling(_config(tmp_path, tasks), progress=False)
    frames = read(tmp_path / "train.extxyz", ":")
    contact = [f for f in frames if f.info["config_type"] == "contact"]
    assert len(contact) == 12 + 2 * 4
    for f in contact:
        d = f.info["contact_distance"]
        lo, hi = (0.65 * b, 0.95 * b) if f.info["trajectory"].startswith("push") else (1.7, 2.0)
        assert lo <= d <= hi
        pairs = _pair_distances(f)
        assert pairs[0] == pytest.approx(d, abs=1e-6) and pairs[1] > d + 1e-6  # the pushed pair, and it alone
    parents = {(f.info["trajectory"], f.info["step"]): f for f in frames if f.info.get("copy", 0) == 0}
    for f in contact:
        if f.info["trajectory"].startswith("hot"):  # the copy differs from its MD frame in one atom only
            moved = np.linalg.norm(f.positions - parents[(f.info["trajectory"], f.info["step"])].positions, axis=1)
            assert (moved > 1e-6).sum() == 1


def test_clusters_cover_the_contact_range(tmp_path):
    lo, hi = 0.65 * bond_length("Cu"), 1.6 * bond_length("Cu")
    run_sampling(_config(tmp_path, [dict(name="cl", seed="cu", kind="cluster", steps=24, vacuum=8.0)]), progress=False)
    frames = read(tmp_path / "train.extxyz", ":")
    assert Counter(f.info["config_type"] for f in frames) == {"dimer": 12, "trimer": 12}
    dimers = sorted(_pair_distances(f)[0] for f in frames if len(f) == 2)
    width = (hi - lo) / 12  # one dimer in each twelfth of the range
    assert all(lo + k * width - 1e-6 <= d <= lo + (k + 1) * width + 1e-6 for k, d in enumerate(dimers))
    for f in frames:
        assert f.pbc.all() and min(f.cell.lengths()) >= 16.0  # 8 Å of vacuum on each side
        d = _pair_distances(f, 2 * hi + 0.1)
        assert len(d) == len(f) * (len(f) - 1) // 2 and d[0] >= lo - 1e-6  # and no periodic image in reach
        ref = f.copy()
        ref.calc = EMT()
        assert f.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)


# --- random search --------------------------------------------------------------------------------


def test_random_search_relaxes_downhill_from_well_separated_starts(tmp_path):
    seed = {**CU, "supercell": [2, 1, 1]}
    task = dict(name="rs", seed="cu", kind="random_search", volume_range=[0.9, 1.2], repeats=3, steps=12, sample_every=3,
                min_separation=0.75 * bond_length("Cu"))
    cfg = _config(tmp_path, [task], seeds=[seed])
    counting = CountingEMT()
    run_sampling(cfg, teacher=counting, progress=False)
    assert counting.calls <= sum(t.evaluations for t in plan(cfg)) == 3 * 13
    frames = read(tmp_path / "train.extxyz", ":")
    v_seed = build_seed(cfg.seeds[0]).get_volume()
    by_traj: dict[str, list] = {}
    for f in frames:
        by_traj.setdefault(f.info["trajectory"], []).append(f)
    assert len(by_traj) == 3
    for traj in by_traj.values():
        assert [f.info["step"] for f in traj] == [0, 3, 6, 9, 12]
        assert all(f.info["config_type"] == "random" for f in traj)
        start = traj[0]
        assert _pair_distances(start)[0] >= 0.75 * bond_length("Cu") - 1e-6
        assert 0.9 <= start.get_volume() / v_seed <= 1.2 and np.all((start.cell.angles() >= 60) & (start.cell.angles() <= 120))
        energies = [f.get_potential_energy() for f in traj]
        assert all(b < a for a, b in zip(energies, energies[1:]))
        assert len({round(f.get_volume(), 6) for f in traj}) > 1  # the cell relaxes too
    # the sampler's max_force filter applies to relaxation frames like to any other
    strict = dataclasses.replace(cfg, max_force=float(np.median([np.abs(f.get_forces()).max() for f in frames])))
    run_sampling(strict, teacher=EMT(), output_dir=tmp_path / "strict", progress=False)
    kept = read(tmp_path / "strict" / "train.extxyz", ":")
    assert 0 < len(kept) < len(frames) and max(np.abs(f.get_forces()).max() for f in kept) <= strict.max_force


def test_relax_positions_relaxes_the_defected_start_at_fixed_cell(tmp_path):
    """A vacancy and an interstitial relaxed by the teacher: frames along a path that only goes
    down, in the start's cell, ending below the unrelaxed start by what ASE's own BFGS finds."""
    from ase.optimize import BFGS

    tasks = [dict(name="vac", seed="cu", kind="relax_positions", vacancies=1, rattle=0.05, steps=12, sample_every=4),
             dict(name="int", seed="cu", kind="relax_positions", interstitials=1, steps=12, sample_every=4)]
    cfg = _config(tmp_path, tasks)
    counting = CountingEMT()
    run_sampling(cfg, teacher=counting, progress=False)
    assert counting.calls <= sum(t.evaluations for t in plan(cfg)) == 2 * 13
    frames = read(tmp_path / "train.extxyz", ":")
    cell = build_seed(cfg.seeds[0]).cell.array
    for name, n_atoms, ctype in (("vac", 31, "vacancy"), ("int", 33, "interstitial")):
        traj = [f for f in frames if f.info["trajectory"].startswith(name + "/")]
        assert [f.info["step"] for f in traj] == [0, 4, 8, 12]
        assert all(len(f) == n_atoms and f.info["config_type"] == ctype for f in traj)
        assert all(np.allclose(f.cell.array, cell) for f in traj)  # the cell is not relaxed
        energies = [f.get_potential_energy() for f in traj]
        assert all(b < a for a, b in zip(energies, energies[1:]))
        ref = traj[0].copy()
        ref.calc = EMT()
        BFGS(ref, logfile=None).run(fmax=1e-3, steps=12)
        assert energies[-1] == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    with pytest.raises(ValueError, match="ensemble"):
        _config(tmp_path, [dict(tasks[0], ensemble="npt")])


def test_relax_shape_relaxes_the_cell_shape_at_the_start_volume(tmp_path):
    """A strained, expanded cell relaxed by the teacher at constant volume: every frame has the
    start's volume, the shape moves, the energy only goes down and ends where ASE's own BFGS on
    FrechetCellFilter(constant_volume=True) ends from the same start."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    task = dict(name="shape", seed="cu", kind="relax_shape", volume_range=[1.1, 1.1], strain=0.06, steps=12, sample_every=4)
    cfg = _config(tmp_path, [task])
    counting = CountingEMT()
    run_sampling(cfg, teacher=counting, progress=False)
    assert counting.calls <= sum(t.evaluations for t in plan(cfg)) == 13
    traj = read(tmp_path / "train.extxyz", ":")
    assert [f.info["step"] for f in traj] == [0, 4, 8, 12]
    assert all(f.info["config_type"] == "expanded" for f in traj)
    v0 = build_seed(cfg.seeds[0]).get_volume() * 1.1
    assert all(f.get_volume() == pytest.approx(v0, rel=1e-9) for f in traj)
    assert not np.allclose(traj[0].cell.array, traj[-1].cell.array, atol=1e-3)  # the shape relaxed
    energies = [f.get_potential_energy() for f in traj]
    assert all(b < a for a, b in zip(energies, energies[1:]))
    ref = traj[0].copy()
    ref.calc = EMT()
    BFGS(FrechetCellFilter(ref, constant_volume=True), logfile=None).run(fmax=1e-3, steps=12)
    assert energies[-1] == pytest.approx(ref.get_potential_energy(), abs=1e-6)


def test_symmetric_strain_keeps_the_point_group():
    """Averaged over the point group: a cubic cell only changes volume, a hexagonal one keeps a = b
    and 120°, and averaging twice changes nothing."""
    from mlffd.sampling.structures import apply_strain, random_strain, symmetric_strain

    rng = np.random.default_rng(3)
    for atoms, check in ((bulk("Cu", "fcc", a=3.6, cubic=True), "cubic"), (bulk("Ti", "hcp", a=2.95, c=4.68), "hex")):
        eps = symmetric_strain(atoms, random_strain(rng, 0.05))
        assert np.allclose(symmetric_strain(atoms, eps), eps, atol=1e-12)
        strained = atoms.copy()
        apply_strain(strained, eps)
        a, b, c, alpha, beta, gamma = strained.cell.cellpar()
        if check == "cubic":
            assert np.allclose(eps, np.trace(eps) / 3 * np.eye(3), atol=1e-12)
        else:
            assert a == pytest.approx(b) and gamma == pytest.approx(120.0) and alpha == pytest.approx(90.0)
            assert abs(c / a - 4.68 / 2.95) > 1e-3  # c/a moved


def test_relax_shape_keeping_symmetry_is_the_phase_own_constant_volume_relaxation(tmp_path):
    """hcp strained (c/a only) and relaxed by the teacher at constant volume with its space group
    kept: every frame is still P6_3/mmc at the start's volume, and the path ends where ASE's BFGS
    with FixSymmetry on FrechetCellFilter(constant_volume=True) ends from the same start."""
    import spglib
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    seed = dict(name="ti", symbol="Cu", prototype="hcp", supercell=[2, 2, 2])
    task = dict(name="ca", seed="ti", kind="relax_shape", keep_symmetry=True, volume_range=[1.05, 1.05], strain=0.08,
                steps=12, sample_every=4)
    cfg = _config(tmp_path, [task], seeds=[seed])
    run_sampling(cfg, teacher=EMT(), progress=False)
    traj = read(tmp_path / "train.extxyz", ":")
    assert [f.info["step"] for f in traj][:2] == [0, 4]  # it may converge before step 12
    v0 = build_seed(cfg.seeds[0]).get_volume() * 1.05
    for f in traj:
        assert f.get_volume() == pytest.approx(v0, rel=1e-9)
        cell = (f.cell.array, f.get_scaled_positions(), f.numbers)
        assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == 194
    ratios = [f.cell.cellpar()[2] / f.cell.cellpar()[0] for f in traj]
    assert abs(ratios[-1] - ratios[0]) > 1e-3  # c/a relaxed
    energies = [f.get_potential_energy() for f in traj]
    assert all(b < a for a, b in zip(energies, energies[1:]))
    ref = traj[0].copy()
    ref.calc = EMT()
    ref.set_constraint(FixSymmetry(ref, symprec=1e-3))
    BFGS(FrechetCellFilter(ref, constant_volume=True), logfile=None).run(fmax=1e-3, steps=int(traj[-1].info["step"]))
    assert energies[-1] == pytest.approx(ref.get_potential_energy(), abs=1e-6)


# --- configuration --------------------------------------------------------------------------------


BAD = [
    (dict(volume_range=[0.0, 1.2]), "volume_range"),
    (dict(volume_range=[1.2, 0.8]), "volume_range"),
    (dict(volume_range=[0.8, 1.2], ensemble="npt"), "volume_range"),
    (dict(volume_range=[0.8, 1.2], surface=[1, 0, 0]), "volume_range"),
    (dict(kind="cluster", contact_range=[-1.0, 2.0]), "contact_range"),
    (dict(kind="cluster", surface=[1, 1, 1]), "surface"),
    (dict(kind="cluster", relax=True), "relax"),
    (dict(push_pairs=-1), "push_pairs"),
    (dict(push_pairs=1), "push_pairs"),  # MD frames are pushed only in their copies
    (dict(contact_range=[1.5, 2.0]), "contact_range"),
    (dict(min_separation=1.5), "min_separation"),
    (dict(kind="random_search", min_separation=0.0), "min_separation"),
    (dict(kind="random_search", vacancies=1), "vacancies"),
    (dict(kind="relax_positions", push_pairs=1), "push_pairs"),
    (dict(kind="relax_positions", min_separation=1.0), "min_separation"),
    (dict(kind="relax_shape", surface=[1, 1, 1]), "surface"),
    (dict(keep_symmetry=True), "keep_symmetry"),
    (dict(kind="relax_shape", keep_symmetry=True, rattle=0.01), "keep_symmetry"),
    (dict(kind="anneal"), "kind"),
    (dict(relax=True, relax_steps=0), "relax_steps"),
    (dict(relax_fmax=-0.1), "relax_fmax"),
    (dict(volume_range=[0.9]), "volume_range"),
]


@pytest.mark.parametrize("over,key", BAD)
def test_bad_task_values_are_refused_naming_the_key(over, key):
    with pytest.raises(ValueError, match=key):
        _config(".", [dict(name="t", seed="cu", **over)])


def test_bad_seed_and_coverage_values_are_refused_naming_the_key():
    for seed, key in ((dict(name="s", symbol="Cu", prototype="rocksalt"), "prototype"),
                      (dict(name="s", symbol="CuAu", prototype="fcc"), "prototype"),
                      (dict(name="s", symbol="Xx"), "symbol")):
        with pytest.raises(ValueError, match=key):
            _config(".", [dict(name="t", seed="s")], seeds=[seed])
    with pytest.raises(ValueError, match="coverage"):  # a name the recipe needs is taken
        SampleConfig.from_dict(dict(teacher="emt", seeds=[CU], tasks=[dict(name="coverage_Cu_bc8", seed="cu")]))
    with pytest.raises(ValueError, match="coverage: expected true or false"):
        SampleConfig.from_dict(dict(teacher="emt", coverage="yes", seeds=[CU], tasks=[dict(name="t", seed="cu")]))


def test_coverage_false_reproduces_the_committed_runs_exactly():
    """The shipped datasets' own progress records: the same config hash and trajectories, in order."""
    for example, data in (("sample.yaml", "si"), ("sample-liquid.yaml", "si-liquid")):
        cfg = load_config(ROOT / "examples" / "si" / example)
        records = [json.loads(line) for line in (ROOT / "data" / data / "progress.jsonl").read_text().splitlines()]
        assert not cfg.coverage
        assert config_hash(cfg) == records[0]["config_sha256"]
        assert [t.id for t in plan(cfg)] == [r["id"] for r in records if r["type"] == "done"]


def test_coverage_default_appends_the_recipe_and_the_example_spells_it_out():
    user = dict(teacher="emt", seeds=[CU], tasks=[dict(name="t", seed="cu", steps=5)])
    on, off = SampleConfig.from_dict(user), SampleConfig.from_dict({**user, "coverage": False})
    seeds, tasks = coverage_tasks("Cu", ground="fcc")
    assert on.coverage and on.expanded().tasks == off.tasks + tasks and on.expanded().seeds == off.seeds + seeds
    explicit = dataclasses.replace(off, seeds=off.seeds + seeds, tasks=off.tasks + tasks)
    assert config_hash(on) == config_hash(explicit) != config_hash(off)
    assert [t.id for t in plan(off)] == [t.id for t in plan(on) if not t.task.name.startswith("coverage_")]
    # a compound seed gets no recipe (the prototypes are one-element structures)
    compound = {**user, "seeds": [dict(name="cu", symbol="CuAu", crystal="rocksalt", a=5.0)]}
    assert SampleConfig.from_dict(compound).expanded().tasks == off.tasks
    # the shipped example is the Si recipe, spelled out; its cost is the one the user guide states
    example = load_config(ROOT / "examples" / "si" / "sample-coverage.yaml")
    si_seeds, si_tasks = coverage_tasks("Si")
    assert example.seeds == si_seeds and example.tasks == si_tasks and not example.coverage
    kinds = {t.kind for t in si_tasks}
    assert kinds == {"md", "single", "cluster", "random_search", "melt_quench"}
    assert max(max(t.temperatures) for t in si_tasks if t.kind == "melt_quench") == 2 * 1687
    cost = sum(t.evaluations for t in plan(example))
    assert f"{cost:,}" in (ROOT / "docs" / "sampling.md").read_text()


# --- the recipe, end to end -----------------------------------------------------------------------


def _tiny(task):
    """The recipe's task at test sizes (same kinds, options and seeds)."""
    kw: dict = dict(repeats=1, test_repeats=0, relax_steps=40)
    if task.kind == "md":
        kw.update(equilibrate=2, steps=6, sample_every=3, temperatures=task.temperatures[-1:], test_repeats=task.test_repeats)
    elif task.kind == "melt_quench":
        kw.update(melt_steps=5, equilibrate=2, steps=6, sample_every=3, quench_steps=6, anneal_steps=3, temperatures=task.temperatures[-1:])
    elif task.kind in ("single", "cluster"):
        kw.update(steps=4)
    elif task.kind == "random_search":
        kw.update(steps=6, sample_every=2, repeats=2)
    if task.surface is not None:
        kw.update(equilibrate=2, steps=6, sample_every=3)
    return dataclasses.replace(task, **{k: v for k, v in kw.items() if k != "relax_steps" or task.relax})


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    seeds, tasks = coverage_tasks("Cu")
    out = tmp_path_factory.mktemp("coverage")
    cfg = SampleConfig(teacher="emt", seeds=seeds, tasks=tuple(_tiny(t) for t in tasks), random_seed=11, coverage=False,
                       output_dir=str(out))
    cfg.validate()
    teacher = CountingEMT()
    return cfg, out, run_sampling(cfg, teacher=teacher, progress=False), teacher.calls


def test_recipe_run_writes_the_new_configuration_types_within_budget(recipe_run):
    cfg, out, result, calls = recipe_run
    assert result.complete
    assert calls <= sum(t.evaluations for t in plan(cfg))
    types = set(result.config_types["train"]) | set(result.config_types["test"])
    assert {f"Cu_{name}" for name in PROTOTYPES} | {"dimer", "trimer", "contact", "random", "liquid", "amorphous",
                                                     "surface100", "surface110", "surface111"} == types
    frames = read(out / "train.extxyz", ":")
    contact_from = {f.info["trajectory"].split("/")[0] for f in frames if f.info["config_type"] == "contact"}
    assert {"coverage_Cu_push_crystal", "coverage_Cu_liquid", "coverage_Cu_amorphous"} <= contact_from
    for frame in frames[::7]:  # labels are the teacher's
        ref = frame.copy()
        ref.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)


def test_recipe_run_resumes_after_an_interruption(recipe_run, tmp_path):
    cfg, ref_out, ref, _ = recipe_run
    first = run_sampling(cfg, teacher=EMT(), output_dir=tmp_path, max_trajectories=9, progress=False)
    assert first.trajectories_done == 9 and not first.complete
    second = run_sampling(cfg, teacher=EMT(), output_dir=tmp_path, progress=False)
    assert second.complete and second.trajectories_run_now == ref.trajectories_total - 9
    records = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in records if r["type"] == "relaxed"]
    assert len(keys) == len(set(keys)) == len(PROTOTYPES)  # each prototype cell relaxed once, whatever its supercells
    for name in ("train.extxyz", "test.extxyz"):
        a, b = read(ref_out / name, ":"), read(tmp_path / name, ":")
        assert [f.info["trajectory"] for f in a] == [f.info["trajectory"] for f in b]
        np.testing.assert_allclose(np.concatenate([f.positions for f in a]), np.concatenate([f.positions for f in b]))


def test_committed_coverage_run_is_a_prefix_of_its_config_plan():
    """data/si-coverage (a run in progress) belongs to examples/si/sample-coverage.yaml: same
    config hash, and its finished trajectories are the plan's first ones, so it resumes."""
    cfg = load_config(ROOT / "examples" / "si" / "sample-coverage.yaml")
    records = [json.loads(line) for line in (ROOT / "data" / "si-coverage" / "progress.jsonl").read_text().splitlines()]
    assert config_hash(cfg) == records[0]["config_sha256"]
    done = [r["id"] for r in records if r["type"] == "done"]
    assert done and done == [t.id for t in plan(cfg)][: len(done)]


def test_open_interstitial_sites_include_the_hexagonal_site_of_diamond():
    """``largest`` always picks diamond's tetrahedral site (4 neighbours at the bond length);
    ``open`` also picks the hexagonal one (6 neighbours at a*sqrt(11)/8, 4 % closer than the bond), from which a
    relaxation can find what the tetrahedral start never visits; a bad site name is refused."""
    from ase import Atoms

    from mlffd.sampling.structures import interstitial_point

    si = bulk("Si", "diamond", a=5.431, cubic=True) * (2, 2, 2)
    bond = 5.431 * np.sqrt(3) / 4

    def neighbours(point):
        probe = si + Atoms("Si", positions=[point])
        return np.sort(probe.get_distances(len(si), range(len(si)), mic=True))

    rng = np.random.default_rng(0)
    # a tetrahedral site has 4 neighbours at the bond length, then 6 at a/2 (2.72 Å); a hexagonal
    # one 6 at hex_d (2.25 Å), then none closer than 3.4 Å
    largest = [neighbours(interstitial_point(si, rng, "largest", n_trial=4000)) for _ in range(3)]
    assert all(d[:4] == pytest.approx([bond] * 4, abs=0.15) and d[4] > bond + 0.2 for d in largest)
    opened = [neighbours(interstitial_point(si, rng, "open")) for _ in range(40)]
    assert all(d[0] >= 0.8 * bond for d in opened)  # random points of the cell come as close as 1 Å
    near_hex = [d for d in opened if d[5] < 2.55 and d[6] > 2.9]
    near_tet = [d for d in opened if d[3] < 2.55 and d[4] > 2.55]
    assert near_hex and near_tet
    with pytest.raises(ValueError, match="interstitial site"):
        interstitial_point(si, rng, "octahedral")
    with pytest.raises(ValueError, match="interstitial_site must be one of"):
        _config(Path("/tmp"), [dict(name="int", seed="cu", interstitials=1, interstitial_site="hex")])
    with pytest.raises(ValueError, match="give interstitials"):
        _config(Path("/tmp"), [dict(name="int", seed="cu", interstitial_site="open")])
