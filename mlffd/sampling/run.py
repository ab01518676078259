"""A sampling run: trajectories in order, frames appended per trajectory, resumable, provenance."""


from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ase import Atoms

from mlffd.sampling.config import ADDED_KEYS, FORMAT_VERSION, SampleConfig
from mlffd.sampling.structures import Trajectory, build_seed, plan, relax_key, repeat
from mlffd.sampling.trajectory import run_trajectory

@dataclass
class SampleResult:
    """What a call of :func:`run_sampling` did."""

    files: dict[str, Path]
    provenance: dict[str, Path]
    progress: Path
    trajectories_done: int
    trajectories_total: int
    trajectories_run_now: int
    frames: dict[str, int] = field(default_factory=dict)
    config_types: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.trajectories_done == self.trajectories_total


def config_hash(config: SampleConfig) -> str:
    """sha256 of the expanded config (coverage recipe included) minus the parts that cannot change
    the data (threads, device, output_dir, base_dir) and the later-added keys at their defaults (:data:`ADDED_KEYS`)."""
    d = config.expanded().to_dict()
    for k in ("threads", "device", "output_dir", "coverage", "base_dir"):
        d.pop(k, None)
    for group, added in ADDED_KEYS.items():
        for item in d[group]:
            for key, default in added.items():
                if key in item and item[key] == default:
                    del item[key]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _read_progress(path: Path) -> tuple[dict | None, list[dict], dict[str, dict]]:
    """The header, the finished trajectories and the teacher-relaxed seeds (by :func:`relax_key`)."""
    if not path.exists():
        return None, [], {}
    header, done, relaxed = None, [], {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a kill: ignore it
            if rec.get("type") == "header":
                header = rec
            elif rec.get("type") == "done":
                done.append(rec)
            elif rec.get("type") == "relaxed":
                relaxed[rec["key"]] = rec
    return header, done, relaxed


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _append_frames(path: Path, frames: Sequence[Atoms]) -> int:
    """Append frames to an extxyz file, flush + fsync; return the new file size."""
    from ase.io import write

    with open(path, "a") as fh:
        write(fh, list(frames), format="extxyz")
        fh.flush()
        os.fsync(fh.fileno())
    return path.stat().st_size


def writable(frame: Atoms) -> bool:
    """Whether a frame may enter a dataset: atoms, finite positions and cell, and finite teacher
    labels (a frame from a run that broke down never does)."""
    import numpy as np

    if len(frame) == 0 or not np.isfinite(frame.positions).all() or not np.isfinite(frame.cell.array).all():
        return False
    res = getattr(frame.calc, "results", None) or {}
    values = [res.get(k) for k in ("energy", "forces", "stress") if res.get(k) is not None]
    return "energy" in res and "forces" in res and all(np.isfinite(np.asarray(v, float)).all() for v in values)


def _teacher_tags(info: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = {"teacher": str(info["spec"])}
    if info.get("checkpoint_sha256"):
        tags["teacher_sha256"] = str(info["checkpoint_sha256"])
    return tags


def _resume(files: dict[str, Path], progress_path: Path, chash: str) -> tuple[dict[str, Any] | None, list[dict], dict[str, dict]]:
    """The progress record of a run to resume (header, finished trajectories, relaxed seeds),
    checked to belong to this config, with each output truncated to the size recorded after
    its last finished trajectory (which drops a torn batch)."""
    header, done, relaxed = _read_progress(progress_path)
    if header is None:
        existing = [str(p) for p in files.values() if p.exists() and p.stat().st_size > 0]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} exist(s) but {progress_path} does not: not a resumable run of this config; "
                "remove the files or choose another output directory"
            )
    elif header.get("config_sha256") != chash:
        raise ValueError(
            f"{progress_path} belongs to a different sampling config (sha256 {header.get('config_sha256')}, "
            f"this one {chash}); use another output directory or remove the old run"
        )
    for split, path in files.items():
        sizes = [rec["size"] for rec in done if rec["split"] == split]
        size = max(sizes) if sizes else 0
        if path.exists() and path.stat().st_size != size:
            with open(path, "r+b") as fh:
                fh.truncate(size)
        elif not path.exists() and size > 0:
            raise FileNotFoundError(f"{path} is missing but {progress_path} records {len(sizes)} finished trajectories in it")
    return header, done, relaxed


def _provenance(config: SampleConfig, split: str, file_name: str, tinfo: dict[str, Any], chash: str, counts: dict[str, int],
                done: list[dict], trajectories: list[Trajectory]) -> dict[str, Any]:
    """The provenance record of one split's output file."""
    return {
        "format_version": FORMAT_VERSION,
        "file": file_name,
        "split": split,
        "teacher": tinfo,
        "config": config.expanded().to_dict(),  # the tasks that ran, coverage recipe spelled out (same hash)
        "config_sha256": chash,
        "frames": sum(counts.values()),
        "config_types": dict(sorted(counts.items())),
        "trajectories_done": sum(1 for r in done if r["split"] == split),
        "trajectories": [r["id"] for r in done if r["split"] == split],
        "trajectories_total": sum(1 for t in trajectories if t.split == split),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema": {
            "arrays": ["forces (eV/Å)"],
            "calc": ["energy (eV)", "free_energy (eV)", "stress (eV/Å^3, Voigt xx yy zz yz xz xy, ASE sign)"],
            "info": ["config_type", "trajectory", "teacher", "teacher_sha256", "temperature (K)", "step", "copy",
                     "contact_distance (Å, pushed pairs only)"],
        },
    }


def _write_trajectory(traj: Trajectory, frames: list[Atoms], path: Path, progress_path: Path) -> dict[str, Any]:
    """Append a finished trajectory's ``frames`` to its split's file and record it as done;
    returns the record (its frame count per config_type and the file's size after it)."""
    size = _append_frames(path, frames) if frames else (path.stat().st_size if path.exists() else 0)
    ctypes: dict[str, int] = {}
    for f in frames:
        ctypes[f.info["config_type"]] = ctypes.get(f.info["config_type"], 0) + 1
    rec = {"type": "done", "id": traj.id, "split": traj.split, "frames": len(frames), "size": size, "config_types": ctypes,
           "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _append_line(progress_path, rec)
    return rec


class _Seeds:
    """The seed structures of a run's trajectories, built once each."""

    def __init__(self, config: SampleConfig, calc, relaxed: dict[str, dict], progress_path: Path) -> None:
        self.config = config
        self.calc = calc
        self.relaxed = relaxed
        self.progress_path = progress_path
        self.configs = {s.name: s for s in config.expanded().seeds}
        self.built = {name: build_seed(s, base_dir=config.base_dir) for name, s in self.configs.items()}

    def of(self, traj: Trajectory, on_evaluation) -> Atoms:
        """The trajectory's seed; when the task asks, its cell relaxed by the teacher (once per run,
        kept in the progress record so that a resumed run starts from the very same structure)
        and then repeated to the seed's supercell."""
        from mlffd.sampling.relax import RelaxedSeed, relax_seed

        task = traj.task
        if not task.relax:
            return self.built[task.seed]
        seed = self.configs[task.seed]
        key = relax_key(task, seed)
        if key not in self.relaxed:
            result = relax_seed(build_seed(seed, unit=True, base_dir=self.config.base_dir), self.calc, task.relax_steps, task.relax_fmax,
                                on_evaluation=on_evaluation)
            if result.error:
                import warnings

                warnings.warn(f"seed {task.seed!r}: the teacher's relaxation failed ({result.error}); "
                              "using the unrelaxed seed", RuntimeWarning, stacklevel=3)
            rec = {"type": "relaxed", "key": key, "seed": task.seed, **result.to_record()}
            _append_line(self.progress_path, rec)
            self.relaxed[key] = rec
        return repeat(RelaxedSeed.from_record(self.relaxed[key]).atoms, seed.supercell)


def _count_config_types(counts: dict[str, dict[str, int]], rec: dict) -> None:
    """Add a finished trajectory's frames per config_type to its split's counts."""
    split = counts[rec["split"]]
    for key, v in rec.get("config_types", {}).items():
        split[key] = split.get(key, 0) + v


def run_sampling(
    config: SampleConfig,
    teacher=None,
    output_dir: str | Path | None = None,
    max_trajectories: int | None = None,
    progress: bool = True,
) -> SampleResult:
    """Run (or resume) a sampling config; returns what was written.

    Args:
        config: the run's configuration.
        teacher: an ASE calculator to use instead of loading ``config.teacher`` (provenance then
            describes that object).
        output_dir: overrides ``config.output_dir``.
        max_trajectories: stop after running this many trajectories in this call (the rest is
            left for a later call, which resumes).
        progress: show tqdm progress bars.
    """
    from tqdm.auto import tqdm

    from mlffd.teachers import load_teacher, teacher_info

    out = Path(output_dir if output_dir is not None else config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": out / config.train_file, "test": out / config.test_file}
    prov_paths = {k: p.with_name(p.name + ".provenance.json") for k, p in files.items()}
    progress_path = out / "progress.jsonl"
    chash = config_hash(config)

    header, done, relaxed = _resume(files, progress_path, chash)

    calc = load_teacher(teacher if teacher is not None else config.teacher, device=config.device)
    tinfo = teacher_info(calc)  # the adapters attach their provenance (incl. resolved checkpoint) to calc
    tags = _teacher_tags(tinfo)
    if header is None:
        _append_line(
            progress_path,
            {"type": "header", "format_version": FORMAT_VERSION, "config_sha256": chash, "teacher": tinfo,
             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        )

    if config.threads is not None:
        import torch

        torch.set_num_threads(int(config.threads))

    trajectories = plan(config)
    finished = {rec["id"] for rec in done}
    todo = [t for t in trajectories if t.id not in finished]
    if max_trajectories is not None:
        todo = todo[: int(max_trajectories)]
    seeds = _Seeds(config, calc, relaxed, progress_path)

    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for rec in done:
        _count_config_types(counts, rec)

    def write_provenance() -> None:
        for split, path in prov_paths.items():
            _write_json_atomic(path, _provenance(config, split, files[split].name, tinfo, chash, counts[split], done, trajectories))

    total_evals = sum(t.evaluations for t in todo)
    bar = tqdm(total=total_evals, unit="eval", desc="teacher", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    run_now = 0
    try:
        for k, traj in enumerate(todo):
            bar.set_postfix_str(f"{len(finished) + k + 1}/{len(trajectories)} {traj.id}")
            frames = run_trajectory(
                traj, seeds.of(traj, bar.update), calc, tags, config.random_seed, config.descriptor_cutoff, config.max_force,
                on_evaluation=bar.update,
            )
            rec = _write_trajectory(traj, [f for f in frames if writable(f)], files[traj.split], progress_path)
            done.append(rec)
            _count_config_types(counts, rec)
            write_provenance()
            run_now += 1
    finally:
        bar.close()
    write_provenance()

    return SampleResult(
        files=files,
        provenance=prov_paths,
        progress=progress_path,
        trajectories_done=len(done),
        trajectories_total=len(trajectories),
        trajectories_run_now=run_now,
        frames={k: sum(v.values()) for k, v in counts.items()},
        config_types=counts,
    )


def snapshot(output_dir: str | Path, config: SampleConfig | None = None, dest_dir: str | Path | None = None,
             compress: str = "xz") -> dict[str, Path]:
    """Compressed copies of the *finished* part of a (possibly still running) sampling run.

    Each output file is cut at the size recorded after its last finished trajectory, so a batch
    being written right now is never included. ``compress``: ``xz``, ``gz`` or ``none``. Returns
    ``{split: path}``; the provenance sidecars are copied next to them (``NAME.extxyz.provenance.json``).
    """
    import gzip
    import lzma
    import shutil

    out = Path(output_dir)
    dest = Path(dest_dir) if dest_dir is not None else out
    dest.mkdir(parents=True, exist_ok=True)
    names = {"train": (config.train_file if config else "train.extxyz"), "test": (config.test_file if config else "test.extxyz")}
    _, done, _ = _read_progress(out / "progress.jsonl")
    opener = {"xz": lambda p: lzma.open(p, "wb", preset=9), "gz": lambda p: gzip.open(p, "wb", compresslevel=9),
              "none": lambda p: open(p, "wb")}
    if compress not in opener:
        raise ValueError(f"compress must be xz, gz or none, got {compress!r}")
    written: dict[str, Path] = {}
    for split, name in names.items():
        src = out / name
        sizes = [rec["size"] for rec in done if rec["split"] == split]
        if not src.exists() or not sizes:
            continue
        size = max(sizes)
        target = dest / (name + ("" if compress == "none" else f".{compress}"))
        if target.resolve() == src.resolve():
            raise ValueError(f"snapshot target {target} is the live output file")
        tmp = target.with_name(target.name + ".tmp")
        with open(src, "rb") as fin, opener[compress](tmp) as fout:
            remaining = size
            while remaining > 0:
                block = fin.read(min(remaining, 1 << 20))
                if not block:
                    break
                fout.write(block)
                remaining -= len(block)
        os.replace(tmp, target)
        prov = src.with_name(src.name + ".provenance.json")
        if prov.exists() and dest.resolve() != out.resolve():
            shutil.copyfile(prov, dest / prov.name)
        written[split] = target
    return written
