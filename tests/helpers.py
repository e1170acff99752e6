"""Helpers shared by the tests (imported as ``from helpers import ...``; tests/ is on sys.path)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

#: Monte Carlo tests accept a mean within this many standard errors.
Z_TOL = 4.0

#: A tiny FDLF fit (simple_local at L = 12, width 8, cheap evaluation at L = 12 and 16); append the
#: config's own options (``--trainer.max_steps``, sections) after it.
TINY_FIT = ["--model.width", "8", "--model.warmup_steps", "1",
            "--data.train_size", "12", "--data.eval_sizes", "[12, 16]", "--data.batch_size", "4",
            "--data.val_batches", "1", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", "cpu", "--evaluation.n_samples", "2", "--evaluation.response_samples", "1",
            "--evaluation.n_probes", "1", "--evaluation.far", "[5, 6]", "--evaluation.progress", "false"]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_mc(values, target, *, max_se, name):
    """mean of per-sample ``values`` (n,) equals ``target`` within Z_TOL SE, and SE <= max_se."""
    mean, se = float(values.mean()), float(values.std() / math.sqrt(values.numel()))
    assert se <= max_se, f"{name}: SE {se:.3g} too large for a meaningful test (max {max_se})"
    assert abs(mean - target) <= Z_TOL * se, f"{name}: {mean:.4f} ± {se:.4f}, expected {target}"


def _leet(run_dir: Path, *options: str) -> str:
    """``wandb leet inspect <options>`` (wandb's own reader) of the one offline run under ``run_dir/wandb``."""
    (offline,) = (Path(run_dir) / "wandb").glob("offline-run-*")
    wandb_cli = Path(sys.executable).with_name("wandb")
    return subprocess.run([str(wandb_cli), "leet", "inspect", *options, str(offline)],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def wandb_summary(run_dir: Path) -> dict:
    """The offline W&B run of ``run_dir`` (``--summary --json``: summary metrics, config, state)."""
    return json.loads(_leet(run_dir, "--summary", "--json"))


def wandb_run_record(run_dir: Path) -> dict:
    """The run record of the offline W&B run of ``run_dir`` (group, display name, job type, ...)."""
    out = _leet(run_dir, "--json")
    return next(json.loads(line)["run"] for line in out.splitlines() if '"type":"run"' in line)
