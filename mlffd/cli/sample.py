"""``mlffd sample CONFIG``: teacher-driven sampling into a labelled extxyz dataset (resumable)."""

from __future__ import annotations

import json

import click


@click.command("sample")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None, help="Override the config's output_dir.")
@click.option("--teacher", default=None, help="Override the config's teacher spec (e.g. emt, sevennet:7net-0).")
@click.option("--device", default=None, help="Override the config's device (cpu, cuda).")
@click.option("--threads", type=int, default=None, help="torch threads for the teacher (overrides the config).")
@click.option("--max-trajectories", type=int, default=None, help="Stop after this many trajectories (resume later).")
@click.option("--dry-run", is_flag=True, help="Print the plan (trajectories, teacher evaluations) and exit.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--snapshot", type=click.Choice(["xz", "gz", "none"]), default=None,
              help="Write compressed copies of the finished part of the run (safe while it runs) and exit.")
def sample(config, output_dir, teacher, device, threads, max_trajectories, dry_run, no_progress, snapshot) -> None:
    """Sample structures with a teacher as described by CONFIG (YAML or TOML).

    Re-running the same command resumes a killed run: finished trajectories are kept and skipped.
    """
    import dataclasses

    from mlffd.sampling import load_config, plan, run_sampling
    from mlffd.sampling import snapshot as make_snapshot

    cfg = load_config(config)
    overrides = {k: v for k, v in (("teacher", teacher), ("device", device), ("threads", threads)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    if snapshot is not None:
        for split, path in make_snapshot(output_dir or cfg.output_dir, cfg, compress=snapshot).items():
            click.echo(f"{split}: {path}")
        return
    if dry_run:
        trajs = plan(cfg)
        for split in ("train", "test"):
            sel = [t for t in trajs if t.split == split]
            click.echo(
                f"{split}: {len(sel)} trajectories, <= {sum(t.evaluations for t in sel)} teacher evaluations, "
                f"<= {sum(t.max_kept * (1 + t.task.copies) for t in sel)} frames"
            )
        return
    result = run_sampling(cfg, output_dir=output_dir, max_trajectories=max_trajectories, progress=not no_progress)
    state = "complete" if result.complete else "incomplete (run the same command again to continue)"
    click.echo(f"{result.trajectories_done}/{result.trajectories_total} trajectories done, {state}")
    for split, path in result.files.items():
        click.echo(f"{split}: {path} ({result.frames.get(split, 0)} frames) {json.dumps(result.config_types.get(split, {}), sort_keys=True)}")
