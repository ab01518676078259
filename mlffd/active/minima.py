"""Teacher checks of the student's minima, and the teacher's way out of the false ones.

A relaxation the student calls converged ends at a minimum *of the student*. The committee may
agree with it (its members share their data, so they share their holes), so the deviation does
not flag it; the teacher's forces do. Each converged student relaxation's end is labelled by the
teacher. Where the teacher's largest per-atom force there is above ``false_minimum_force`` the
end is suspect, and the teacher relaxes it (BFGS, the exploration's cell setting) for up to
``descent_steps`` calls: every step is a labelled frame on the slope the student lacks. A descent
that gets ``false_minimum_drop`` lower shows a false minimum; one that converges less far down, a
shifted one (the teacher's minimum is near: a force error, not a hole); one cut short by the
budget leaves it unresolved. A student's false minimum often sits on a saddle point
of the teacher (silicon's hexagonal interstitial), where the teacher's own relaxation stops after
a step or two; so when the descent converges, every atom is kicked by :data:`KICK_A` (Gaussian,
seeded by the run's name) and the descent goes on, at most :data:`MAX_KICKS` times, until a
kick no longer finds an energy :data:`KICK_GAIN` lower.

Every teacher call is appended to a JSON-lines file before the next is made. A resumed check
replays the recorded answers (the optimiser is deterministic, so it asks for the same structures
in the same order) and calls the teacher only past them: a kill never repeats a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlffd.active.config import phase_of
from mlffd.sampling.relax import cell_filter_quiet

#: the reasons of the frames this module adds (``config_type`` is ``active_`` + reason): a checked
#: end where the teacher agrees (or could not be followed far enough to tell), a false minimum, a
#: shifted one (the teacher's minimum is near: the descent found less than ``false_minimum_drop``)
#: and the descents' frames
REASONS = ("minimum", "false_minimum", "shifted_minimum", "descent")
#: a converged descent is kicked by this much (Å, Gaussian per component) to leave a saddle point
KICK_A = 0.05
#: kicks per descent at most
MAX_KICKS = 2
#: a kick that does not lower the converged energy by this much (eV) ends the descent
KICK_GAIN = 0.005


class _Spent(Exception):
    """The round's budget for minimum checks is spent."""


class _Capped(Exception):
    """This descent has made its ``descent_steps`` calls."""


class _Refused(Exception):
    """The teacher gave no usable answer (error, non-finite, unphysical): the descent ends."""


class _Replaying(Calculator):
    """The teacher behind a record: answers recorded for the same structure are replayed, new
    ones are computed by ``ask`` and passed to ``sink`` first."""

    implemented_properties = ["energy", "forces", "stress", "free_energy"]

    def __init__(self, recorded: list[dict[str, Any]], ask: Callable[[Atoms], dict[str, Any]],
                 sink: Callable[[dict[str, Any]], None], may_call: Callable[[], bool]) -> None:
        super().__init__()  # (not ``label``: ASE's Calculator owns that name)
        self.recorded = list(recorded)
        self.ask, self.sink, self.may_call = ask, sink, may_call
        self.answers: list[tuple[Atoms, dict[str, Any]]] = []
        self.cap: int | None = None  #: answers at most (the check and the descent's calls)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        if not system_changes and self.answers:  # asked again for the same structure: what it lacks, the teacher did not give
            raise PropertyNotImplementedError(f"the teacher gave no {', '.join(properties)} here")
        if self.cap is not None and len(self.answers) >= self.cap:
            raise _Capped
        super().calculate(atoms, properties, system_changes)
        here = self.atoms
        rec = self.recorded.pop(0) if self.recorded else None
        if rec is not None and not _same(rec, here):
            raise RuntimeError("a resumed minimum check asked for a structure its record does not hold; delete minima.jsonl to redo it")
        if rec is None:
            if not self.may_call():
                raise _Spent
            rec = {**self.ask(here), "positions": here.positions.tolist(), "cell": here.cell.array.tolist()}
            self.sink(rec)
        if rec["status"] != "ok":
            raise _Refused(rec["status"])
        self.answers.append((here.copy(), rec))
        self.results = {"energy": rec["energy"], "free_energy": rec["energy"], "forces": np.asarray(rec["forces"])}
        if rec.get("stress") is not None:
            self.results["stress"] = np.asarray(rec["stress"])


def _same(rec: dict[str, Any], atoms: Atoms) -> bool:
    # not bit for bit: linear algebra may round differently on another machine than the killed run's
    return bool(np.allclose(rec["positions"], atoms.positions, rtol=0.0, atol=1e-8)
                and np.allclose(rec["cell"], atoms.cell.array, rtol=0.0, atol=1e-8))


def _descend(atoms: Atoms, target, calc: _Replaying, fmax: float, rng: np.random.Generator) -> tuple[str, int]:
    """The teacher's BFGS from a suspect minimum, kicked out of the saddle points it converges
    to: (``done``, ``cut`` by the budget or ``descent_steps``, or why the teacher stopped it; kicks)."""
    from ase.optimize import BFGS

    kicks, last = 0, None
    try:
        while True:
            BFGS(target, logfile=None).run(fmax=fmax, steps=10**6)  # converges, or calc.cap / the budget end it
            energy = calc.answers[-1][1]["energy"]
            if kicks == MAX_KICKS or (last is not None and last - energy < KICK_GAIN):
                return "done", kicks
            last, kicks = energy, kicks + 1
            atoms.positions = atoms.positions + rng.normal(0.0, KICK_A, atoms.positions.shape)
    except (_Spent, _Capped):
        return "cut", kicks
    except _Refused as exc:
        return f"teacher: {exc}", kicks


def relaxation_ends(frames: Sequence[Atoms], runs: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(frame index, run record) of every relaxation the student converged, in run order."""
    where = {(str(a.info.get("active_source")), int(a.info.get("active_step", -1))): i for i, a in enumerate(frames)}
    out = []
    for run in runs:
        if run["kind"] == "relax" and run.get("converged") and not run.get("stopped"):
            i = where.get((run["run"], int(run["steps"])))
            if i is not None:
                out.append((i, run))
    return out


def empty_record() -> dict[str, Any]:
    """The record of a check that made no call: its counts zero, no ends."""
    return {"checked": 0, "false": 0, "shifted": 0, "unresolved": 0, "descent_frames": 0, "teacher_calls": 0, "ends": []}


def check_minima(frames: Sequence[Atoms], runs: Sequence[dict[str, Any]], teacher, *, budget: int, false_minimum_force: float,
                 false_minimum_drop: float, descent_steps: int, relax_fmax: float, relax_cell: bool, label_max_force: float,
                 journal: str | Path) -> tuple[list[tuple[Atoms, dict[str, Any], str, dict[str, Any]]], dict[str, Any]]:
    """Check the end of every converged student relaxation in ``frames`` / ``runs`` with
    ``teacher`` (an ASE calculator), at most ``budget`` teacher calls, and follow the teacher
    out of each end where its largest force is above ``false_minimum_force``: a false minimum if
    the descent gets ``false_minimum_drop`` (eV) lower, else shifted (the teacher's minimum is
    near, the student's geometry a little off) or, when the descent was cut short, unresolved.
    Returns the labelled structures as (atoms, labels, reason, info) and a record: ``checked``,
    ``false``, ``shifted``, ``unresolved``, ``descent_frames``, ``teacher_calls`` and per end ``ends`` (run,
    teacher's largest force, verdict, the descent's calls, kicks and the drop to the lowest
    energy it reached)."""
    from mlffd.active.loop import _append_journal, _label_one, _read_journal

    journal = Path(journal)
    lines = _read_journal(journal)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for rec in lines:
        by_run.setdefault(rec["run"], []).append(rec)
    calls = len(lines)
    out: list[tuple[Atoms, dict[str, Any], str, dict[str, Any]]] = []
    record = empty_record()

    with open(journal, "a") as fh, cell_filter_quiet():
        def sink_for(name: str) -> Callable[[dict[str, Any]], None]:
            def sink(rec: dict[str, Any]) -> None:
                nonlocal calls
                calls += 1
                _append_journal(fh, {"run": name, **rec})
            return sink

        # every end checked first (one call each), then the descents share what is left
        checked: list[tuple[int, str, Atoms, _Replaying, dict[str, Any], bool]] = []
        for index, run in relaxation_ends(frames, runs):
            name = run["run"]
            calc = _Replaying(by_run.get(name, []), lambda a: _label_one(a, teacher, label_max_force), sink_for(name),
                              lambda: calls < budget)
            atoms = Atoms(numbers=frames[index].numbers, positions=frames[index].positions, cell=frames[index].cell, pbc=frames[index].pbc)
            atoms.calc = calc
            end: dict[str, Any] = {"run": name, "frame": index}
            try:
                forces = atoms.get_forces()
            except _Spent:
                break
            except _Refused as exc:
                record["ends"].append({**end, "verdict": f"teacher: {exc}"})
                continue
            record["ends"].append(end)
            record["checked"] += 1
            fmax = float(np.linalg.norm(forces, axis=1).max(initial=0.0))
            end.update(teacher_fmax=fmax, verdict="suspect" if fmax > false_minimum_force else "agrees", descent_steps=0,
                       descent_drop_eV=0.0)
            # a phase's relaxation ran at its volume (a point of its E-V curve): the teacher's descent stays there
            checked.append((index, name, atoms, calc, end, phase_of(str(run.get("start", ""))) is not None))

        for index, name, atoms, calc, end, fixed_volume in checked:
            status = "cut"
            if end["verdict"] == "suspect" and (calls < budget or calc.recorded):  # a resumed descent replays its record first
                target = atoms
                if relax_cell and atoms.pbc.all():
                    from ase.filters import FrechetCellFilter

                    target = FrechetCellFilter(atoms, constant_volume=fixed_volume)
                calc.cap = 1 + descent_steps
                status, end["kicks"] = _descend(atoms, target, calc, relax_fmax, np.random.default_rng(list(name.encode())))
                if status not in ("done", "cut"):
                    end["descent_stopped"] = status
                lowest = min(r["energy"] for _, r in calc.answers)
                end.update(descent_steps=len(calc.answers) - 1, descent_drop_eV=calc.answers[0][1]["energy"] - lowest)
            if end["verdict"] == "suspect":
                end["verdict"] = ("false" if end["descent_drop_eV"] >= false_minimum_drop else "shifted" if status == "done"
                                  else "unresolved")
                record["false"] += end["verdict"] == "false"
                record["shifted"] += end["verdict"] == "shifted"
                record["unresolved"] += end["verdict"] == "unresolved"
            first = {"false": "false_minimum", "shifted": "shifted_minimum"}.get(end["verdict"], "minimum")
            for k, (structure, rec) in enumerate(calc.answers):
                reason = first if k == 0 else "descent"
                labels = {"energy": rec["energy"], "forces": np.asarray(rec["forces"]), "stress": rec.get("stress")}
                info = {"active_source": name, "active_step": int(frames[index].info.get("active_step", 0)) + k, "active_frame": index}
                out.append((structure, labels, reason, info))
            record["descent_frames"] += len(calc.answers) - 1
    record["teacher_calls"] = calls
    return out, record


def minima_frames(found: Sequence[tuple[Atoms, dict[str, Any], str, dict[str, Any]]], tags: dict[str, Any], r: int) -> list[Atoms]:
    """The training frames of what :func:`check_minima` labelled in round ``r``: ``config_type``
    ``active_`` + reason, the teacher's provenance ``tags``, the source run and step; a checked
    end also keeps its explored frame's index (its committee deviation is known)."""
    from mlffd.sampling.frames import labelled_frame

    out = []
    for structure, labels, reason, extra in found:
        info = {**tags, "config_type": f"active_{reason}", "active_round": r, "trajectory": f"active-r{r}-{extra['active_source']}",
                "active_source": extra["active_source"], "active_step": extra["active_step"]}
        if reason != "descent":
            info["active_frame"] = extra["active_frame"]
        out.append(labelled_frame(structure, labels, info))
    return out


__all__ = ["REASONS", "check_minima", "empty_record", "minima_frames", "relaxation_ends"]
