"""Sweep runner: ``python -m sizetransfer.sweep --config configs/sweeps/<name>.yaml [--jobs N]``.

Runs a grid of fits (``python -m sizetransfer.fit`` in subprocesses, ``--jobs`` at a time), skips
finished runs when restarted, resumes interrupted ones from their last checkpoint, groups the runs
in W&B (group = sweep name), and aggregates the final evaluations into CSV tables and figures.

A sweep config (YAML)::

    name: radius                          # runs go to <root>/<name>/<run key>/
    fit_config: fdlf_radius_sweep.yaml    # base fit config, looked up like ``fit --config``
    root: runs/sweeps                     # optional (default runs/sweeps)
    grid:                                 # option path -> values; cartesian product in this order
      data.init_args.teacher: [simple_local, medium_range, complex_long]
      model.blocks: [1, 2, 3]
      seed: [0, 1, 2]                     # special: seed_everything and data.init_args.seed
    overrides: {trainer.max_steps: 1500}  # optional fixed fit options of every run
    figures: [radius]                     # analysis kinds drawn at the end (sizetransfer.analysis)

An optional ``tied: {model.skip_radius: model.radius}`` gives a fit option the value of a grid option
at every point, and ``when: {model.objective: {exact_score: {model.lr: 1.0e-3}}}`` sets fit options only
at the points where a grid option has a given value (neither enters the run key). The run key joins ``<axis>=<value>`` over the grid axes with ``-`` (axis = last component of the
option path), e.g. ``teacher=medium_range-blocks=1-seed=0``. A run is *finished* when its
``eval/step=<max_steps>/metrics.csv`` exists. Before any training, every option a run sets (and
``trainer.max_steps``) is compared with the config saved in its run directory: a folder trained with
other values is refused, not skipped or resumed. Outputs in ``<root>/<name>/``: the run directories,
``logs/<key>.log`` (each fit's output), ``launch.yaml`` (the ``--override`` options of the first
launch: later calls without ``--override`` reuse them, calls with different ones are refused),
``runs.csv`` (status and wall time per run), ``results.csv`` (every run's final evaluation rows with
the run's axis values), ``generation.csv`` (Table 5 rows, when the runs have a generation section),
``figures/*.png`` and ``tables/*.{csv,md}`` (:func:`sizetransfer.analysis.draw`), and an aggregate W&B
run (offline unless W&B is configured; its id is kept in ``aggregate_wandb_id``, so a restarted sweep
updates the same W&B run). An aggregation never loses rows: runs that an earlier aggregation found
finished keep their rows even if their run directory is gone or no longer counts as finished.

Other modes: ``--dry-run`` lists the runs and their status; ``--aggregate-only`` skips training;
``--wandb-definition`` prints the grid as a W&B sweep definition (``wandb sweep`` it on a W&B
server; each agent call runs ``python -m sizetransfer.sweep --config ... --point --<axis>=<value> ...``,
which trains that one grid point into the same run directory).

Modules: :mod:`~sizetransfer.sweep.spec` (configs and grid points), :mod:`~sizetransfer.sweep.runner`
(the local runner), :mod:`~sizetransfer.sweep.aggregate` (tables, figures, the aggregate W&B run).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from sizetransfer.sweep.spec import (  # noqa: F401  (the package's public names)
    SPEC_KEYS,
    FIGURE_KINDS,
    SEED_AXIS,
    PACKAGE_SWEEPS,
    LAUNCH_FILE,
    AGGREGATE_ID_FILE,
    SweepError,
    Run,
    SweepSpec,
    short_name,
    find_sweep,
    load_spec,
    expand,
    wandb_definition,
    remembered_overrides,
    remember_launch,
)
from sizetransfer.sweep.runner import (  # noqa: F401  (the package's public names)
    check_runs,
    launch,
    _lock_path,
    claim,
    saved_config_differences,
    run_one,
)
from sizetransfer.sweep.aggregate import (  # noqa: F401  (the package's public names)
    aggregate,
    draw_figures,
    log_to_wandb,
)
from sizetransfer.sweep.spec import _format, _parse_point, _parse_override


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.sweep", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="sweep config (a file or a name in configs/sweeps/)")
    p.add_argument("--root", default=None, help="root folder of sweeps (default: the config's root, runs/sweeps)")
    p.add_argument("--jobs", type=int, default=1, help="fits run at the same time (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per fit (default: CPU count // jobs, at least 1)")
    p.add_argument("--override", action="append", default=[], metavar="OPTION=VALUE",
                   help="extra fit option for every run, e.g. trainer.max_steps=300 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status; train nothing")
    p.add_argument("--aggregate-only", action="store_true", help="only aggregate finished runs and draw figures")
    p.add_argument("--no-wandb", action="store_true", help="no aggregate W&B run")
    p.add_argument("--wandb-definition", action="store_true", help="print the W&B sweep definition (YAML) and exit")
    p.add_argument("--point", action="store_true",
                   help="train one grid point given as --<axis>=<value> arguments (W&B agent mode)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: every run finished)."""
    args, extra = build_parser().parse_known_args(argv)
    if extra and not args.point:
        raise SweepError(f"unrecognised arguments: {extra}")
    if args.jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise SweepError(f"--threads must be >= 1, got {args.threads}")
    overrides = remembered_overrides(load_spec(args.config, root=args.root),
                                     dict(_parse_override(o) for o in args.override))
    spec = load_spec(args.config, root=args.root, overrides=overrides)
    if args.wandb_definition:
        print(yaml.safe_dump(wandb_definition(spec, args.config), sort_keys=False), end="")
        return 0
    runs = expand(spec)
    if args.point:
        wanted = _parse_point(spec, extra)
        runs = [r for r in runs if all(_format(r.values[a]) == _format(v) for a, v in wanted.items())]
        if not runs:
            raise SweepError(f"--point: {wanted} is not a point of the grid {spec.grid}")
    check_runs(runs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    todo = [r for r in runs if not r.finished()]
    for r in runs:
        if r.finished():
            r.status = "done"
    print(f"sweep {spec.name}: {len(runs)} runs in {spec.sweep_dir}, {len(runs) - len(todo)} finished, "
          f"{len(todo)} to run ({args.jobs} at a time, {threads} thread(s) each)", flush=True)
    if args.dry_run:
        for r in runs:
            state = "done" if r.finished() else ("interrupted" if r.run_dir.exists() else "pending")
            print(f"  {state:12s} {r.key}")
        return 0
    if not args.aggregate_only and todo:
        from tqdm.auto import tqdm

        remember_launch(spec, overrides, sys.argv[1:] if argv is None else list(argv))

        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="run")

        def work(run: Run) -> None:
            run_one(spec, run, threads=threads)
            if run.status == "running elsewhere":
                bar.write(f"  skip   {run.key}  (another runner holds {_lock_path(spec, run)})")
            else:
                bar.write(f"  {run.status:6s} {run.key}  ({run.wall_s:.0f} s)"
                          + ("" if run.status == "done" else f"  see {spec.sweep_dir / 'logs' / (run.key + '.log')}"))
            bar.update()

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(work, todo))
        bar.close()
    tables = aggregate(spec, runs)
    figures = draw_figures(spec)
    wandb_dir = None if args.no_wandb else log_to_wandb(spec, tables, figures)
    failed = [r.key for r in runs if r.status == "failed"]
    pending = [r.key for r in runs if r.status not in ("done", "failed")]
    print(f"\nSweep {spec.name}: {sum(r.status == 'done' for r in runs)} done, {len(failed)} failed, "
          f"{len(pending)} pending")
    for name, path in tables.items():
        print(f"  {name:10s} {path}")
    for path in figures:  # analysis.draw returns the PNGs and the tables (csv, md) it wrote
        print(f"  {'figure' if Path(path).suffix == '.png' else 'table':10s} {path}")
    if wandb_dir is not None:
        print(f"  W&B        {wandb_dir}")
    if failed:
        print(f"  failed runs (logs in {spec.sweep_dir / 'logs'}): {', '.join(failed)}")
    return 1 if failed else 0


def cli() -> None:
    try:
        sys.exit(main())
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
