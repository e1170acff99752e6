"""Experiment tracking: the one module that imports Weights & Biases.

Fits log through Lightning's ``WandbLogger`` (configured as ``trainer.logger`` by class path);
everything else that touches W&B goes through the functions here:

* :func:`wandb_should_be_offline` — W&B runs offline unless the user configured it;
* :func:`prepare_wandb_loggers`, :func:`finish_wandb_loggers` — around one fit;
* :func:`log_evaluation` — an evaluation's scalars to every logger, its table and figure to W&B;
* :func:`log_aggregate_run` — a sweep's aggregate W&B run with its tables and figures.
"""
from __future__ import annotations

import netrc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger


def wandb_should_be_offline() -> bool:
    """Whether W&B runs offline: as ``WANDB_MODE`` says when set (offline/dryrun), else unless W&B can be
    reached (an API key or a netrc login)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"] in ("offline", "dryrun")
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def _quiet_settings():
    """``wandb.Settings(quiet=True)`` (no run-history dump at the end) unless the user chose
    ``WANDB_QUIET`` / ``WANDB_SILENT``; then None."""
    if any(v in os.environ for v in ("WANDB_QUIET", "WANDB_SILENT")):
        return None
    import wandb

    return wandb.Settings(quiet=True)


def wandb_loggers(loggers) -> list[WandbLogger]:
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def prepare_wandb_loggers(loggers) -> None:
    """Before a fit starts its W&B run: shut down a W&B service left by earlier, finished runs of this
    process (a notebook, tests) — a reused service wrote an offline run's transaction log
    (``run-*.wandb``) to the earlier run's directory (wandb 0.31) — and quiet the run (Lightning always
    passes ``anonymous=None``, which wandb >= 0.22 warns about; the fit prints its own summary)."""
    found = wandb_loggers(loggers)
    if not found:
        return
    import wandb

    if wandb.run is None:
        wandb.teardown()
    for logger in found:
        logger._wandb_init.pop("anonymous", None)
        if logger._wandb_init.get("settings") is None:
            logger._wandb_init["settings"] = _quiet_settings()


@dataclass
class WandbRun:
    """A finished W&B run: its id, its directory and whether it ran offline."""

    id: str
    path: Path | None
    offline: bool


def finish_wandb_loggers(loggers) -> WandbRun | None:
    """Close the W&B run of a fit, so that an offline run is complete and a second fit in this process
    starts its own run; returns the (last) run's id and directory."""
    finished = None
    for logger in wandb_loggers(loggers):
        experiment = logger.experiment
        path = Path(experiment.dir).resolve().parent if experiment.dir else None
        finished = WandbRun(experiment.id, path, experiment.settings.mode in ("offline", "dryrun"))
        experiment.finish()
    return finished


def log_evaluation(loggers, metrics: dict[str, float], *, step: int,
                   table: tuple[str, list[str], list[dict]] | None = None,
                   image: tuple[str, Path] | None = None) -> None:
    """Scalars to every logger at ``step``; ``table = (key, columns, rows)`` and ``image = (key, png)``
    to a ``WandbLogger`` only (other loggers have no tables or images)."""
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()
        if isinstance(logger, WandbLogger):
            if table is not None:
                key, columns, rows = table
                logger.log_table(key, columns=columns, data=[[row[c] for c in columns] for row in rows], step=step)
            if image is not None:
                logger.log_image(image[0], images=[str(image[1])], step=step)


def log_aggregate_run(*, run_id: str, name: str, group: str, directory: Path, config: dict[str, Any],
                      tables: dict[str, tuple[list[str], list[dict]]], images: dict[str, Path]) -> Path:
    """One W&B run (job type ``aggregate``, resumed when ``run_id`` exists) holding ``tables``
    (key -> (columns, rows)) and ``images`` (key -> png); offline unless W&B is configured. It runs
    beside any other active run (``reinit="create_new"``) and leaves W&B's process-wide settings reset.
    Returns the run's directory."""
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sizetransfer"), group=group, job_type="aggregate",
                     name=name, dir=str(directory), mode="offline" if wandb_should_be_offline() else None,
                     id=run_id, resume="allow", settings=_quiet_settings(), config=config, reinit="create_new",
                     allow_val_change=True)
    try:
        for key, (columns, rows) in tables.items():
            run.log({key: wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])})
        for key, path in images.items():
            run.log({key: wandb.Image(str(path))})
        return Path(run.dir).parent
    finally:
        run.finish()
        wandb.teardown()  # reset wandb's process-wide settings (dir, mode) for later runs in this process


def log_to_run(*, run_id: str, directory: Path, summary: dict[str, Any],
               tables: dict[str, tuple[list[str], list[dict]]], images: dict[str, Path]) -> Path:
    """Add ``summary`` values, ``tables`` (key -> (columns, rows)) and ``images`` (key -> png) to the existing
    W&B run ``run_id`` (a fit's run, resumed; its files under ``directory``), offline unless W&B is
    configured; W&B's process-wide settings are reset afterwards. Returns the run's directory."""
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sizetransfer"), id=run_id, resume="allow",
                     dir=str(directory), mode="offline" if wandb_should_be_offline() else None,
                     settings=_quiet_settings(), reinit="create_new")
    try:
        for key, (columns, rows) in tables.items():
            run.log({key: wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])})
        for key, path in images.items():
            run.log({key: wandb.Image(str(path))})
        run.summary.update(summary)
        return Path(run.dir).parent
    finally:
        run.finish()
        wandb.teardown()
