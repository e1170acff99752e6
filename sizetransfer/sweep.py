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

The run key joins ``<axis>=<value>`` over the grid axes with ``-`` (axis = last component of the
option path), e.g. ``teacher=medium_range-blocks=1-seed=0``. A run is *finished* when its
``eval/step=<max_steps>/metrics.csv`` exists. Outputs in ``<root>/<name>/``: the run directories,
``logs/<key>.log`` (each fit's output), ``runs.csv`` (status and wall time per run), ``results.csv``
(every run's final evaluation rows with the run's axis values), ``generation.csv`` (Table 5 rows,
when the runs have a generation section), ``figures/*.png`` and ``tables/*.{csv,md}``
(:func:`sizetransfer.analysis.draw`), and an aggregate W&B run (offline unless W&B is configured).

Other modes: ``--dry-run`` lists the runs and their status; ``--aggregate-only`` skips training;
``--wandb-definition`` prints the grid as a W&B sweep definition (``wandb sweep`` it on a W&B
server; each agent call runs ``python -m sizetransfer.sweep --config ... --point --<axis>=<value> ...``,
which trains that one grid point into the same run directory).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Keys of a sweep config and whether they are required.
SPEC_KEYS = {"name": True, "fit_config": True, "grid": True, "root": False, "overrides": False,
             "figures": False, "description": False}
#: Analysis kinds a sweep may draw (``sizetransfer.analysis``).
FIGURE_KINDS = ("size", "radius", "ising", "generation", "hard_valid")
#: The grid axis that sets both ``seed_everything`` and ``data.init_args.seed``.
SEED_AXIS = "seed"
#: Packaged sweep configs (``configs/sweeps`` of the repository).
PACKAGE_SWEEPS = Path(__file__).resolve().parent / "configs" / "sweeps"


class SweepError(ValueError):
    """A bad sweep config or option (raised before any run starts)."""


@dataclass
class Run:
    """One grid point: its key, axis values, fit arguments and run directory."""

    key: str
    values: dict[str, Any]          # short axis name -> value
    args: list[str]                 # fit options (after --config)
    run_dir: Path
    max_steps: int = 0
    status: str = "pending"         # done | failed | pending
    wall_s: float = float("nan")
    returncode: int | None = None

    def finished(self) -> bool:
        return (self.run_dir / "eval" / f"step={self.max_steps}" / "metrics.csv").is_file()


@dataclass
class SweepSpec:
    name: str
    fit_config: str
    grid: dict[str, list]
    root: str = "runs/sweeps"
    overrides: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def sweep_dir(self) -> Path:
        return Path(self.root) / self.name

    @property
    def axes(self) -> dict[str, str]:
        """Short axis name -> option path."""
        return {short_name(path): path for path in self.grid}


def short_name(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def find_sweep(name: str) -> Path:
    """``name`` if it is a file, else ``./configs/sweeps/name[.yaml]`` or the packaged copy."""
    if Path(name).is_file():
        return Path(name)
    for folder in (Path.cwd() / "configs" / "sweeps", PACKAGE_SWEEPS):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise SweepError(f"--config: no sweep config {name!r} (a file, or a name in configs/sweeps/: "
                     f"{sorted(p.stem for p in PACKAGE_SWEEPS.glob('*.yaml'))})")


def _format(value: Any) -> str:
    """Value as a fit option / run-key string: YAML flow style for lists, plain for scalars."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def load_spec(path: str | os.PathLike, *, root: str | None = None,
              overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and check a sweep config (SweepError naming the key and what is allowed)."""
    path = find_sweep(str(path))
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep config must be a mapping with keys {sorted(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)}")
    missing = [k for k, required in SPEC_KEYS.items() if required and k not in raw]
    if missing:
        raise SweepError(f"{path}: missing key(s) {missing}")
    name = str(raw["name"])
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise SweepError(f"name must be a non-empty folder name without '/', '\\' or spaces, got {name!r}")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid:
        raise SweepError("grid must be a non-empty mapping option path -> list of values")
    for option, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{option} must be a non-empty list of values, got {values!r}")
        if len({_format(v) for v in values}) != len(values):
            raise SweepError(f"grid.{option} has repeated values: {values}")
    shorts = [short_name(p) for p in grid]
    if len(set(shorts)) != len(shorts):
        raise SweepError(f"grid axes must have distinct last components (they name the runs), got {list(grid)}")
    figures = list(raw.get("figures") or [])
    bad = [f for f in figures if f not in FIGURE_KINDS]
    if bad:
        raise SweepError(f"figures: unknown kind(s) {bad}; allowed: {list(FIGURE_KINDS)}")
    fixed = dict(raw.get("overrides") or {})
    fixed.update(overrides or {})
    clash = sorted(set(fixed) & set(grid))
    if clash:
        raise SweepError(f"option(s) {clash} appear both in grid and overrides")
    return SweepSpec(name=name, fit_config=str(raw["fit_config"]), grid={k: list(v) for k, v in grid.items()},
                     root=str(root if root is not None else raw.get("root", "runs/sweeps")),
                     overrides=fixed, figures=figures, description=str(raw.get("description", "")))


def expand(spec: SweepSpec) -> list[Run]:
    """The grid points in order (cartesian product, last axis fastest)."""
    runs = []
    options = list(spec.grid)
    for combo in itertools.product(*(spec.grid[o] for o in options)):
        values = {short_name(o): v for o, v in zip(options, combo)}
        key = "-".join(f"{short_name(o)}={_format(v)}" for o, v in zip(options, combo))
        args = ["--config", spec.fit_config]
        for option, value in list(spec.overrides.items()) + list(zip(options, combo)):
            if option == SEED_AXIS:
                args += ["--seed_everything", _format(value), "--data.init_args.seed", _format(value)]
            else:
                args += [f"--{option}", _format(value)]
        run_dir = spec.sweep_dir / key
        runs.append(Run(key=key, values=values, args=args + ["--run.dir", str(run_dir)], run_dir=run_dir))
    return runs


def check_runs(runs: list[Run]) -> None:
    """Parse and build every run's configuration in this process (nothing is written) so that a bad
    option stops the sweep before any training; sets ``max_steps`` of each run."""
    from sizetransfer.fit import OptionError, cli_main

    for run in runs:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                cli = cli_main(run.args + ["--trainer.enable_progress_bar", "false"], run=False)
        except (OptionError, SystemExit) as err:
            reason = str(err) if isinstance(err, OptionError) else " ".join(stderr.getvalue().split()[-60:])
            raise SweepError(f"run {run.key}: bad fit options: {reason}\n  arguments: {' '.join(run.args)}") from None
        run.max_steps = int(cli.trainer.max_steps)
    os.environ.pop("SIZETRANSFER_RUN_DIR", None)  # set by cli_main; the fits choose their own


def _env(spec: SweepSpec, run: Run, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SIZETRANSFER_RUN_DIR", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("WANDB_RUN_GROUP", spec.name)
    env.setdefault("WANDB_JOB_TYPE", "fit")
    return env


def launch(spec: SweepSpec, run: Run, *, threads: int, log: Path, resume_from: Path | None = None) -> int:
    """Run one fit in a subprocess (output to ``log``); returns its exit status."""
    cmd = [sys.executable, "-m", "sizetransfer.fit"] + run.args
    if resume_from is not None:
        cmd += ["--ckpt_path", str(resume_from)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        out.flush()
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(spec, run, threads))


def _lock_path(spec: SweepSpec, run: Run) -> Path:
    return spec.sweep_dir / "logs" / f"{run.key}.lock"


def claim(spec: SweepSpec, run: Run) -> bool:
    """Take the run's lock file (``logs/<key>.lock``: pid and host of the runner training it), so that
    several runners can share one sweep; False if a live runner holds it. A lock left by a dead process
    on this host is taken over."""
    lock = _lock_path(spec, run)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid, host = lock.read_text().split()[:2]
                if host != socket.gethostname():
                    return False  # another machine's runner: assume it is alive
                os.kill(int(pid), 0)
                return False
            except ProcessLookupError:
                lock.unlink(missing_ok=True)  # its runner died: take it over
                continue
            except (ValueError, OSError):
                return False  # being written right now, or not ours to judge
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return True
    return False


def run_one(spec: SweepSpec, run: Run, *, threads: int) -> None:
    """Train ``run`` unless finished or taken by another runner (:func:`claim`): an interrupted run
    (a checkpoint, no final evaluation) resumes from ``checkpoints/last.ckpt``; a run without a
    checkpoint starts again from scratch."""
    if run.finished():
        run.status = "done"
        return
    if not claim(spec, run):
        run.status = "running elsewhere"
        return
    try:
        _train(spec, run, threads=threads)
    finally:
        _lock_path(spec, run).unlink(missing_ok=True)


def _train(spec: SweepSpec, run: Run, *, threads: int) -> None:
    if run.finished():  # finished by another runner meanwhile
        run.status = "done"
        return
    log = spec.sweep_dir / "logs" / f"{run.key}.log"
    resume_dir = None
    if run.run_dir.exists():
        if (run.run_dir / "checkpoints" / "last.ckpt").is_file():
            resume_dir = run.run_dir.with_name(f".{run.key}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}")
            run.run_dir.rename(resume_dir)
        else:
            shutil.rmtree(run.run_dir)
    start = time.perf_counter()
    run.returncode = launch(spec, run, threads=threads, log=log,
                            resume_from=None if resume_dir is None else resume_dir / "checkpoints" / "last.ckpt")
    run.wall_s = time.perf_counter() - start
    run.status = "done" if run.returncode == 0 and run.finished() else "failed"
    if run.status == "done" and resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    _write_timing(spec, run)


def _timing_file(spec: SweepSpec) -> Path:
    return spec.sweep_dir / "logs" / "wall_times.json"


_timing_lock = threading.Lock()


def _write_timing(spec: SweepSpec, run: Run) -> None:
    with _timing_lock:
        path = _timing_file(spec)
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[run.key] = {"wall_s": run.wall_s, "returncode": run.returncode, "status": run.status}
        _atomic_text(path, json.dumps(times, indent=1))


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def aggregate(spec: SweepSpec, runs: list[Run]) -> dict[str, Path]:
    """Write ``runs.csv``, ``results.csv`` and (if any run has one) ``generation.csv``; returns their paths."""
    times = json.loads(_timing_file(spec).read_text()) if _timing_file(spec).is_file() else {}
    axes = list(spec.axes)
    run_rows, result_rows, gen_rows = [], [], []
    result_cols: list[str] = ["run"] + axes + ["step", "receptive_radius"]
    gen_cols: list[str] = ["run"] + axes
    for run in runs:
        if run.finished():
            run.status = "done"
        elif run.status != "failed" and times.get(run.key, {}).get("status") == "failed":
            run.status = "failed"
        wall = run.wall_s if run.wall_s == run.wall_s else times.get(run.key, {}).get("wall_s", "")
        status = run.status if run.status in ("done", "failed") else "pending"
        run_rows.append({"run": run.key, "status": status, "wall_s": wall, "run_dir": str(run.run_dir),
                         **run.values})
        if run.status != "done":
            continue
        final = run.run_dir / "eval" / f"step={run.max_steps}"
        meta = json.loads((final / "metrics.json").read_text()) if (final / "metrics.json").is_file() else {}
        for row in _read_csv(final / "metrics.csv"):
            for c in row:
                if c not in result_cols:
                    result_cols.append(c)
            result_rows.append({"run": run.key, **run.values, "step": meta.get("step", run.max_steps),
                                "receptive_radius": meta.get("receptive_radius", ""), **row})
        if (final / "generation.csv").is_file():
            for row in _read_csv(final / "generation.csv"):
                for c in row:
                    if c not in gen_cols:
                        gen_cols.append(c)
                gen_rows.append({"run": run.key, **run.values, **row})
    out = spec.sweep_dir
    paths = {"runs": out / "runs.csv", "results": out / "results.csv"}
    _atomic_csv(paths["runs"], ["run", "status", "wall_s", "run_dir"] + axes, run_rows)
    _atomic_csv(paths["results"], result_cols, result_rows)
    if gen_rows:
        paths["generation"] = out / "generation.csv"
        _atomic_csv(paths["generation"], gen_cols, gen_rows)
    return paths


def draw_figures(spec: SweepSpec) -> list[Path]:
    if not spec.figures:
        return []
    from sizetransfer import analysis

    return list(analysis.draw(spec.sweep_dir, spec.figures))


def log_to_wandb(spec: SweepSpec, tables: dict[str, Path], figures: list[Path]) -> Path | None:
    """An aggregate W&B run (group = sweep name, job type ``aggregate``) with the tables and figures;
    offline unless W&B is configured. Returns the run's directory."""
    import wandb

    from sizetransfer.fit import wandb_should_be_offline

    mode = "offline" if wandb_should_be_offline() else None
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sizetransfer"), group=spec.name,
                     job_type="aggregate", name=f"{spec.name}/aggregate", dir=str(spec.sweep_dir), mode=mode,
                     config={"sweep": spec.name, "fit_config": spec.fit_config, "grid": spec.grid,
                             "overrides": spec.overrides}, reinit="create_new")
    try:
        for name, path in tables.items():
            rows = _read_csv(path)
            if rows:
                columns = list(rows[0])
                run.log({f"sweep/{name}": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        for path in figures:
            if path.suffix == ".png":
                run.log({f"sweep/figures/{path.stem}": wandb.Image(str(path))})
        return Path(run.dir).parent
    finally:
        run.finish()
        wandb.teardown()  # reset wandb's process-wide settings (dir, mode) for later runs in this process


def wandb_definition(spec: SweepSpec, config_path: str) -> dict:
    """The grid as a W&B sweep definition (method grid); the agent's command trains one point."""
    return {
        "name": spec.name,
        "description": spec.description or f"sizetransfer sweep {spec.name} (fit config {spec.fit_config})",
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {short: {"values": list(spec.grid[path])} for short, path in spec.axes.items()},
        "command": ["${env}", "${interpreter}", "-m", "sizetransfer.sweep", "--config", config_path,
                    "--point", "${args}"],
    }


def _parse_point(spec: SweepSpec, extra: list[str]) -> dict[str, Any]:
    """``--<axis>=<value>`` arguments (a W&B agent's ``${args}``) -> axis values."""
    values: dict[str, Any] = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise SweepError(f"--point takes --<axis>=<value> arguments, got {arg!r}")
        name, value = arg[2:].split("=", 1)
        if name not in spec.axes:
            raise SweepError(f"--point: unknown axis {name!r}; axes: {list(spec.axes)}")
        values[name] = yaml.safe_load(value)
    missing = [a for a in spec.axes if a not in values]
    if missing:
        raise SweepError(f"--point: missing axis value(s) {missing}")
    return values


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SweepError(f"--override takes option=value (e.g. trainer.max_steps=300), got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


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
    spec = load_spec(args.config, root=args.root, overrides=dict(_parse_override(o) for o in args.override))
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
    for path in figures:
        print(f"  figure     {path}")
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


if __name__ == "__main__":
    cli()
