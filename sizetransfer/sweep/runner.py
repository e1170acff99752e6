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
        asked = {option: cli.config.get(option) for option in _options_set(run.args)}
        asked["trainer.max_steps"] = run.max_steps
        changed = saved_config_differences(run.run_dir, asked)
        if changed:
            saved = ", ".join(f"{option}={_shown(old)}" for option, old, _ in changed)
            wanted = ", ".join(f"{option}={_shown(new)}" for option, _, new in changed)
            why = (" (the learning-rate schedule spans max_steps)"
                   if any(option == "trainer.max_steps" for option, _, _ in changed) else "")
            raise SweepError(
                f"run {run.key}: {run.run_dir} holds a run trained with {saved}, but this sweep asks {wanted} (its "
                f"config, an --override or a when: case changed). Skipping or continuing that run would not give "
                f"the run this sweep asks for{why}. Give another --root to keep both, or delete that run directory "
                f"to train it again")
    os.environ.pop("SIZETRANSFER_RUN_DIR", None)  # set by cli_main; the fits choose their own


#: Options a run's result does not depend on (its place and its display), left out of that comparison.
NOT_COMPARED = ("config", "run.dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                "evaluation.progress")


def _options_set(args: list[str]) -> list[str]:
    """The fit options a run's argument list sets (``--<option> <value>`` pairs), less those in
    :data:`NOT_COMPARED`."""
    pairs = zip(args[0::2], args[1::2])
    return [flag[2:] for flag, _ in pairs if flag.startswith("--") and flag[2:] not in NOT_COMPARED]


def saved_config_differences(run_dir: Path, asked: dict) -> list[tuple]:
    """``(option, saved value, asked value)`` for each option of ``asked`` (dotted path -> value) that the
    newest config saved in an existing run directory (``config.yaml``, or the latest
    ``config.resumed-<time>.yaml``) holds with another value. Options the saved config does not hold,
    and run directories without a saved config, give nothing. Numbers compare by value (1e-3 == 0.001)."""
    from sizetransfer.analysis.load import _read_yaml  # the sweep tables' reader of run configs

    resumed = sorted(run_dir.glob("config.resumed-*.yaml"))
    saved = _read_yaml(resumed[-1] if resumed else run_dir / "config.yaml")
    changed = []
    for option, value in asked.items():
        node, found = saved, True
        for part in option.split("."):
            if not isinstance(node, dict) or part not in node:
                found = False
                break
            node = node[part]
        if found and not _same(node, value):
            changed.append((option, node, value))
    return changed


def _plain(value):
    """A parsed option value as plain YAML data (Namespaces to dicts, tuples to lists)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(saved, asked) -> bool:
    saved, asked = _plain(saved), _plain(asked)
    number = (int, float)
    if isinstance(saved, number) and isinstance(asked, number) and not isinstance(saved, bool) \
            and not isinstance(asked, bool):
        return float(saved) == float(asked)
    if isinstance(saved, list) and isinstance(asked, list):
        return len(saved) == len(asked) and all(_same(a, b) for a, b in zip(saved, asked))
    if isinstance(saved, dict) and isinstance(asked, dict):
        return saved.keys() == asked.keys() and all(_same(saved[k], asked[k]) for k in saved)
    return saved == asked


def _shown(value) -> str:
    from sizetransfer.sweep.spec import _format

    return _format(_plain(value))


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

