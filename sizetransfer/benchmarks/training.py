"""Training throughput: ``ScoreModule`` under Lightning against a hand-written torch loop, and the
DataModules' sample rate against what training consumes (``python -m sizetransfer.bench training``).

Both loops train the same student (width 64, B ∈ {1, 2}) on the same in-memory batches (batch 16,
L = 32, FDLF simple_local) with the same step: σ/ε from a per-step seeded generator, DSM loss,
Adam, cosine LambdaLR, EMA update. Lightning runs without logger, checkpointing, validation or
progress bar. The two are timed in alternation (``rounds`` times) and steps/s is 1 / the median step
period (start of a batch to the start of the next), so that load from other processes hits both
alike and its spikes drop out. Overhead = plain steps/s / Lightning steps/s − 1 (target ≤ 10%);
data margin = DataModule samples/s / (16 × Lightning steps/s) (target ≥ 2). On CPU a third table
times the default student's forward + backward against its first SiteNorm (``torch.var_mean``), and a
fourth the B = 1 students eager float32 against bf16 autocast (``trainer.precision: bf16-mixed``) and
``torch.compile`` (``model.compile``).
"""
from __future__ import annotations

import copy
import time

import numpy as np

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from sizetransfer.benchmarks.data import data_throughput
from sizetransfer.data import FDLFDataModule, IsingDataModule
from sizetransfer.seeding import batch_seed
from sizetransfer.diffusion import dsm_loss
from sizetransfer.module import ScoreModule, warmup_cosine

BATCH, L, WIDTH = 16, 32, 64


class _StepTimer(pl.Callback):
    """Period of each training step: the time between the starts of consecutive batches."""

    def __init__(self):
        self.stamps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


def lightning_step_times(module: ScoreModule, loader: DataLoader, steps: int, warmup: int, device: str) -> list[float]:
    """Seconds per step of ``steps`` Lightning training steps after ``warmup`` untimed ones."""
    timer = _StepTimer()
    trainer = pl.Trainer(max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accelerator=device, devices=1, callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    return list(np.diff(timer.stamps[warmup:]))


def plain_step_times(module: ScoreModule, loader: DataLoader, steps: int, warmup: int, device: str) -> list[float]:
    """The same training step written as a plain torch loop (no Lightning); seconds per step."""
    module.to(device)
    student, ema, noise = module.student, module.ema, module.noise
    optimizer = torch.optim.Adam(student.parameters(), lr=module.hparams.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(0, warmup + steps))
    generator = torch.Generator(device=device)
    student.train()
    batches = iter(loader)
    stamps = []
    for step in range(warmup + steps):
        stamps.append(time.perf_counter())
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        generator.manual_seed(batch_seed(0, 0, step))
        loss, _, _ = dsm_loss(student, batch["x0"], noise, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update_parameters(student)
    if device == "cuda":
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    return list(np.diff(stamps[warmup:]))


def training_table(device: str = "cpu", steps: int = 60, warmup: int = 10, rounds: int = 3) -> list[dict]:
    """Print and return steps/s of the plain loop and of Lightning for B = 1, 2."""
    make_batch = FDLFDataModule("simple_local", train_size=L, batch_size=BATCH).make_batch(L, BATCH)
    cycle = [make_batch(seed) for seed in range(8)]
    loader = DataLoader(cycle * ((warmup + steps) // len(cycle) + 2), batch_size=None)
    print(f"training steps/s on {device}, batch {BATCH}, L = {L}, width {WIDTH}, torch threads "
          f"{torch.get_num_threads()} (median step time over {rounds} alternating rounds of {steps} steps)")
    print(f"{'B':>2} {'plain loop':>11} {'Lightning':>10} {'overhead':>9} {'ms/step':>8} {'samples/s':>10}")
    rows = []
    for blocks in (1, 2):
        base = ScoreModule(blocks=blocks, width=WIDTH, sigma_min=0.01, sigma_max=1.0)
        plain, light = [], []
        for _ in range(rounds):
            plain += plain_step_times(copy.deepcopy(base), loader, steps, warmup, device)
            light += lightning_step_times(copy.deepcopy(base), loader, steps, warmup, device)
        p, q = 1 / float(np.median(plain)), 1 / float(np.median(light))
        rows.append({"blocks": blocks, "plain": p, "lightning": q, "overhead": p / q - 1})
        print(f"{blocks:>2} {p:>11.2f} {q:>10.2f} {p / q - 1:>8.1%} {1e3 / q:>8.1f} {BATCH * q:>10.0f}", flush=True)
    return rows


def data_table(consumption: float, n_batches: int = 20, workers: tuple[int, ...] = (0, 1)) -> None:
    """Print the DataModules' samples/s (batch 16, L = 32) against ``consumption`` samples/s."""
    print(f"\ndata samples/s against training consumption ({consumption:.0f} samples/s), batch {BATCH}, L = {L}")
    print(f"{'stream':<26} {'workers':>7} {'samples/s':>10} {'x consumption':>14}")
    streams = [("fdlf simple_local", lambda w: FDLFDataModule("simple_local", train_size=L, batch_size=BATCH,
                                                              num_workers=w)),
               ("fdlf complex_long", lambda w: FDLFDataModule("complex_long", train_size=L, batch_size=BATCH,
                                                              num_workers=w)),
               ("ising 0.95 beta_c wolff", lambda w: IsingDataModule(beta_over_beta_c=0.95, L=L, batch_size=BATCH,
                                                                     num_workers=w))]
    for name, make in streams:
        for w in workers:
            rate = data_throughput(make(w), n_batches=n_batches)
            print(f"{name:<26} {w:>7} {rate:>10.0f} {rate / consumption:>13.1f}x", flush=True)


def _var_mean_site_norm(h: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The first SiteNorm: ``torch.var_mean`` over the channel axis (the same formula, the baseline)."""
    var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
    return (h - mean) * torch.rsqrt(var + eps)


def _forward_backward_ms(fn, x: torch.Tensor, repeats: int) -> float:
    for _ in range(2):
        fn(x).square().mean().backward()
    start = time.process_time()
    for _ in range(repeats):
        fn(x).square().mean().backward()
    return (time.process_time() - start) / repeats * 1e3


class _VarMeanSiteNorm(torch.nn.Module):
    """The baseline site norm (torch.var_mean), a drop-in for ``SiteNorm`` in a copy of a student."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _var_mean_site_norm(z, self.eps)


def _with_var_mean_site_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose every ``SiteNorm`` is the var_mean baseline (same weights)."""
    from sizetransfer.models import SiteNorm

    copy_ = copy.deepcopy(model)
    for parent in copy_.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, SiteNorm):
                setattr(parent, name, _VarMeanSiteNorm(child.eps))
    return copy_


def student_table(repeats: int = 20) -> list[dict]:
    """Print CPU ms of forward + backward: ``SiteNorm`` against the var_mean baseline on (32, 64, 24, 24)
    (the recipe's antithetic batch at L = 24), and the default student (B = 1, width 64, emb 128) with
    each norm. CPU time of this process, so load from other processes counts less than in wall time."""
    from sizetransfer.models import LocalScoreCNN, SiteNorm

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(32, WIDTH, 24, 24, generator=gen, requires_grad=True)
    x, sigma = torch.randn(32, 1, 24, 24, generator=gen), torch.rand(32, generator=gen) + 0.01
    model = LocalScoreCNN(blocks=1, width=WIDTH, emb_width=128)
    rows = [{"what": "site norm", "baseline": _forward_backward_ms(_var_mean_site_norm, h, repeats),
             "now": _forward_backward_ms(SiteNorm(), h, repeats)}]
    now = _forward_backward_ms(lambda z: model(z, sigma), x, repeats)
    baseline_model = _with_var_mean_site_norms(model)
    baseline = _forward_backward_ms(lambda z: baseline_model(z, sigma), x, repeats)
    rows.append({"what": "student step B=1", "baseline": baseline, "now": now})
    print(f"\nstudent forward + backward, CPU ms, batch 32, L = 24, width {WIDTH}, torch threads "
          f"{torch.get_num_threads()} (baseline: SiteNorm by torch.var_mean)")
    print(f"{'':<18} {'var_mean':>9} {'now':>8} {'speed-up':>9}")
    for r in rows:
        print(f"{r['what']:<18} {r['baseline']:>9.1f} {r['now']:>8.1f} {r['baseline'] / r['now']:>8.2f}x", flush=True)
    return rows


def compile_table(repeats: int = 40) -> list[dict]:
    """Print CPU ms of one training step's forward + backward (batch 32 = 16 antithetic pairs, L = 24) of the
    B = 1 students: eager float32 (the baseline) against bf16 autocast (``trainer.precision: bf16-mixed``),
    ``torch.compile`` (``model.compile``) and both, after two untimed steps (the compile itself is not timed
    here; cold, it costs ~40 CPU-s per autocast state, README "Training recipe"). bf16 is fast only on CPUs
    with native bf16 instructions (AVX-512 BF16, AMX); the table says what it is on this one."""
    from sizetransfer.models import LocalScoreCNN

    gen = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(32, 1, 24, 24, generator=gen), torch.rand(32, generator=gen) + 0.01
    print(f"\nstudent forward + backward, CPU ms, batch 32, L = 24, B = 1, torch threads {torch.get_num_threads()} "
          f"(baseline: eager fp32; after compile warm-up; speed-ups against the baseline)")
    print(f"{'student':<24} {'eager':>8} {'bf16':>8} {'compiled':>9} {'comp.+bf16':>11} {'x bf16':>7} {'x comp.':>9} "
          f"{'x both':>11}")
    rows = []
    for name, kw in (("width 64", dict(width=64)), ("width 32, mlp_ratio 2", dict(width=32, mlp_ratio=2))):
        model = LocalScoreCNN(blocks=1, emb_width=128, **kw)
        compiled = torch.compile(model)
        row = {"what": name}
        for key, net, bf16 in (("eager", model, False), ("bf16", model, True), ("compiled", compiled, False),
                               ("compiled_bf16", compiled, True)):
            def step(z, net=net, bf16=bf16):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return net(z, sigma)
            row[key] = _forward_backward_ms(step, x, repeats)
        rows.append(row)
        e = row["eager"]
        print(f"{name:<24} {e:>8.1f} {row['bf16']:>8.1f} {row['compiled']:>9.1f} {row['compiled_bf16']:>11.1f} "
              f"{e / row['bf16']:>6.2f}x {e / row['compiled']:>8.2f}x {e / row['compiled_bf16']:>10.2f}x", flush=True)
    return rows


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Print both tables; returns the training rows. ``device``: "cpu" (the judged default) or "cuda".
    The consumption the data must keep up with is that of the fastest training row (B = 1)."""
    rows = training_table(device, *((10, 3, 1) if quick else (60, 10, 5)))
    data_table(BATCH * max(r["lightning"] for r in rows), *((5, (0,)) if quick else (20, (0, 1))))
    if device == "cpu":
        student_table(3 if quick else 20)
        if not quick:  # a cold compile is ~40 CPU-s per student; the compiled path is tested in tests/test_module.py
            compile_table()
    return rows
