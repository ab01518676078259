"""The active-distillation loop: rounds of explore -> check minima -> flag -> label -> fine-tune, resumable.

Layout of the loop's directory ``DIR`` (``WORKDIR/active/NAME`` under ``mlffd distill``)::

    state.json               what the directory belongs to (a different loop moves it aside)
    members/mK/              training runs of the initial committee members K >= 1 (done.json when exported;
                             none when other students of the distill config are the members)
    round-NNN/explore.json   the round's runs (written after explored.extxyz: the exploration is done)
    round-NNN/minima.jsonl   one line per teacher call checking a student minimum or descending from a false one
    round-NNN/minima.json    minimum checks done (minima.extxyz: their labelled frames; mlffd.active.minima)
    round-NNN/select.json    every explored frame's flags and the frames chosen for the teacher (from what the
                             minimum checks left of the round's budget)
    round-NNN/labels.jsonl   one line per teacher call, appended and fsynced as each returns
    round-NNN/labelled.json  labelling done (labelled.extxyz: the frames it kept)
    round-NNN/active.extxyz  all active frames up to this round: what the round's fine-tunes train on
    round-NNN/before.json    the committee's errors on the new frames before fine-tuning
    round-NNN/members/mK/    fine-tuning runs (trainer checkpoints; done.json when exported)
    round-NNN/after.json     the errors after
    round-NNN/round.json     the round's record (written last: the round is done)
    labelled.extxyz          every frame the teacher labelled in the loop
    report.json/.md/.html    :mod:`mlffd.active.report`

Every file is written atomically, so a kill at any point loses at most the step in flight:
a resumed loop skips every phase whose file exists, never repeats a teacher call that
``labels.jsonl`` or ``minima.jsonl`` holds, and continues an interrupted training from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from ase import Atoms

from mlffd.active.config import ActiveConfig
from mlffd.active.sanity import Reference, reference_from_frames
from mlffd.jsonable import jsonable
from mlffd.training.config import TrainConfig

LABELLED = "labelled.extxyz"


# -- small file helpers ----------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=1, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines journal of teacher calls, up to a torn last line (a kill:
    that call is made again)."""
    records: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def _append_journal(fh, record: dict[str, Any]) -> None:
    """One record on disk (flushed, fsynced) before the next teacher call."""
    fh.write(json.dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _write_frames(path: Path, frames: Sequence[Atoms]) -> None:
    from ase.io import write

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        if frames:
            write(fh, list(frames), format="extxyz")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_frames(path: Path) -> list[Atoms]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    from ase.io import read

    return read(str(path), index=":", format="extxyz")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's thread count set to ``n`` (0: unchanged) for the block, restored after."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation over the pairs where both are finite (None: fewer than 3, or constant)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(spearmanr(x, y).statistic)


# -- teacher ---------------------------------------------------------------------------------


class _Teacher:
    """The teacher, loaded at its first use (a loop that resumes past its labelling never loads it)."""

    def __init__(self, teacher: Any) -> None:
        self.source = teacher
        self._calc = None

    @property
    def calc(self):
        if self._calc is None:
            from mlffd.teachers import load_teacher

            self._calc = load_teacher(self.source)
        return self._calc

    def tags(self) -> dict[str, Any]:
        """The provenance every labelled frame carries, as the sampler writes it."""
        from mlffd.teachers import teacher_info

        info = teacher_info(self.calc if not isinstance(self.source, str) else self.source)
        tags = {"teacher": str(info["spec"])}
        if info.get("checkpoint_sha256"):
            tags["teacher_sha256"] = str(info["checkpoint_sha256"])
        return tags


def _label_one(atoms: Atoms, calc, max_force: float) -> dict[str, Any]:
    """One teacher single point: ``status`` ok / non_finite / unphysical / teacher_error and the labels."""
    from mlffd.sampling.frames import TEACHER_FAILURES, evaluate

    bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    try:
        res = evaluate(bare, calc)
    except TEACHER_FAILURES as exc:  # e.g. an SCF that does not converge on a broken structure
        return {"status": "teacher_error", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    energy = float(res["energy"])
    forces = np.asarray(res["forces"], dtype=np.float64).reshape(len(bare), 3)
    stress = None if res.get("stress") is None else np.asarray(res["stress"], dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {"energy": energy, "forces": forces.tolist(), "stress": None if stress is None else stress.tolist()}
    finite = np.isfinite(energy) and np.isfinite(forces).all() and (stress is None or np.isfinite(stress).all())
    if not finite:
        return {"status": "non_finite"}
    out["status"] = "ok" if float(np.abs(forces).max(initial=0.0)) <= max_force else "unphysical"
    return out


# -- the loop --------------------------------------------------------------------------------


class ActiveLoop:
    """One loop in ``workdir`` for the student trained with ``student`` whose artifact is
    ``initial`` (member 0 of round 0); see the module docstring."""

    def __init__(self, config: ActiveConfig, student: TrainConfig, workdir: str | Path, initial: str | Path,
                 teacher: Any = None, log: Callable[[str], None] = print,
                 others: Sequence[tuple[TrainConfig, str | Path]] = ()) -> None:
        self.config = config
        self.student = student
        self.dir = Path(workdir)
        self.initial = Path(initial)
        self.teacher = _Teacher(teacher if teacher is not None else student.teacher)
        self.log = log
        # other students as members 1..K-1 (each fine-tuned with its own options) instead of
        # copies of the student trained with other seeds: a committee that costs no extra training
        self.others = [(cfg, Path(path)) for cfg, path in others]
        self.train_frames: list[Atoms] = []
        self._train_reference: Reference | None = None  # see _data_reference
        if not self.initial.is_file():
            raise FileNotFoundError(f"the student's artifact {self.initial} does not exist: train it first")
        for cfg, path in self.others:
            if not path.is_file():
                raise FileNotFoundError(f"committee student {cfg.name!r}: its artifact {path} does not exist: train it first")
        if self.others and len(self.others) + 1 != config.committee:
            raise ValueError(f"active: committee: {config.committee} members, but the student and {len(self.others)} "
                             f"committee students make {len(self.others) + 1}")

    # -- identity and members

    def identity(self) -> str:
        """What the directory's rounds depend on: the loop's options (those a resumption may not
        change), the student's training options and artifact, the teacher."""
        skip = {"output", "progress", "threads", "device", "test"}
        student = {k: v for k, v in self.student.to_dict().items() if k not in skip}
        d = {"active": self.config.identity(), "student": student, "initial": _sha(self.initial), "teacher": self.teacher.tags()}
        if self.others:
            d["others"] = [({k: v for k, v in cfg.to_dict().items() if k not in skip}, _sha(path)) for cfg, path in self.others]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def _claim(self) -> None:
        """Make ``state.json`` name this loop; another loop's directory is moved to ``DIR.previous-HASH``."""
        key = self.identity()
        state = self.dir / "state.json"
        if state.exists():
            old = _read_json(state).get("identity", "")
            if old == key:
                return
            moved = self.dir.with_name(f"{self.dir.name}.previous-{old[:8] or 'unknown'}")
            shutil.rmtree(moved, ignore_errors=True)
            os.replace(self.dir, moved)
            self.log(f"[active] the loop's options, student or teacher changed: moved the old loop to {moved}")
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise FileExistsError(f"{self.dir} holds files but no state.json: not an active-distillation directory, choose another")
        _write_json(state, {"identity": key, "config": self.config.to_dict(), "student": self.student.name, "initial": str(self.initial)})

    def _member_config(self, k: int, output: Path, **changes: Any) -> TrainConfig:
        if k > 0 and self.others:
            base = self.others[k - 1][0]
            return base.replace(output=str(output), **changes)
        name = self.student.name if k == 0 else f"{self.student.name}-m{k}"
        return self.student.replace(output=str(output), name=name, seed=self.student.seed + k, **changes)

    def _train(self, cfg: TrainConfig) -> dict[str, Any]:
        """Train (resuming its checkpoint) unless ``done.json`` says the run was exported; the record."""
        from mlffd.training.trainer import train

        done = Path(cfg.output) / "done.json"
        if done.exists():
            record = _read_json(done)
            if Path(record["artifact"]).is_file():
                return record
        summary = train(cfg, resume=True)
        metrics = summary.get("metrics", {})
        record = {"artifact": summary["artifact"], "force_rmse": metrics.get("force_rmse"), "split": metrics.get("split"),
                  "steps": metrics.get("steps")}
        _write_json(done, record)
        return record

    def initial_members(self) -> list[str]:
        """Member 0 is the student; members 1..K-1 are the committee students when given, else
        trained like the student with seeds ``seed + k``."""
        members = [str(self.initial)]
        if self.others:
            return members + [str(path) for _, path in self.others]
        for k in range(1, self.config.committee):
            out = self.dir / "members" / f"m{k}"
            if not (out / "done.json").exists():
                self.log(f"[active] training committee member {k} of {self.config.committee - 1} (seed {self.student.seed + k}) in {out}")
            members.append(self._train(self._member_config(k, out))["artifact"])
        return members

    # -- the rounds

    def run(self) -> dict[str, Any]:
        """Run (or resume) the loop; the summary: final ``artifact`` (member 0), ``members``,
        ``rounds`` (records), ``teacher_calls``, ``stop_reason``, ``labelled`` and ``report``."""
        from mlffd.data import read_frames
        from mlffd.training.trainer import labelling_teacher

        c = self.config
        self._claim()
        self.train_frames = read_frames(list(self.student.train))
        # the new labels must come from the teacher of the training data: checked before any call
        labelling_teacher(self.teacher.tags()["teacher"], {"train": self.train_frames})
        with _threads(self.student.threads):
            members = self.initial_members()
        rounds: list[dict[str, Any]] = []
        used = 0
        stop_reason = f"max_rounds ({c.max_rounds}) reached"
        for r in range(1, c.max_rounds + 1):
            rdir = self.dir / f"round-{r:03d}"
            record_path = rdir / "round.json"
            if record_path.exists():
                record = _read_json(record_path)
                if not record["converged"] or round_converged(record["flags"]["failed"], (record.get("minima") or {}).get("false", 0),
                                                              c.min_new_failures):
                    rounds.append(record)
                    used += record["teacher_calls"]
                    members = record["members_after"]
                    if record["converged"]:
                        stop_reason = record["stop_reason"]
                        break
                    continue
                record_path.unlink()  # it no longer ends the loop (min_new_failures was lowered): on to labelling
            budget = min(c.teacher_calls_per_round, c.teacher_calls_total - used)
            if budget <= 0:
                stop_reason = f"teacher budget spent ({used} of {c.teacher_calls_total} calls)"
                break
            _write_json(record_path, self._round(r, rdir, members, budget))
            record = _read_json(record_path)
            rounds.append(record)
            used += record["teacher_calls"]
            members = record["members_after"]
            self._report(rounds, used, None, members)
            if record["converged"]:
                stop_reason = record["stop_reason"]
                break
        summary = {"artifact": members[0], "members": members, "rounds": rounds, "teacher_calls": used, "stop_reason": stop_reason,
                   "labelled": str(self.dir / LABELLED)}
        summary["report"] = self._report(rounds, used, stop_reason, members)
        self.log(f"[active] {len(rounds)} round(s), {used} teacher calls; stopped: {stop_reason}")
        return summary

    def _report(self, rounds: list[dict[str, Any]], used: int, stop_reason: str | None, members: list[str]) -> dict[str, str]:
        from mlffd.active.report import write_report

        data = {"config": self.config.to_dict(), "student": self.student.name, "initial": str(self.initial), "rounds": rounds,
                "teacher_calls": used, "teacher_calls_total_budget": self.config.teacher_calls_total,
                "stop_reason": stop_reason, "finished": stop_reason is not None, "artifact": members[0], "members": members,
                "member_names": [self.student.name, *[self._member_config(k, self.dir).name for k in range(1, len(members))]]}
        return {k: str(v) for k, v in write_report(jsonable(data), self.dir).items()}

    def _data_reference(self) -> Reference:
        """The training data's :class:`Reference` (computed once): where exploration places its
        starts, and round 1's reference for the sanity flags too (no labels yet)."""
        if self._train_reference is None:
            self._train_reference = reference_from_frames(self.train_frames)
        return self._train_reference

    def _active_frames_before(self, r: int) -> list[Atoms]:
        return _read_frames(self.dir / f"round-{r - 1:03d}" / "active.extxyz") if r > 1 else []

    def _explore(self, r: int, rdir: Path, members: list[str], reference) -> tuple[list[Atoms], list]:
        """Round ``r``'s exploration MD with member 0 (or the frames a resumed round wrote)."""
        from mlffd.active.explore import explore, start_structure

        explore_path = rdir / "explore.json"
        if explore_path.exists():
            return _read_frames(rdir / "explored.extxyz"), _read_json(explore_path)["runs"]
        start = start_structure(self.train_frames, self.config.min_atoms)
        with _threads(self.student.threads):
            frames, runs = explore(self.config, members[0], start, reference, r, log=self.log, data_reference=self._data_reference())
        _write_frames(rdir / "explored.extxyz", frames)
        _write_json(explore_path, {"runs": runs, "frames": len(frames), "member": members[0]})
        return frames, runs

    def _select(self, r: int, rdir: Path, members: list[str], frames: list[Atoms], reference, budget: int) -> dict[str, Any]:
        """The committee's flags on the explored frames and the frames chosen for the teacher
        (or what a resumed round wrote)."""
        from mlffd.active.committee import Committee
        from mlffd.active.select import choose, classify, counts, descriptors

        c = self.config
        select_path = rdir / "select.json"
        if not select_path.exists():
            with _threads(self.student.threads):
                flags = classify(frames, Committee(members).predict(frames), reference, c) if frames else []
            rng = np.random.default_rng([c.seed, r, 1])
            chosen = choose(flags, descriptors(frames, c.descriptor_cutoff), budget, c.audit_frames, rng)
            _write_json(select_path, {"flags": flags, "counts": counts(flags), "chosen": chosen, "budget": budget})
        return _read_json(select_path)  # as a resumed round reads it (inf deviations are null)

    def _round(self, r: int, rdir: Path, members: list[str], budget: int) -> dict[str, Any]:
        c = self.config
        rdir.mkdir(parents=True, exist_ok=True)
        timing: dict[str, float] = {}
        previous = self._active_frames_before(r)
        # the teacher-labelled data so far decide what is "outside the data" for the sanity flags
        reference = reference_from_frames(self.train_frames + previous) if previous else self._data_reference()

        t0 = time.perf_counter()
        frames, runs = self._explore(r, rdir, members, reference)
        timing["explore_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        minima_frames, minima = self._minima(r, rdir, frames, runs, min(c.minima_calls_per_round, budget))
        timing["minima_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()  # the committee's frames get what the minimum checks left of the budget
        selection = self._select(r, rdir, members, frames, reference, budget - minima["teacher_calls"])
        timing["flag_s"] = time.perf_counter() - t0
        flags, tally, chosen = selection["flags"], selection["counts"], selection["chosen"]
        self.log(f"[active r{r}] explored {len(frames)} frames in {len(runs)} runs: {tally['accurate']} accurate, "
                 f"{tally['candidate']} candidate, {tally['failed_deviation']} failed by deviation, {tally['failed_sanity']} "
                 f"failed by sanity {_nonzero(tally['sanity_reasons'])}")
        record: dict[str, Any] = {
            "round": r, "explored": len(frames), "runs": runs, "flags": tally, "budget": budget, "minima": minima,
            "members_before": members, "members_after": members, "teacher_calls": minima["teacher_calls"], "labelled": 0,
            "selected": 0, "selected_by_reason": {}, "dropped": {}, "converged": False, "stop_reason": None,
        }
        if round_converged(tally["failed"], minima["false"], c.min_new_failures):
            record.update(converged=True, stop_reason=f"round {r} flagged {tally['failed']} failed frames, fewer than "
                                                      f"min_new_failures ({c.min_new_failures}), and found no false minimum", timing=timing)
            return record

        # label
        t0 = time.perf_counter()
        labelled, calls, dropped = self._label(rdir, frames, flags, chosen, r)
        timing["label_s"] = time.perf_counter() - t0
        by_reason: dict[str, int] = {}
        for item in chosen:
            by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
        for a in minima_frames:
            reason = str(a.info["config_type"]).removeprefix("active_")
            by_reason[reason] = by_reason.get(reason, 0) + 1
        labelled = minima_frames + labelled
        record.update(selected=len(chosen), selected_by_reason=by_reason, teacher_calls=minima["teacher_calls"] + calls,
                      labelled=len(labelled), dropped=dropped)
        active_path = rdir / "active.extxyz"
        if not (rdir / "active.json").exists():
            _write_frames(active_path, previous + labelled)
            _write_json(rdir / "active.json", {"frames": len(previous) + len(labelled), "sha256": _sha(active_path)})
        _write_frames(self.dir / LABELLED, previous + labelled)
        self.log(f"[active r{r}] teacher: {calls} calls, {len(labelled)} frames kept {_nonzero(by_reason)}"
                 f"{', dropped ' + _nonzero(dropped) if any(dropped.values()) else ''}")
        if not labelled:
            record.update(timing=timing)
            return record

        # errors before, fine-tune, errors after
        deviation_at_selection = [flags[int(a.info["active_frame"])]["max_devi_f"] if "active_frame" in a.info else None for a in labelled]
        record["before"] = self._errors(rdir / "before.json", members, labelled)
        t0 = time.perf_counter()
        new_members = self._finetune(r, rdir, members, active_path, len(previous) + len(labelled))
        timing["finetune_s"] = time.perf_counter() - t0
        record["after"] = self._errors(rdir / "after.json", new_members, labelled)
        record["members_after"] = new_members
        record["test_force_rmse_member0"] = {"before": _artifact_metric(members[0]), "after": _artifact_metric(new_members[0])}
        record["deviation_at_selection"] = deviation_at_selection
        record["spearman"] = record["before"]["spearman"]
        record["timing"] = timing
        b, a = record["before"], record["after"]
        self.log(f"[active r{r}] committee force RMSE on the new frames {b['force_rmse_mean']:.4f} -> {a['force_rmse_mean']:.4f} eV/Å "
                 f"(member 0: {b['force_rmse_members'][0]:.4f} -> {a['force_rmse_members'][0]:.4f}); Spearman(deviation, error) "
                 f"{_fmt(record['spearman'])}")
        return record

    def _minima(self, r: int, rdir: Path, frames: list[Atoms], runs: list, budget: int) -> tuple[list[Atoms], dict[str, Any]]:
        """The teacher's check of every converged student relaxation and its descents from the
        false minima (:mod:`mlffd.active.minima`), or what a resumed round wrote."""
        from mlffd.active.minima import check_minima, empty_record, minima_frames, relaxation_ends

        c = self.config
        done_path = rdir / "minima.json"
        if done_path.exists():
            return _read_frames(rdir / "minima.extxyz"), _read_json(done_path)
        found: list = []
        record = empty_record()
        if budget > 0 and relaxation_ends(frames, runs):  # else nothing to check: the teacher is not even loaded
            found, record = check_minima(frames, runs, self.teacher.calc, budget=budget, false_minimum_force=c.false_minimum_force,
                                         false_minimum_drop=c.false_minimum_drop, descent_steps=c.descent_steps,
                                         relax_fmax=c.relax_fmax, relax_cell=c.relax_cell, label_max_force=c.label_max_force,
                                         journal=rdir / "minima.jsonl")
        out = minima_frames(found, self.teacher.tags() if found else {}, r)
        if record["checked"]:
            self.log(f"[active r{r}] teacher checked {record['checked']} student minima: {record['false']} false, {record['shifted']} "
                     f"shifted, {record['unresolved']} unresolved, {record['descent_frames']} descent frames, {record['teacher_calls']} calls")
        _write_frames(rdir / "minima.extxyz", out)
        _write_json(done_path, record)
        return _read_frames(rdir / "minima.extxyz"), _read_json(done_path)

    def _label(self, rdir: Path, frames: list[Atoms], flags: list[dict[str, Any]], chosen: list[dict[str, Any]],
               r: int) -> tuple[list[Atoms], int, dict[str, int]]:
        """Teacher single points of the chosen frames; every call's result is on disk before the next."""
        from tqdm.auto import tqdm

        from mlffd.sampling.frames import labelled_frame

        done_path = rdir / "labelled.json"
        lines_path = rdir / "labels.jsonl"
        results: dict[int, dict[str, Any]] = {int(rec["index"]): rec for rec in _read_journal(lines_path)}
        if not done_path.exists():
            todo = [item for item in chosen if int(item["index"]) not in results]
            if todo:
                calc = self.teacher.calc
                with open(lines_path, "a") as fh, tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc=f"teacher round {r}",
                                                        unit="call", disable=not self.config.progress, dynamic_ncols=True) as bar:
                    for item in todo:
                        i = int(item["index"])
                        if np.isfinite(frames[i].positions).all():
                            rec = _label_one(frames[i], calc, self.config.label_max_force)
                        else:  # nothing to ask the teacher about: counted, never called
                            rec = {"status": "non_finite_positions"}
                        rec.update(index=i, reason=item["reason"], call=rec["status"] != "non_finite_positions")
                        results[i] = rec
                        _append_journal(fh, rec)
                        bar.update(1)
        tags = self.teacher.tags() if any(results[int(x["index"])]["status"] == "ok" for x in chosen) else {}
        labelled: list[Atoms] = []
        dropped: dict[str, int] = {"non_finite": 0, "unphysical": 0, "teacher_error": 0, "non_finite_positions": 0}
        for item in chosen:
            i = int(item["index"])
            rec = results[i]
            if rec["status"] != "ok":
                dropped[rec["status"]] = dropped.get(rec["status"], 0) + 1
                continue
            src = frames[i]
            info = {**tags, "config_type": f"active_{item['reason']}", "active_round": r, "trajectory": f"active-r{r}-{i}",
                    "active_source": str(src.info.get("active_source", "")), "active_step": int(src.info.get("active_step", 0)),
                    "active_frame": i}
            if flags[i]["max_devi_f"] is not None:
                info["active_max_devi_f"] = float(flags[i]["max_devi_f"])
            res = {"energy": rec["energy"], "forces": np.asarray(rec["forces"]), "stress": rec.get("stress")}
            labelled.append(labelled_frame(src, res, info))
        calls = sum(bool(results[int(x["index"])].get("call", True)) for x in chosen)
        if not done_path.exists():
            _write_frames(rdir / "labelled.extxyz", labelled)
            _write_json(done_path, {"teacher_calls": calls, "labelled": len(labelled), "dropped": dropped})
        else:  # the frames as written when the round labelled them (identical bytes for the training data)
            labelled = _read_frames(rdir / "labelled.extxyz")
        return labelled, calls, dropped

    def _finetune(self, r: int, rdir: Path, members: list[str], active_path: Path, n_active: int) -> list[str]:
        """Every member fine-tuned from its previous artifact on the student's data plus all active frames."""
        c = self.config
        out = []
        for k, previous in enumerate(members):
            base = self._member_config(k, rdir / "members" / f"m{k}")
            changes: dict[str, Any] = {
                "train": [*base.train, str(active_path)], "max_steps": c.finetune_steps, "lr": c.finetune_lr,
                "warmup_steps": c.finetune_warmup_steps, "val_fraction": c.finetune_val_fraction,
            }
            if c.finetune_active_repeat > 1:
                changes["repeat"] = {**base.repeat, str(active_path): c.finetune_active_repeat}
            if not base.val:
                # validation from the new frames only (each member its own draw): the old ones were
                # fitted already, and holding them out afresh would leak. With fewer than two new
                # frames there is nothing to split: hold out from all.
                changes["val_from"] = [str(active_path)] if n_active >= 2 else []
            cfg = base.replace(init_from=str(previous), **changes)
            if not (Path(cfg.output) / "done.json").exists():
                self.log(f"[active r{r}] fine-tuning member {k} ({c.finetune_steps} steps) in {cfg.output}")
            with _threads(self.student.threads):
                out.append(self._train(cfg)["artifact"])
        return out

    def _errors(self, path: Path, members: list[str], labelled: list[Atoms]) -> dict[str, Any]:
        """The committee's force errors on the labelled frames (cached in ``path``)."""
        if path.exists():
            return _read_json(path)
        from mlffd.active.committee import Committee, force_errors_against
        from mlffd.data import frame_labels

        with _threads(self.student.threads):
            pred = Committee(members).predict(labelled)
        labels = [frame_labels(a) for a in labelled]
        err = force_errors_against(pred, [f for _, f, _ in labels])
        comps = max(int(err["components"]), 1)
        flagged = [i for i, a in enumerate(labelled) if a.info.get("config_type") != "active_audit"]
        sub = force_errors_against(_subset(pred, flagged), [labels[i][1] for i in flagged]) if flagged else None
        e0 = np.array([(pred.energy[0, i] - e) / len(a) for i, (a, (e, _, _)) in enumerate(zip(labelled, labels))])
        result = {
            "force_rmse_members": np.sqrt(err["sq_members"] / comps).tolist(),
            "force_rmse_mean": float(np.sqrt(err["sq_mean"] / comps)),
            "flagged_force_rmse_mean": None if sub is None else float(np.sqrt(sub["sq_mean"] / max(int(sub["components"]), 1))),
            "flagged_force_rmse_member0": None if sub is None else float(np.sqrt(sub["sq_members"][0] / max(int(sub["components"]), 1))),
            "energy_mae_member0_mev_per_atom": float(np.mean(np.abs(e0)) * 1000) if np.isfinite(e0).all() else None,
            "spearman": spearman(pred.max_devi_f, err["max_error_member0"]),
            "frames": {"max_devi_f": pred.max_devi_f.tolist(), "max_error_member0": err["max_error_member0"].tolist(),
                       "max_error_mean": err["max_error_mean"].tolist(),
                       "reason": [str(a.info.get("config_type", "")).removeprefix("active_") for a in labelled]},
        }
        _write_json(path, result)
        return _read_json(path)


def round_converged(failed: int, false_minima: int, min_new_failures: int) -> bool:
    """Whether a round ends the loop: fewer than ``min_new_failures`` failed frames and no false
    minimum (a hole the teacher confirmed is never left for lack of company: its descent frames
    are what the next fine-tune needs)."""
    return failed < min_new_failures and false_minima == 0


def _subset(pred, rows: list[int]):
    from mlffd.active.committee import CommitteePrediction

    return CommitteePrediction(energy=pred.energy[:, rows], forces=[pred.forces[i] for i in rows], max_devi_f=pred.max_devi_f[rows],
                               mean_devi_f=pred.mean_devi_f[rows], devi_e=pred.devi_e[rows], errors=[pred.errors[i] for i in rows])


def _artifact_metric(path: str) -> dict[str, Any] | None:
    """The held-out force RMSE an artifact's training measured (its test split, else validation)."""
    from mlffd.artifact import read_metadata

    metrics = read_metadata(path).get("metrics") or {}
    return {"force_rmse": metrics.get("force_rmse"), "split": metrics.get("split")} if metrics else None


def _nonzero(d: dict[str, int]) -> str:
    items = [f"{k} {v}" for k, v in d.items() if v]
    return f"({', '.join(items)})" if items else ""


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def run_active(config: ActiveConfig, student: TrainConfig, workdir: str | Path, initial: str | Path, teacher: Any = None,
               log: Callable[[str], None] = print, others: Sequence[tuple[TrainConfig, str | Path]] = ()) -> dict[str, Any]:
    """Run or resume the active-distillation loop (see :class:`ActiveLoop`); its summary."""
    return ActiveLoop(config, student, workdir, initial, teacher=teacher, log=log, others=others).run()


__all__ = ["ActiveLoop", "LABELLED", "round_converged", "run_active", "spearman"]
