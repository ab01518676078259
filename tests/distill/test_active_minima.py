"""Teacher checks of a student's minima (mlffd.active.minima) on EMT copper: a planted false
minimum is found and descended from, a true one is left alone, the budget holds, and a killed
check resumes without repeating a teacher call."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from mlffd.active.minima import check_minima, relaxation_ends

SETTINGS = dict(false_minimum_force=0.1, false_minimum_drop=0.05, descent_steps=15, relax_fmax=0.05, relax_cell=False, label_max_force=50.0)


class CountingEMT(EMT):
    """EMT that counts its single points; with ``kill_after`` it raises KeyboardInterrupt (a
    kill, which nothing catches) on the call after that many."""

    def __init__(self, kill_after: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.kill_after = kill_after

    def calculate(self, *args, **kwargs):
        if self.kill_after is not None and self.calls >= self.kill_after:
            raise KeyboardInterrupt
        self.calls += 1
        super().calculate(*args, **kwargs)


@pytest.fixture(scope="module")
def ends():
    """Explored frames and run records: a relaxation ending at EMT's own minimum (a vacancy in
    32-atom copper) and one ending where one atom sits 0.3 Å off it (a planted false minimum)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    del atoms[0]
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=300)
    true = atoms.copy()
    false = atoms.copy()
    false.positions[5] += [0.3, 0.0, 0.0]
    frames, runs = [], []
    for name, structure in (("relax-true", true), ("relax-false", false)):
        for step in (0, 7):  # a run's earlier frame, then its end
            f = structure.copy()
            f.info.update(active_source=name, active_step=step)
            frames.append(f)
        runs.append({"run": name, "kind": "relax", "converged": True, "stopped": None, "steps": 7})
    runs.append({"run": "md-nvt-300K", "kind": "md", "converged": None, "stopped": None, "steps": 7})
    runs.append({"run": "relax-unconverged", "kind": "relax", "converged": False, "stopped": None, "steps": 7})
    return frames, runs


def test_only_converged_relaxations_are_checked(ends):
    frames, runs = ends
    assert [(i, r["run"]) for i, r in relaxation_ends(frames, runs)] == [(1, "relax-true"), (3, "relax-false")]


def test_false_minimum_found_and_descended_true_one_left(ends, tmp_path):
    frames, runs = ends
    teacher = CountingEMT()
    out, rec = check_minima(frames, runs, teacher, budget=100, journal=tmp_path / "m.jsonl", **SETTINGS)
    assert rec["checked"] == 2 and rec["false"] == 1
    verdicts = {e["run"]: e for e in rec["ends"]}
    assert verdicts["relax-true"]["verdict"] == "agrees" and verdicts["relax-true"]["teacher_fmax"] < 1e-3
    assert verdicts["relax-false"]["verdict"] == "false" and verdicts["relax-false"]["teacher_fmax"] > 0.5
    reasons = [reason for _, _, reason, _ in out]
    assert reasons[:2] == ["minimum", "false_minimum"] and set(reasons[2:]) == {"descent"}
    assert 0 < rec["descent_frames"] == len(reasons) - 2 <= SETTINGS["descent_steps"]
    assert teacher.calls == rec["teacher_calls"] == len(out)
    # the descent goes downhill on the teacher's surface to the teacher's minimum (then kicks it)
    path = [labels for _, labels, reason, _ in out[1:]]
    energies = [p["energy"] for p in path]
    fmax = [np.linalg.norm(p["forces"], axis=1).max() for p in path]
    lowest = int(np.argmin(energies))
    assert energies[lowest] < energies[0] - 0.05 and fmax[lowest] < SETTINGS["relax_fmax"] < fmax[0]
    assert verdicts["relax-false"]["descent_drop_eV"] == pytest.approx(energies[0] - energies[lowest])
    assert verdicts["relax-false"]["kicks"] >= 1
    # every label is EMT's for that structure
    for structure, labels, _, _ in out[::4]:
        structure.calc = EMT()
        assert np.allclose(structure.get_forces(), labels["forces"], atol=1e-10)


def test_budget_is_never_exceeded(ends, tmp_path):
    frames, runs = ends
    teacher = CountingEMT()
    out, rec = check_minima(frames, runs, teacher, budget=4, journal=tmp_path / "m.jsonl", **SETTINGS)
    assert teacher.calls == rec["teacher_calls"] == len(out) == 4
    assert rec["descent_frames"] == 2
    (end,) = [e for e in rec["ends"] if e["run"] == "relax-false"]  # false if two steps got far enough down, else undecided
    assert end["verdict"] == ("false" if end["descent_drop_eV"] >= SETTINGS["false_minimum_drop"] else "unresolved")
    assert rec["false"] == (end["verdict"] == "false") and rec["shifted"] == 0
    assert rec["unresolved"] == (end["verdict"] == "unresolved")


def test_small_geometry_error_is_a_shifted_minimum_not_a_false_one(ends, tmp_path):
    """An end 0.03 Å off the teacher's minimum: forces above the threshold, but the descent
    finds less than false_minimum_drop below it."""
    frames, runs = ends
    near = frames[1].copy()
    near.positions[5] += [0.03, 0.0, 0.0]
    near.info.update(frames[1].info)
    out, rec = check_minima([frames[0], near], runs[:1], CountingEMT(), budget=100, journal=tmp_path / "m.jsonl", **SETTINGS)
    (end,) = rec["ends"]
    assert end["teacher_fmax"] > SETTINGS["false_minimum_force"] and 0 < end["descent_drop_eV"] < SETTINGS["false_minimum_drop"]
    assert end["verdict"] == "shifted" and rec["false"] == 0 and rec["shifted"] == 1
    assert [reason for _, _, reason, _ in out][0] == "shifted_minimum"


def test_killed_check_resumes_without_repeating_calls(ends, tmp_path):
    frames, runs = ends
    whole, whole_rec = check_minima(frames, runs, CountingEMT(), budget=100, journal=tmp_path / "whole.jsonl", **SETTINGS)
    journal = tmp_path / "killed.jsonl"
    killed = CountingEMT(kill_after=5)
    with pytest.raises(KeyboardInterrupt):
        check_minima(frames, runs, killed, budget=100, journal=journal, **SETTINGS)
    resumed = CountingEMT()
    out, rec = check_minima(frames, runs, resumed, budget=100, journal=journal, **SETTINGS)
    assert killed.calls == 5 and killed.calls + resumed.calls == whole_rec["teacher_calls"] == rec["teacher_calls"]
    assert len(out) == len(whole)
    for (a, la, ra, _), (b, lb, rb, _) in zip(out, whole):  # EMT's sums round differently after a fresh start: 1e-14 eV
        assert ra == rb and np.allclose(a.positions, b.positions, atol=1e-9) and la["energy"] == pytest.approx(lb["energy"], abs=1e-9)
    again = CountingEMT()
    check_minima(frames, runs, again, budget=100, journal=journal, **SETTINGS)
    assert again.calls == 0


class DoubleWell(Calculator):
    """One atom: E = A (x² − 1)² + K (y² + z²) (eV, Å). The x = 0 plane holds a saddle point,
    A above the two minima at x = ±1."""

    implemented_properties = ["energy", "forces"]
    A, K = 1.0, 5.0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x, y, z = self.atoms.positions[0]
        self.results = {"energy": self.A * (x * x - 1) ** 2 + self.K * (y * y + z * z),
                        "forces": np.array([[-4 * self.A * x * (x * x - 1), -2 * self.K * y, -2 * self.K * z]])}


def test_descent_is_kicked_off_the_teachers_saddle_point(tmp_path):
    """A student minimum off the teacher's saddle: the teacher's relaxation alone stops on the
    saddle (zero force along x), the kick takes it down to a true minimum."""
    start = Atoms("H", positions=[[0.0, 0.1, 0.0]], cell=[10, 10, 10], pbc=False)
    start.info.update(active_source="relax-0", active_step=3)
    runs = [{"run": "relax-0", "kind": "relax", "converged": True, "stopped": None, "steps": 3}]
    out, rec = check_minima([start], runs, DoubleWell(), budget=100, journal=tmp_path / "m.jsonl", **{**SETTINGS, "descent_steps": 60})
    (end,) = rec["ends"]
    assert end["verdict"] == "false" and end["kicks"] >= 1
    lowest = min(out, key=lambda item: item[1]["energy"])
    assert abs(abs(lowest[0].positions[0, 0]) - 1.0) < 0.05
    assert end["descent_drop_eV"] == pytest.approx(DoubleWell.A + DoubleWell.K * 0.01, abs=0.01)


def test_a_phase_relaxation_is_descended_at_its_volume(tmp_path):
    """A prototype's relaxation ran at fixed volume (a point of its E-V curve): the teacher
    descends from its end at that volume; any other relaxation's descent relaxes the cell."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    atoms.set_cell(atoms.cell.array * 0.96, scale_atoms=True)  # compressed: the cell wants to grow
    atoms.positions[3] += [0.25, 0.1, 0.0]  # off the teacher's minimum: a suspect end
    volumes = {}
    for start in ("phase:fcc", "random"):
        end = atoms.copy()
        end.info.update(active_source="relax-0", active_step=5)
        runs = [{"run": "relax-0", "kind": "relax", "start": start, "converged": True, "stopped": None, "steps": 5}]
        out, rec = check_minima([end], runs, CountingEMT(), budget=100, journal=tmp_path / f"{start[:5]}.jsonl",
                                **{**SETTINGS, "relax_cell": True})
        assert rec["ends"][0]["verdict"] in ("false", "shifted") and len(out) > 2
        volumes[start] = [structure.get_volume() for structure, *_ in out]
    assert np.allclose(volumes["phase:fcc"], atoms.get_volume(), rtol=1e-9)
    assert max(volumes["random"]) > atoms.get_volume() * 1.01


def test_a_round_with_a_false_minimum_never_ends_the_loop():
    """Few failed frames end the loop only without a false minimum; a false minimum alone keeps it going."""
    from mlffd.active.loop import round_converged

    assert round_converged(0, 0, 5) and round_converged(4, 0, 5)
    assert not round_converged(5, 0, 5)
    assert not round_converged(0, 1, 5) and not round_converged(2, 1, 5)
    assert not round_converged(0, 0, 0)  # min_new_failures 0: never converged by count


def test_cell_filter_settings_hide_only_the_logm_warning_and_are_restored():
    """The loop's relaxations and descents run under sampling.relax.cell_filter_quiet: scipy's
    'logm result may be inaccurate' (one per cell step at 1e-12) is hidden, every other warning
    still shows, and the caller's warning filters are back afterwards."""
    import warnings

    from mlffd.sampling.relax import cell_filter_quiet

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with cell_filter_quiet():
            warnings.warn("logm result may be inaccurate, approximate err = 7.3e-13", RuntimeWarning)
            warnings.warn("something else", RuntimeWarning)
        warnings.warn("logm result may be inaccurate, approximate err = 7.3e-13", RuntimeWarning)
    assert [str(w.message).split(",")[0] for w in seen] == ["something else", "logm result may be inaccurate"]
