"""Test-wide settings and fixtures.

Settings: W&B never reaches the network; plots render headless; BLAS stays single-threaded so
parallel test workers don't oversubscribe 2 cores.

Tiers: tests marked ``slow`` (long end-to-end runs, Monte Carlo with many samples) still run in CI
(``pytest -n 2``); ``pytest -m "not slow" -n 2`` is the development tier (under 3 minutes on 2 cores).

Fixtures: ``tiny_run`` — the one tiny training run every end-to-end test builds on (as fit CLI
options or as sweep overrides); ``isolated`` — the working directory is the test's ``tmp_path`` and
W&B runs offline there.
"""
import json
import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The tiny run (option path -> value): simple_local-sized FDLF fit at L = 12, width 8, one warm-up
#: step, a cheap evaluation at L = 12 and 16 (far region inside L = 12).
TINY_RUN = {
    "model.width": 8, "model.warmup_steps": 1, "model.compile": False,
    "data.init_args.train_size": 12, "data.init_args.eval_sizes": [12, 16], "data.init_args.batch_size": 4,
    "data.init_args.val_batches": 1, "trainer.val_check_interval": 2, "trainer.log_every_n_steps": 1,
    "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False, "trainer.accelerator": "cpu",
    "evaluation.n_samples": 2, "evaluation.response_samples": 1, "evaluation.n_probes": 1,
    "evaluation.far": [5, 6], "evaluation.progress": False, "evaluation.sites": None,
}


class TinyRun:
    """:data:`TINY_RUN` with changes: a value :attr:`DROP` removes an option (the config's own applies)."""

    DROP = object()

    def options(self, changes: dict | None = None) -> dict:
        """The options as a dict (a sweep's ``overrides``)."""
        merged = {**TINY_RUN, **(changes or {})}
        return {k: v for k, v in merged.items() if v is not self.DROP}

    def args(self, config: str, changes: dict | None = None) -> list[str]:
        """``["--config", config, "--<option>", "<value>", ...]`` for ``sizetransfer.fit``."""
        args = ["--config", config]
        for key, value in self.options(changes).items():
            text = value if isinstance(value, str) else json.dumps(value)  # true/false/null/[..]
            args += [f"--{key}", text]
        return args


@pytest.fixture(scope="session")
def tiny_run() -> TinyRun:
    return TinyRun()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """cwd = ``tmp_path`` (``runs/`` and stray output land there); W&B offline, its default directory
    ``tmp_path/stray_wandb`` (a run that writes there went astray); no inherited W&B group."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "stray_wandb"))
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
