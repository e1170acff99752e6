"""The local sweep runner: every grid point a ``python -m sizetransfer.fit`` subprocess, checked first in
this process; restartable (finished runs are skipped, interrupted ones resume from their last
checkpoint) and shareable by several runners (a lock file per run)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sizetransfer.atomic import atomic_write
from sizetransfer.sweep.spec import SweepError, Run, SweepSpec


@contextlib.contextmanager
def _lightning_info_silenced():
    """Lightning's per-fit info lines (seed, accelerator banner) off while the runs are only checked."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch",
                                                    "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_runs(runs: list[Run]) -> None:
    """Parse and build every run's configuration in this process (nothing is written) so that a bad
    option stops the sweep before any training; sets ``max_steps`` of each run."""
    from sizetransfer.fit import OptionError, cli_main

    for run in runs:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), _lightning_info_silenced():
                cli = cli_main(run.args + ["--trainer.enable_progress_bar", "false"], run=False)
        except (OptionError, SystemExit) as err:
            reason = str(err) if isinstance(err, OptionError) else " ".join(stderr.getvalue().split()[-60:])
            raise SweepError(f"run {run.key}: bad fit options: {reason}\n  arguments: {' '.join(run.args)}") from None
        run.max_steps = int(cli.trainer.max_steps)
        saved = saved_max_steps(run.run_dir)
        if saved is not None and saved != run.max_steps:
            raise SweepError(
                f"run {run.key}: {run.run_dir} holds a run trained with trainer.max_steps={saved}, but this sweep "
                f"asks trainer.max_steps={run.max_steps} (its config or an --override changed). Continuing that run "
                f"would not give a {run.max_steps}-step run, because the learning-rate schedule spans max_steps. "
                f"Give another --root to keep both budgets, or delete that run directory to train it again")
    os.environ.pop("SIZETRANSFER_RUN_DIR", None)  # set by cli_main; the fits choose their own


def saved_max_steps(run_dir: Path) -> int | None:
    """``trainer.max_steps`` of the newest config saved in an existing run directory (``config.yaml``, or the
    latest ``config.resumed-<time>.yaml``); None when there is none or it does not say."""
    from sizetransfer.analysis.load import _get, _read_yaml  # the sweep tables' reader of run configs

    resumed = sorted(run_dir.glob("config.resumed-*.yaml"))
    steps = _get(_read_yaml(resumed[-1] if resumed else run_dir / "config.yaml"), "trainer.max_steps")
    return steps if isinstance(steps, int) else None


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
    last = run.run_dir / "checkpoints" / "last.ckpt"
    resume_from = None
    if run.run_dir.exists():
        if last.is_file() and (run.run_dir / "config.yaml").is_file():
            resume_from = last  # the fit continues in this run directory and W&B run
        else:
            shutil.rmtree(run.run_dir)
    start = time.perf_counter()
    run.returncode = launch(spec, run, threads=threads, log=log, resume_from=resume_from)
    run.wall_s = time.perf_counter() - start
    run.status = "done" if run.returncode == 0 and run.finished() else "failed"
    _write_timing(spec, run)


def _timing_file(spec: SweepSpec) -> Path:
    return spec.sweep_dir / "logs" / "wall_times.json"


_timing_lock = threading.Lock()


def _write_timing(spec: SweepSpec, run: Run) -> None:
    with _timing_lock:
        path = _timing_file(spec)
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[run.key] = {"wall_s": run.wall_s, "returncode": run.returncode, "status": run.status}
        atomic_write(path, json.dumps(times, indent=1))

