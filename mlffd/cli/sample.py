"""``mlffd sample CONFIG``: teacher-driven sampling into a labelled extxyz dataset (resumable)."""

from __future__ import annotations

import json

import click

from mlffd.cli.options import DEVICE, INPUT_FILE, OUTPUT_DIR, POSITIVE_INT, check_output_dir


@click.command("sample")
@click.argument("config", type=INPUT_FILE)
@click.option("--output-dir", "-o", type=OUTPUT_DIR, default=None, help="Override the config's output_dir.")
@click.option("--teacher", default=None, help="Override the config's teacher spec (e.g. emt, sevennet:7net-0).")
@click.option("--device", type=DEVICE, default=None, help="Override the config's device (cpu, cuda, cuda:N).")
@click.option("--threads", type=POSITIVE_INT, default=None, help="torch threads for the teacher (overrides the config).")
@click.option("--max-trajectories", type=POSITIVE_INT, default=None, help="Stop after this many trajectories (resume later).")
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
    if not dry_run:  # before the teacher is loaded: the device it runs on and where the frames go
        from mlffd.cli.options import check_device

        try:
            check_device(cfg.device)
        except ValueError as exc:
            raise click.ClickException(f"sampling config {config}: device: {exc}") from exc
        try:
            check_output_dir(output_dir or cfg.output_dir)
        except ValueError as exc:
            raise click.ClickException(f"sampling config {config}: output_dir: {exc}") from exc
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
