"""``mlffd distill CONFIG``: sample -> label -> train -> (active) -> export -> evaluate, skipping finished stages.

A distill config (YAML or TOML) names the teacher, a sampling config, the dataset files, the
training options shared by all students and one entry per student::

    root: ../..                      # the directory the paths below are relative to (from this file)
    workdir: runs/si                 # stage markers, training runs, exported models, metrics
    teacher: sevennet:7net-0
    sample: examples/si/sample.yaml  # a mlffd.sampling config (file or inline mapping)
    data: {train: data/si/train.extxyz.xz, test: data/si/test.extxyz.xz}
    train: {batch_size: 4, lr: 5.0e-3, ...}        # TrainConfig options shared by all students
    students:
      tiny: {model: tiny, max_epochs: 100}        # TrainConfig options of one student
      big: {model: original, extra_train: [more.extxyz.xz], init_from: runs/si/models/tiny.mlffd.pt}
    export_dir: runs/si/models                     # where NAME.mlffd.pt and NAME.metrics.json go
    active: {students: [tiny], committee: 4, ...}  # optional: active distillation (mlffd.active.ActiveConfig keys)
    # or: {students: [tiny], committee_students: [big], ...}: the other students are the committee

Stages and what marks them finished (``WORKDIR/stages/STAGE.json`` holds the hash of the inputs
that decide the stage's output):

- ``sample``: the sampling run is complete (``mlffd.sampling``'s own progress record in the
  sampling config's ``output_dir``, relative to ``root``; a killed or separately started run
  resumes). Skipped when the dataset files already exist.
- ``label``: every frame carries teacher labels; the sampled files are written to the dataset
  paths (``.xz``/``.gz`` compressed when the path says so) and their sha256 recorded.
- ``train:NAME``: a student trained to its end (resumes its checkpoint when killed).
- ``active:NAME``: for the students the ``active`` section names (all when it names none), the
  active-distillation loop of :mod:`mlffd.active` in ``WORKDIR/active/NAME`` (resumes after a
  kill); its final member 0 is the artifact the export and evaluate stages then use. With
  ``committee_students``, those students are members 1.. of the one loop (each fine-tuned with
  its own options) and their final members are their artifacts too.
- ``export:NAME``: the artifact copied to ``export_dir`` and checked to load.
- ``evaluate:NAME``: held-out metrics written to ``export_dir/NAME.metrics.json``.

A stage whose marker matches is skipped; one whose inputs changed runs again. Students run in
the config's order, so one may fine-tune (``init_from``) another's exported artifact; a student's
``extra_train`` files (relative to ``root``) are appended to the shared training data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlffd.training.config import TrainConfig, read_mapping

STAGES = ("sample", "label", "train", "active", "export", "evaluate")


@dataclass(frozen=True)
class DistillConfig:
    """A whole distillation pipeline (paths absolute after :func:`load_distill_config`)."""

    teacher: str
    train_data: str
    test_data: str
    students: Mapping[str, Mapping[str, Any]]
    workdir: str = "runs/distill"
    sample: Mapping[str, Any] | str | None = None  #: sampling config (mapping or file), None: data must exist
    train: Mapping[str, Any] = field(default_factory=dict)
    export_dir: str = ""  #: default WORKDIR/models
    root: str = "."
    active: Mapping[str, Any] | None = None  #: ActiveConfig keys plus ``students`` (names; empty: all)

    def student_config(self, name: str) -> TrainConfig:
        """The full :class:`TrainConfig` of student ``name``."""
        options = {**dict(self.train), **dict(self.students[name])}
        for key in ("train", "test", "output", "name", "teacher"):
            if key in options:
                raise ValueError(f"student {name!r}: {key!r} is set by the distill config, remove it")
        extra = options.pop("extra_train", [])
        options.update(
            train=[self.train_data, *extra],
            test=[self.test_data],
            output=str(Path(self.workdir) / "students" / name),
            name=name,
            teacher=self.teacher,
        )
        return TrainConfig.from_dict(options)

    def active_config(self, name: str):
        """The :class:`~mlffd.active.ActiveConfig` of student ``name``, None when it has no active stage."""
        if self.active is None:
            return None
        from mlffd.active import ActiveConfig

        options = dict(self.active)
        others = options.pop("committee_students", None) or []
        names = options.pop("students", None) or [n for n in self.students if n not in others]
        if name not in names:
            return None
        if others:
            options["committee"] = 1 + len(others)
        return ActiveConfig.from_dict(options)

    def committee_students(self, name: str) -> list[str]:
        """The students that are members 1.. of ``name``'s active loop (empty: seed copies of ``name``)."""
        if self.active_config(name) is None:
            return []
        return list(self.active.get("committee_students") or [])

    def active_owner(self, name: str) -> str | None:
        """The student whose active loop decides ``name``'s artifact: ``name`` itself, the student
        whose committee it is in, or None."""
        if self.active_config(name) is not None:
            return name
        for owner in self.students:
            if name in self.committee_students(owner):
                return owner
        return None

    @property
    def models_dir(self) -> Path:
        return Path(self.export_dir) if self.export_dir else Path(self.workdir) / "models"


def load_distill_config(path: str | Path) -> DistillConfig:
    """Read a distill config; paths are relative to ``root`` (itself relative to the file)."""
    path = Path(path)
    d = read_mapping(path)
    known = {"root", "workdir", "teacher", "sample", "data", "train", "students", "export_dir", "active"}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    for key in ("teacher", "data", "students"):
        if key not in d:
            raise ValueError(f"{path}: missing {key!r}")
    root = (path.resolve().parent / d.get("root", ".")).resolve()

    def p(value: str) -> str:
        return str(value if Path(value).is_absolute() else root / value)

    data = d["data"]
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise ValueError(f"{path}: 'data' must give 'train' and 'test' files")
    students = d["students"]
    if not isinstance(students, dict) or not students:
        raise ValueError(f"{path}: 'students' must map names to training options")
    sample = d.get("sample")
    if isinstance(sample, str):
        sample = p(sample)
    active = _active_section(d.get("active"), students, path)
    return DistillConfig(
        teacher=str(d["teacher"]),
        train_data=p(data["train"]),
        test_data=p(data["test"]),
        students={str(k): _student_paths(dict(v or {}), p) for k, v in students.items()},
        workdir=p(d.get("workdir", "runs/distill")),
        sample=sample,
        train=dict(d.get("train") or {}),
        export_dir=p(d["export_dir"]) if d.get("export_dir") else "",
        root=str(root),
        active=active,
    )


def _active_section(active: Any, students: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """The ``active`` mapping, checked now (its keys and the students it names) rather than
    after hours of training."""
    if active is None:
        return None
    if not isinstance(active, dict):
        raise ValueError(f"{path}: 'active' must be a mapping of active-distillation options")
    from mlffd.active import ActiveConfig

    active = dict(active)
    names = active.get("students") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: active: students: expected a list of student names, got {names!r}")
    unknown = [n for n in names if n not in students]
    if unknown:
        raise ValueError(f"{path}: active: students: {unknown} are not students of the config ({sorted(students)})")
    active["students"] = names
    others = active.get("committee_students") or []
    if isinstance(others, str):
        others = [others]
    if not isinstance(others, list) or not all(isinstance(n, str) for n in others):
        raise ValueError(f"{path}: active: committee_students: expected a list of student names, got {others!r}")
    if others:
        unknown = [n for n in others if n not in students]
        if unknown:
            raise ValueError(f"{path}: active: committee_students: {unknown} are not students of the config ({sorted(students)})")
        if len(names) != 1 or names[0] in others or len(set(others)) != len(others):
            raise ValueError(f"{path}: active: committee_students: need exactly one other student in active: students "
                             f"(the one that explores), got students {names} and committee_students {others}")
        if "committee" in active and int(active["committee"]) != 1 + len(others):
            raise ValueError(f"{path}: active: committee: {active['committee']} does not match 1 + {len(others)} committee_students")
        active["committee_students"] = others
        active["committee"] = 1 + len(others)
    try:
        ActiveConfig.from_dict({k: v for k, v in active.items() if k not in ("students", "committee_students")})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return active


def _student_paths(options: dict[str, Any], p: Callable[[str], str]) -> dict[str, Any]:
    """A student's ``extra_train``, ``val_from`` and ``repeat`` files and ``init_from`` artifact, made relative to ``root``."""
    for key in ("extra_train", "val_from"):  # lists of files (a single file may be given bare)
        files = options.get(key)
        if files:
            options[key] = [p(str(f)) for f in ([files] if isinstance(files, str) else files)]
    if isinstance(options.get("repeat"), dict):
        options["repeat"] = {p(str(f)): n for f, n in options["repeat"].items()}
    if options.get("init_from"):
        options["init_from"] = p(str(options["init_from"]))
    return options


# -- stage markers ---------------------------------------------------------------------------


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    from mlffd.data import dataset_sha256

    return dataset_sha256(path)


class Stages:
    """Markers ``WORKDIR/stages/NAME.json``: ``{"hash": ..., ...}`` written when a stage finishes."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir) / "stages"

    def _path(self, stage: str) -> Path:
        return self.dir / (stage.replace(":", "-") + ".json")

    def done(self, stage: str, key: str) -> bool:
        path = self._path(stage)
        if not path.exists():
            return False
        try:
            return json.loads(path.read_text()).get("hash") == key
        except json.JSONDecodeError:
            return False

    def read(self, stage: str) -> dict[str, Any]:
        """A stage's marker record (empty when there is none)."""
        try:
            return json.loads(self._path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def mark(self, stage: str, key: str, **info: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(stage)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"stage": stage, "hash": key, **info}, indent=2, default=str))
        os.replace(tmp, path)


# -- stages ----------------------------------------------------------------------------------


def _sample_config(config: DistillConfig):
    from mlffd import sampling

    if isinstance(config.sample, str):
        return sampling.load_config(config.sample)
    # an inline sampling config's relative seed files are relative to root, like every other path
    return sampling.SampleConfig.from_dict({"base_dir": config.root, **dict(config.sample)})


def _sample_dir(config: DistillConfig, scfg) -> Path:
    """The sampling run's directory: its ``output_dir`` relative to ``root`` (a started run resumes)."""
    out = Path(scfg.output_dir)
    return out if out.is_absolute() else Path(config.root) / out


def _write_dataset(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically, compressing by ``dst``'s suffix (.xz, .gz, .bz2)."""
    import bz2
    import gzip
    import lzma

    openers: dict[str, Callable[..., Any]] = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    opener = openers.get(dst.suffix)
    with open(src, "rb") as fin:
        if opener is None:
            with open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            with opener(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    os.replace(tmp, dst)


def run_distill(
    config: DistillConfig,
    students: list[str] | None = None,
    stages: tuple[str, ...] = STAGES,
    teacher=None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the pipeline (see the module docstring); returns ``{student: metrics}``.

    Args:
        students: only these students (default: all in the config).
        stages: only these stages (others are skipped; their outputs must exist when needed).
        teacher: an ASE calculator to use instead of loading ``config.teacher`` for sampling and
            for the active stage's labels.
    """
    markers = Stages(Path(config.workdir))
    names = list(config.students) if students is None else list(students)
    for name in names:
        if name not in config.students:
            raise ValueError(f"unknown student {name!r}; the config has {sorted(config.students)}")
    data_key = _data_stages(config, stages, markers, teacher, log)
    results: dict[str, Any] = {}
    for name in names:
        tcfg, train_key, artifact = _train_stage(config, name, stages, data_key, markers, log)
        owner = config.active_owner(name)
        if owner is not None and {"active", "export", "evaluate"} & set(stages):
            team = [owner, *config.committee_students(owner)]
            trained = [(tcfg, train_key, artifact) if n == name else _train_stage(config, n, stages, data_key, markers, log)
                       for n in team]
            members = _active_stage(config, owner, config.active_config(owner), trained, markers, "active" in stages, teacher, log)
            artifact = members[team.index(name)]
        if not {"export", "evaluate"} & set(stages):
            continue
        if not artifact.exists():
            raise FileNotFoundError(f"{artifact} is missing: run the train stage for {name!r}")
        exported = config.models_dir / f"{name}.mlffd.pt"
        if "export" in stages:
            _export_stage(name, artifact, exported, train_key, markers, log)
        if "evaluate" in stages:
            source = exported if exported.exists() else artifact
            results[name] = _evaluate_stage(name, source, Path(config.test_data), config.models_dir, data_key, markers, log)
    return results


def _data_stages(config: DistillConfig, stages: tuple[str, ...], markers: Stages, teacher, log: Callable[[str], None]) -> dict[str, str]:
    """The ``sample`` and ``label`` stages (run, or skipped when done); the datasets' sha256 by split."""
    train_path, test_path = Path(config.train_data), Path(config.test_data)
    if not (train_path.exists() and test_path.exists()):
        if config.sample is None:
            raise FileNotFoundError(f"{train_path} / {test_path} do not exist and the config has no 'sample' section")
        scfg = _sample_config(config)
        from mlffd import sampling

        key = sampling.config_hash(scfg)
        if "sample" in stages and not markers.done("sample", key):
            log(f"[sample] running {len(sampling.plan(scfg))} teacher trajectories into {_sample_dir(config, scfg)}")
            result = sampling.run_sampling(scfg, teacher=teacher, output_dir=_sample_dir(config, scfg))
            if not result.complete:
                raise RuntimeError(f"sampling stopped with {result.trajectories_done}/{result.trajectories_total} trajectories")
            markers.mark("sample", key, frames=result.frames)
        else:
            log("[sample] done, skipped")
        if "label" in stages:
            sample_dir = _sample_dir(config, scfg)
            sources = {"train": sample_dir / scfg.train_file, "test": sample_dir / scfg.test_file}
            _check_labels(sources)
            _write_dataset(sources["train"], train_path)
            _write_dataset(sources["test"], test_path)
            log(f"[label] wrote {train_path} and {test_path}")
    if not (train_path.exists() and test_path.exists()):
        raise FileNotFoundError(f"dataset files {train_path} / {test_path} are missing")
    data_key = {"train": _file_sha(train_path), "test": _file_sha(test_path)}
    if not markers.done("label", _hash(data_key)):
        _check_labels({"train": train_path, "test": test_path})
        markers.mark("label", _hash(data_key), **data_key)
    else:
        log("[label] done, skipped")
    return data_key



def _export_stage(name: str, artifact: Path, exported: Path, train_key: str, markers: Stages, log: Callable[[str], None]) -> None:
    """The ``export:NAME`` stage: ``artifact`` copied atomically to ``exported`` and loaded once."""
    export_key = _hash({"train": train_key, "artifact": _file_sha(artifact)})
    stage = f"export:{name}"
    if markers.done(stage, export_key) and exported.exists() and _file_sha(exported) == _file_sha(artifact):
        log(f"[{stage}] done, skipped")
        return
    from mlffd.artifact import load

    exported.parent.mkdir(parents=True, exist_ok=True)
    tmp = exported.with_name(exported.name + ".tmp")
    shutil.copyfile(artifact, tmp)
    os.replace(tmp, exported)
    load(exported)  # fails loudly on a bad file
    markers.mark(stage, export_key, path=str(exported), sha256=_file_sha(exported))
    log(f"[{stage}] {exported}")


def _evaluate_stage(name: str, model: Path, test_path: Path, models_dir: Path, data_key: dict[str, str], markers: Stages,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """The ``evaluate:NAME`` stage: ``model`` on the test data, metrics in ``models_dir/NAME.metrics.json``."""
    metrics_path = models_dir / f"{name}.metrics.json"
    eval_key = _hash({"artifact": _file_sha(model), "test": data_key["test"]})
    stage = f"evaluate:{name}"
    if markers.done(stage, eval_key) and metrics_path.exists():
        log(f"[{stage}] done, skipped")
        return json.loads(metrics_path.read_text())
    from mlffd.training.evaluate import evaluate, format_metrics

    metrics = evaluate(model, test_path)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = metrics_path.with_name(metrics_path.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, metrics_path)
    markers.mark(stage, eval_key, metrics=str(metrics_path))
    log(f"[{stage}] {name}:\n{format_metrics(metrics)}")
    return metrics


def _train_stage(config: DistillConfig, name: str, stages: tuple[str, ...], data_key: Mapping[str, str], markers: Stages,
                 log: Callable[[str], None]) -> tuple[TrainConfig, str, Path]:
    """The ``train:NAME`` stage (run, resumed or skipped): the student's config, the hash of its
    inputs and where its artifact is."""
    tcfg = config.student_config(name)
    inputs = [Path(f) for f in tcfg.train[1:]] + ([Path(tcfg.init_from)] if tcfg.init_from else [])
    missing = [str(f) for f in inputs if not f.exists()]
    if missing and "train" in stages:
        raise FileNotFoundError(f"student {name!r}: {', '.join(missing)} missing (extra_train data or the init_from artifact)")
    train_key = _hash({"config": tcfg.to_dict(), "data": data_key, "inputs": {str(f): _file_sha(f) for f in inputs if f.exists()}})
    artifact = Path(tcfg.output) / f"{name}.mlffd.pt"
    stage = f"train:{name}"
    if "train" not in stages:
        return tcfg, train_key, artifact
    if markers.done(stage, train_key) and artifact.exists():
        log(f"[{stage}] done, skipped")
        return tcfg, train_key, artifact
    from mlffd.training.trainer import UNDER_TRAINED, checkpoint_conflicts, train

    conflicts = checkpoint_conflicts(tcfg)
    if conflicts:
        old = Path(tcfg.output)
        moved = old.with_name(f"{old.name}.previous-{train_key[:8]}")
        shutil.rmtree(moved, ignore_errors=True)
        os.replace(old, moved)
        log(f"[{stage}] options {conflicts} changed: moved the old run to {moved}")
    log(f"[{stage}] training {tcfg.model} into {tcfg.output}")
    summary = train(tcfg, resume=True)
    if summary.get("metrics", {}).get("under_trained"):
        log(f"[{stage}] warning: {UNDER_TRAINED}")
    markers.mark(stage, train_key, artifact=summary.get("artifact"), metrics=summary.get("metrics"))
    return tcfg, train_key, artifact


def _active_stage(config: DistillConfig, name: str, active, trained: list[tuple[TrainConfig, str, Path]], markers: Stages,
                  run: bool, teacher, log: Callable[[str], None]) -> list[Path]:
    """The ``active:NAME`` stage (run, resumed or skipped) of student ``name`` with its committee
    students (``trained``: config, train key and artifact of each member, ``name`` first); the
    artifacts the later stages use, one per member."""
    stage = f"active:{name}"
    key = _hash({"train": [k for _, k, _ in trained], "active": active.to_dict(), "teacher": config.teacher})
    if len(trained) == 1:  # the marker key of loops without committee students, as before they existed
        key = _hash({"train": trained[0][1], "active": active.to_dict(), "teacher": config.teacher})
    record = markers.read(stage)
    done = [Path(p) for p in record.get("members", [record.get("artifact", "")])][: len(trained)]
    if markers.done(stage, key) and len(done) == len(trained) and all(p.is_file() for p in done):
        if run:
            log(f"[{stage}] done, skipped")
        return done
    if not run:
        raise FileNotFoundError(f"the active stage of student {name!r} has not finished: run it (--stage active)")
    for member, (_, _, artifact) in zip([name, *config.committee_students(name)], trained):
        if not artifact.exists():
            raise FileNotFoundError(f"{artifact} is missing: run the train stage for {member!r}")
    from mlffd.active import run_active

    log(f"[{stage}] active distillation in {Path(config.workdir) / 'active' / name}")
    tcfg, _, artifact = trained[0]
    summary = run_active(active, tcfg, Path(config.workdir) / "active" / name, artifact,
                         teacher=teacher if teacher is not None else config.teacher, log=log,
                         others=[(cfg, path) for cfg, _, path in trained[1:]])
    markers.mark(stage, key, artifact=summary["artifact"], members=summary["members"], rounds=len(summary["rounds"]),
                 teacher_calls=summary["teacher_calls"], stop_reason=summary["stop_reason"], report=summary["report"].get("html"))
    return [Path(p) for p in summary["members"]]


def _check_labels(paths: Mapping[str, Path]) -> None:
    """Every frame has a finite energy and forces (the teacher labelled it)."""
    import numpy as np

    from mlffd.data import frame_labels, read_frames

    for split, path in paths.items():
        frames = read_frames(path)
        for k, atoms in enumerate(frames):
            energy, forces, _ = frame_labels(atoms)
            if not (np.isfinite(energy) and np.isfinite(forces).all()):
                raise ValueError(f"{path}: frame {k} ({split}) has non-finite teacher labels")


__all__ = ["DistillConfig", "STAGES", "Stages", "load_distill_config", "run_distill"]
