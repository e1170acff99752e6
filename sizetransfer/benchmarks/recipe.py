"""The shipped training recipe against a closed form (``python -m sizetransfer.bench recipe``).

Trains ``ScoreModule`` with the ``model:``, ``trainer.max_steps`` and ``trainer.precision`` of ``configs/fdlf_size_sweep.yaml``
(the default recipe) on the Gaussian teacher at L = 24 through Lightning, then compares the EMA
student with the teacher's exact smoothed score −(C + σ² I)⁻¹ x on x ~ p_σ (x = x0 + σ ε) at several σ:
relative error sqrt(Σ‖s_θ − s_σ‖² / Σ‖s_σ‖²). Goal at σ = 0.05: ≤ 0.05 (docs/training.md).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from sizetransfer.data import FDLFDataModule
from sizetransfer.module import ScoreModule

RECIPE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fdlf_size_sweep.yaml"
SIGMAS = (0.5, 0.2, 0.05, 0.01)
GOAL_SIGMA, GOAL = 0.05, 0.05


def gaussian_check(max_steps: int | None = None, L: int = 24, seed: int = 0) -> list[dict]:
    """Train the recipe on the Gaussian teacher; rows ``{"sigma", "relative_error"}``, printed as a table."""
    config = yaml.safe_load(RECIPE_CONFIG.read_text())
    steps = int(max_steps or config["trainer"]["max_steps"])
    model_options = dict(config["model"])
    model_options["warmup_steps"] = min(int(model_options.get("warmup_steps", 0)), steps // 10)
    batch = int(config["data"]["init_args"]["batch_size"])
    precision = config["trainer"].get("precision", "32-true")
    pl.seed_everything(seed, verbose=False)
    module = ScoreModule(**model_options)
    dm = FDLFDataModule("gaussian", train_size=L, batch_size=batch, seed=seed, val_batches=1)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1, precision=precision)
    start = time.process_time()
    trainer.fit(module, dm)
    cpu = time.process_time() - start
    gen = torch.Generator().manual_seed(10_000 + seed)
    x0 = dm.teacher.sample(32, L, generator=gen)
    print(f"\nrecipe of {RECIPE_CONFIG.name} on the Gaussian teacher, L = {L}, {steps} steps, batch {batch}, "
          f"{precision} precision, {cpu:.0f} CPU-s of training; error against the exact smoothed score on x ~ p_σ")
    print(f"{'sigma':>6} {'rel. error':>11} {'goal':>6}")
    rows = []
    for sigma in SIGMAS:
        x = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        ref = dm.teacher.smoothed_score(x, sigma)
        with torch.no_grad():
            s = module.score(x.float(), sigma).double()
        err = float(((s - ref).square().sum() / ref.square().sum()).sqrt())
        rows.append({"sigma": sigma, "relative_error": err})
        goal = f"<= {GOAL}" if sigma == GOAL_SIGMA else ""
        print(f"{sigma:>6g} {err:>11.4f} {goal:>6}", flush=True)
    return rows


def run(quick: bool = False) -> list[dict]:
    return gaussian_check(max_steps=30 if quick else None)
