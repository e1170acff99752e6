"""Helpers shared by the tests (imported as ``from helpers import ...``; tests/ is on sys.path)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

#: Monte Carlo tests accept a mean within this many standard errors.
Z_TOL = 4.0

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


def randomise_zero_init(model, seed: int = 7):
    """Give the parameters a default student starts at zero (its output conv, its identity FiLMs)
    random values, so every path through the network is live (returns the model)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model
