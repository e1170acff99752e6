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


def fake_run(tmp_path, teacher="simple_local", name="run", **model):
    """A run directory with config.yaml and checkpoints/last.ckpt of an untrained small student (blocks 1, width 8
    unless ``model`` says otherwise) of an FDLF ``teacher`` at train_size 24."""
    import yaml

    from sizetransfer.module import ScoreModule

    torch.manual_seed(0)
    module = ScoreModule(**{"blocks": 1, "width": 8, **model})
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = {"model": {"blocks": 1, "width": 8},
           "data": {"class_path": "sizetransfer.data.FDLFDataModule",
                    "init_args": {"teacher": teacher, "train_size": 24, "eval_sizes": [24, 32]}},
           "evaluation": {"sigma_eval": 0.05, "near": [1, 2], "far": [5, 8], "n_samples": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0,
            "noise_seed": 0, "pytorch-lightning_version": "2.6.0"}
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run
