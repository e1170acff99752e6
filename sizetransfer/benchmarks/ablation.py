"""Training-recipe ablation (docs/training.md): ``python -m sizetransfer.benchmarks.ablation``.

Each configuration trains a student on an exact teacher with the project's own pieces
(:class:`~sizetransfer.models.LocalScoreCNN`, :class:`~sizetransfer.diffusion.VENoise`,
:func:`~sizetransfer.diffusion.dsm_loss` / :func:`~sizetransfer.diffusion.exact_score_loss`, Adam with
:func:`~sizetransfer.module.warmup_cosine`, the EMA of :func:`~sizetransfer.module.ema_multi_avg_fn`)
in a plain torch loop — the step of ``ScoreModule`` without Lightning — on one thread, and reports the
clean-score relative RMSE (Eq. 16) of the EMA student on 32 fixed teacher samples at σ = 0.05 and
0.01, with the CPU seconds of training (``compile``: the step through ``torch.compile``, its cold compile
counted, in this process with a fresh inductor cache; ``precision: "bf16-mixed"``: the loss under bf16 autocast,
as Lightning's ``trainer.precision: bf16-mixed`` runs it). Results are appended to a JSON-lines file, so a stopped
ablation restarts where it stopped; the table (mean ± s.e.m. over seeds) is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

#: The first recipe (issue 11's student and loop): no norm, one FiLM per block, log-uniform σ.
FIRST_RECIPE = dict(teacher="simple_local", train_size=24, eval_size=24, batch_size=16, steps=1500, blocks=1,
                    radius=None, width=64, emb_width=None, film="block", norm="none", mlp_ratio=0, mlp_depth=1,
                    stem_radius=1, lr=1e-3, warmup_steps=50, ema_decay=0.998, sigma_min=0.01, sigma_max=1.0,
                    sigma_distribution="log_uniform", sigma_center=None, sigma_log_std=1.0, antithetic=False, objective="dsm",
                    sigma_stratified=False, noise_draws=1, lambda_power=2.0, adam_beta2=0.999, compile=False,
                    precision="32")

#: The prototype student of the students issue: site norm, FiLM before every conv, zero-init output.
STUDENT = dict(film="conv", norm="site")

#: The default recipe's options over FIRST_RECIPE (docs/training.md).
RECIPE = {**STUDENT, "emb_width": 128, "lr": 3e-3, "antithetic": True}

#: The best B = 1 line within 15 CPU-minutes (fifth round): width 32, a per-site MLP, λ(σ) = σ.
FAST_LINE = {**RECIPE, "width": 32, "mlp_ratio": 2, "lambda_power": 1.0}

#: Seventh and eighth rounds: the fast line in bf16 autocast, compiled, over the 15 CPU-minute budget (15000 steps).
FAST_LINE_LONG = {**FAST_LINE, "precision": "bf16-mixed", "compile": True, "steps": 15000}

#: Sixth round: levers screened on FAST_LINE at 1500 steps (name suffix -> overrides).
FAST_LINE_LEVERS = {
    "": {},
    " + σ_max 0.5": {"sigma_max": 0.5},
    " + σ_max 0.25": {"sigma_max": 0.25},
    " + σ_min 0.005": {"sigma_min": 0.005},
    " + lr 6e-3": {"lr": 6e-3},
    " + Adam β2 0.99": {"adam_beta2": 0.99},
    " + λ(σ) = σ^0.5": {"lambda_power": 0.5},
    " + 200 warm-up steps": {"warmup_steps": 200},
}

#: Named configurations: overrides of FIRST_RECIPE, each lever alone (on top of the student) and combined.
CONFIGS = {
    "first recipe": {},
    "student: site norm, FiLM before every conv, zero-init output": STUDENT,
    "student + 128-wide noise embedding": {**STUDENT, "emb_width": 128},
    "student + log-normal σ (centre 0.05, log-std 1)": {**STUDENT, "sigma_distribution": "log_normal",
                                                         "sigma_center": 0.05},
    "student + lr 3e-3": {**STUDENT, "lr": 3e-3},
    "student + batch 32 (2x data and compute)": {**STUDENT, "batch_size": 32},
    "student + antithetic ε/−ε pairs (2x compute)": {**STUDENT, "antithetic": True},
    "student + 4500 steps (3x compute)": {**STUDENT, "steps": 4500},
    "recipe: student + emb 128 + lr 3e-3 + antithetic, 1500 steps": RECIPE,
    "recipe, 3000 steps (the shipped budget)": {**RECIPE, "steps": 3000},
    "recipe + lr 6e-3, 1500 steps": {**RECIPE, "lr": 6e-3},
    "recipe + lr 1e-2, 1500 steps": {**RECIPE, "lr": 1e-2},
    "recipe + per-site MLP (mlp_ratio 2), 1500 steps": {**RECIPE, "mlp_ratio": 2},
    "recipe + width 32, 1500 steps": {**RECIPE, "width": 32},
    "recipe + mlp_ratio 4, 1500 steps": {**RECIPE, "mlp_ratio": 4},
    "recipe + depth at radius 4 (B = 3, radius 4: 1x1 convs after the 4th), 1500 steps": {**RECIPE, "blocks": 3,
                                                                                        "radius": 4},
    "recipe + two per-site MLPs (mlp_ratio 1, mlp_depth 2), 1500 steps": {**RECIPE, "mlp_ratio": 1, "mlp_depth": 2},
    "recipe + 5x5 stem and 1x1 output conv (stem_radius 2, radius 4), 1500 steps": {**RECIPE, "stem_radius": 2,
                                                                                   "radius": 4},
    "recipe + 5x5 stem, 1x1 output conv + mlp_ratio 2, 1500 steps": {**RECIPE, "stem_radius": 2, "radius": 4,
                                                                     "mlp_ratio": 2},
    "recipe + width 32, 4500 steps": {**RECIPE, "width": 32, "steps": 4500},
    "recipe + width 32 + mlp_ratio 2, 4500 steps": {**RECIPE, "width": 32, "mlp_ratio": 2, "steps": 4500},
    "recipe, batch 8, 3000 steps (same samples, 2x the updates)": {**RECIPE, "batch_size": 8, "steps": 3000},
    "recipe, batch 4, 6000 steps (same samples, 4x the updates)": {**RECIPE, "batch_size": 4, "steps": 6000},
    "recipe + stratified σ (one level per stratum of the batch), 1500 steps": {**RECIPE, "sigma_stratified": True},
    "recipe, train L = 12, batch 64 (same sites, 4x the σ draws), 1500 steps": {**RECIPE, "train_size": 12,
                                                                              "batch_size": 64},
    "recipe + width 32 + mlp_ratio 2, 9000 steps (the 15 CPU-minute budget)": {**RECIPE, "width": 32, "mlp_ratio": 2,
                                                                             "steps": 9000},
    "recipe, batch 8 x 2 noise draws per sample (same compute, half the samples), 1500 steps": {
        **RECIPE, "batch_size": 8, "noise_draws": 2},
    "recipe, batch 16 x 2 noise draws per sample (2x compute), 1500 steps": {**RECIPE, "noise_draws": 2},
    "recipe + λ(σ) = σ (low σ weighed up), 1500 steps": {**RECIPE, "lambda_power": 1.0},
    "recipe + λ(σ) = σ³ (low σ weighed down), 1500 steps": {**RECIPE, "lambda_power": 3.0},
    "recipe + λ(σ) = 1 (the plain score target), 1500 steps": {**RECIPE, "lambda_power": 0.0},
    "recipe + λ(σ) = σ^0.5, 1500 steps": {**RECIPE, "lambda_power": 0.5},
    "recipe + λ(σ) = σ, 3000 steps (the shipped budget)": {**RECIPE, "lambda_power": 1.0, "steps": 3000},
    "recipe + width 32 + mlp_ratio 2 + λ(σ) = σ, 9000 steps (the 15 CPU-minute budget)": {
        **RECIPE, "width": 32, "mlp_ratio": 2, "steps": 9000, "lambda_power": 1.0},
    **{f"fast line (width 32 + mlp_ratio 2 + λ(σ) = σ){name}, 1500 steps": {**FAST_LINE, **extra}
       for name, extra in FAST_LINE_LEVERS.items()},
    "fast line + lr 6e-3, compiled (torch.compile), 11000 steps (the 15 CPU-minute budget)": {
        **FAST_LINE, "lr": 6e-3, "compile": True, "steps": 11000},
    "fast line, compiled (torch.compile), 11000 steps (the 15 CPU-minute budget)": {
        **FAST_LINE, "compile": True, "steps": 11000},
    "fast line + bf16-mixed, 1500 steps": {**FAST_LINE, "precision": "bf16-mixed"},
    "recipe + bf16-mixed (width 64), 1500 steps": {**RECIPE, "precision": "bf16-mixed"},
    "fast line + bf16-mixed, compiled, 15000 steps, EMA 0.9995": {**FAST_LINE_LONG, "ema_decay": 0.9995},
    "fast line + bf16-mixed, compiled, 15000 steps (the 15 CPU-minute budget)": FAST_LINE_LONG,
    "fast line + bf16-mixed, compiled, batch 8, 28000 steps (the 15 CPU-minute budget)": {
        **FAST_LINE_LONG, "steps": 28000, "batch_size": 8},
    "fast line + bf16-mixed, compiled, lr 2e-3, 15000 steps (the 15 CPU-minute budget)": {**FAST_LINE_LONG, "lr": 2e-3},
    "fast line + bf16-mixed, compiled, lr 4e-3, 15000 steps (the 15 CPU-minute budget)": {**FAST_LINE_LONG, "lr": 4e-3},
    "oracle (exact-score regression), student": {**STUDENT, "objective": "exact_score"},
    "oracle, student, 4500 steps": {**STUDENT, "objective": "exact_score", "steps": 4500},
}


def build_student(options: dict):
    """The configuration's student (FIRST_RECIPE updated by ``options``), a ``LocalScoreCNN``."""
    from sizetransfer.models import LocalScoreCNN

    o = {**FIRST_RECIPE, **options}
    return LocalScoreCNN(blocks=o["blocks"], width=o["width"], radius=o["radius"], film=o["film"], norm=o["norm"],
                         emb_width=o["emb_width"], mlp_ratio=o["mlp_ratio"], mlp_depth=o["mlp_depth"],
                         stem_radius=o["stem_radius"])


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the C++ compiler that torch.compile runs;
    its kernels are compiled in this process, ``compile_threads = 1``, not in a pool that outlives the run)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def train_and_score(options: dict, seed: int) -> dict:
    """Train one configuration (FIRST_RECIPE updated by ``options``) with ``seed``; returns its row."""
    from torch.optim.swa_utils import AveragedModel

    from sizetransfer.diffusion import VENoise, dsm_loss, exact_score_loss
    from sizetransfer.module import ema_multi_avg_fn, warmup_cosine
    from sizetransfer.teachers import make_teacher

    o = {**FIRST_RECIPE, **options}
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    teacher = make_teacher(o["teacher"], seed=0)
    model = build_student(options)
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(o["ema_decay"], True), use_buffers=True)
    noise = VENoise(o["sigma_min"], o["sigma_max"], o["sigma_distribution"], o["sigma_center"], o["sigma_log_std"],
                    stratified=o["sigma_stratified"])
    opt = torch.optim.Adam(model.parameters(), lr=o["lr"], betas=(0.9, o["adam_beta2"]))
    if o["compile"]:  # a cold compile, counted: a fresh inductor cache, compiled in this process
        import torch._inductor.config as inductor

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ablation-inductor-")
        inductor.compile_threads = 1
    forward = torch.compile(model) if o["compile"] else model
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o["warmup_steps"], o["steps"]))
    # "bf16-mixed": Lightning's CPU mixed precision, torch.autocast(bfloat16) around the loss; weights, Adam and EMA fp32
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=o["precision"] == "bf16-mixed")
    noise_gen, data_gen = torch.Generator().manual_seed(1000 + seed), torch.Generator().manual_seed(2000 + seed)
    start = _cpu_seconds()
    for _ in range(o["steps"]):
        x0 = teacher.sample(o["batch_size"], o["train_size"], generator=data_gen)
        with autocast:
            if o["objective"] == "exact_score":
                loss, _, _ = exact_score_loss(forward, x0.float(), teacher.score(x0).float(), noise,
                                              generator=noise_gen)
            else:
                loss, _, _ = dsm_loss(forward, x0.float(), noise, generator=noise_gen, antithetic=o["antithetic"],
                                      noise_draws=o["noise_draws"], lambda_power=o["lambda_power"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)
    cpu_s = _cpu_seconds() - start
    if o["compile"]:
        shutil.rmtree(os.environ.pop("TORCHINDUCTOR_CACHE_DIR"), ignore_errors=True)
    x = teacher.sample(32, o["eval_size"], generator=torch.Generator().manual_seed(12345))
    ref = teacher.score(x)
    row = {"options": options, "seed": seed, "cpu_s": round(cpu_s, 1)}
    with torch.no_grad():
        for sigma in (0.05, 0.01):
            s = torch.cat([ema.module(x[i:i + 8].float(), torch.tensor(sigma)).double() for i in range(0, 32, 8)])
            row[f"rmse_{sigma}"] = float(((s - ref).square().sum() / ref.square().sum()).sqrt())
    return row


def _key(options: dict, seed: int) -> str:
    return json.dumps({"options": options, "seed": seed}, sort_keys=True)


def table(rows: list[dict], configs: dict) -> str:
    """Markdown table: one line per configuration, mean ± s.e.m. over its seeds."""
    lines = ["| configuration | RMSE σ = 0.05 | RMSE σ = 0.01 | seeds | CPU-s per run |", "|---|---|---|---|---|"]
    for name, options in configs.items():
        mine = [r for r in rows if r["options"] == options]
        if not mine:
            continue
        cells = []
        for key in ("rmse_0.05", "rmse_0.01"):
            v = torch.tensor([r[key] for r in mine], dtype=torch.float64)
            sem = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
            cells.append(f"{float(v.mean()):.3f} ± {sem:.3f}" if len(v) > 1 else f"{float(v.mean()):.3f}")
        cpu = sum(r["cpu_s"] for r in mine) / len(mine)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {len(mine)} | {cpu:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.benchmarks.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), help="names of CONFIGS to run (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=1, help="configurations trained in parallel (one thread each)")
    p.add_argument("--out", type=Path, default=Path("runs/ablation.jsonl"), help="JSON-lines results (appended)")
    args = p.parse_args(argv)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {list(CONFIGS)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    have = {_key(r["options"], r["seed"]) for r in done}
    todo = [(CONFIGS[c], s) for c in args.configs for s in args.seeds if _key(CONFIGS[c], s) not in have]
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(train_and_score, *zip(*todo)) if todo else ():
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
            print(json.dumps(row), flush=True)
    print(table(done, {c: CONFIGS[c] for c in args.configs}))


if __name__ == "__main__":
    main()
