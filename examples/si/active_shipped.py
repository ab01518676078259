"""Run (or resume) the active-distillation loop on shipped students (mlffd.active.run_active).

The YAML names the work directory, the teacher, the exploring student and the committee's other
students (each: a shipped name and the training config its fine-tunes use) and the ``active``
options (mlffd.active.ActiveConfig). The shipped artifacts are copied into the work directory
first, so a later re-ship does not change what a resumed loop started from. Prints the loop's
log; the report is ``WORKDIR/active/NAME/report.html``. Run from the repository root:
    python examples/si/active_shipped.py examples/si/active-shipped.yaml
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mlffd.active import ActiveConfig, run_active
from mlffd.registry import resolve
from mlffd.training.config import load_config, read_mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the loop's YAML")
    args = parser.parse_args()
    path = Path(args.config)
    try:
        spec = read_mapping(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from None
    missing = [key for key in ("workdir", "teacher", "student", "active") if key not in spec]
    members = [spec.get("student"), *spec.get("committee_students", [])]
    if missing or not all(isinstance(m, dict) and {"name", "config"} <= set(m) for m in members if m is not None):
        raise SystemExit(f"{path}: expected workdir, teacher, student and active (missing: {missing or 'none'}); "
                         f"student and each committee student a mapping with name and config")
    here = path.resolve().parent
    workdir = (here / spec["workdir"]).resolve()
    (workdir / "start").mkdir(parents=True, exist_ok=True)

    def start(name: str) -> Path:
        copy = workdir / "start" / f"{name}.mlffd.pt"
        if not copy.exists():
            shutil.copyfile(resolve(name), copy)
        return copy

    student = load_config(here / spec["student"]["config"])
    others = [(load_config(here / m["config"]), start(m["name"])) for m in spec.get("committee_students", [])]
    summary = run_active(ActiveConfig.from_dict(spec["active"]), student, workdir / "active" / spec["student"]["name"],
                         start(spec["student"]["name"]), teacher=spec["teacher"], others=others)
    print(f"stopped: {summary['stop_reason']}; {summary['teacher_calls']} teacher calls; report {summary['report']}")


if __name__ == "__main__":
    main()
