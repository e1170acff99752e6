"""The training recipe's pieces are wired: the oracle control (``model.objective: exact_score``)
reaches the exact score of a Gaussian teacher in a few hundred steps; the σ distribution and the
student options reach the student; bad options are named. (Full recipe runs are benchmarks:
``python -m sizetransfer.bench recipe``; docs/training.md.)"""
import math

import pytest
import pytorch_lightning as pl
import torch

from sizetransfer.data import FDLFDataModule, IsingDataModule
from sizetransfer.diffusion import VENoise, exact_score_loss
from sizetransfer.module import ScoreModule


def _fit(module, dm, steps):
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, dm)
    return module


def _relative_error(module, teacher, sigma):
    x = teacher.sample(16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s = module.score(x.float(), sigma).double()
    ref = teacher.score(x)
    return float(((s - ref).square().sum() / ref.square().sum()).sqrt())


@pytest.mark.slow
def test_oracle_objective_reaches_the_exact_gaussian_score():
    """300 steps of exact-score regression bring a radius-4 student within 12% of the Gaussian teacher's
    exact score −C⁻¹x at σ = 0.05 (measured 0.066; 300 DSM steps reach 0.19, the untrained student ≥ 0.3)."""
    pl.seed_everything(0, verbose=False)
    module = ScoreModule(blocks=1, width=16, objective="exact_score", warmup_steps=10, lr=3e-3)
    dm = FDLFDataModule("gaussian", train_size=16, batch_size=8, val_batches=1)
    untrained = _relative_error(module, dm.teacher, 0.05)
    assert untrained > 0.3
    _fit(module, dm, 300)
    assert _relative_error(module, dm.teacher, 0.05) < 0.12


def test_exact_score_loss_is_zero_at_the_exact_score():
    noise = VENoise(0.01, 1.0)
    x0 = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    score = -2.0 * x0
    loss, per_sample, sigma = exact_score_loss(lambda x, s, c: -2.0 * x, x0, score, noise,
                                               generator=torch.Generator().manual_seed(0))
    assert loss == 0 and per_sample.shape == (3,) and sigma.shape == (3,)
    loss, _, _ = exact_score_loss(lambda x, s, c: -x, x0, score, noise, sigma=0.5)
    torch.testing.assert_close(loss, x0.square().mean())


def test_oracle_needs_a_target_with_an_exact_score():
    module = ScoreModule(blocks=1, width=8, objective="exact_score")
    dm = IsingDataModule(beta_over_beta_c=0.9, L=16, batch_size=2)
    with pytest.raises(ValueError, match="objective='exact_score'.*IsingDataModule"):
        module.check_fit(dm, max_steps=10)


def test_log_normal_sigma_distribution():
    """Truncated log-normal: inside [σ_min, σ_max], median near sigma_center, log-std below the untruncated one."""
    noise = VENoise(0.01, 1.0, "log_normal", sigma_center=0.05, log_std=0.8)
    s = noise.sample_sigma(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert s.min() >= 0.01 and s.max() <= 1.0
    # exact median of the truncated normal in log σ, from its CDF
    a, b = ((math.log(v) - math.log(0.05)) / 0.8 for v in (0.01, 1.0))
    phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    p_mid = 0.5 * (phi(a) + phi(b))
    median = math.exp(math.log(0.05) + 0.8 * float(torch.special.ndtri(torch.tensor(p_mid, dtype=torch.float64))))
    # the sample median's SE is ~ 1.25 σ_log / √n in log σ ≈ 0.0022 here
    assert abs(math.log(float(s.median())) - math.log(median)) < 0.01
    assert float(s.log().std()) < 0.8


def test_module_passes_sigma_stratified_to_its_noise():
    from sizetransfer.module import ScoreModule

    assert ScoreModule(width=8, sigma_stratified=True).noise.stratified
    assert not ScoreModule(width=8).noise.stratified


@pytest.mark.parametrize("kwargs,name", [({"objective": "score"}, "model.objective"),
                                         ({"sigma_distribution": "uniform"}, "model.sigma_distribution"),
                                         ({"sigma_center": 5.0}, "model.sigma_center"),
                                         ({"sigma_log_std": 0.0}, "model.sigma_log_std"),
                                         ({"radius": 9}, "model.radius"), ({"film": "x"}, "model.film"),
                                         ({"lambda_power": float("inf")}, "model.lambda_power")])
def test_bad_recipe_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ScoreModule(**kwargs)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_lambda_power_reaches_the_training_loss():
    """model.lambda_power = p: the training step's loss is dsm_loss(..., lambda_power=p) of the same draws."""
    from sizetransfer.diffusion import dsm_loss
    from sizetransfer.seeding import batch_seed

    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for p in (1.0, 2.0):
        torch.manual_seed(0)
        module = ScoreModule(width=8, antithetic=True, lambda_power=p, noise_seed=5)
        module.on_fit_start()
        loss = module.training_step({"x0": x0}, 0)
        gen = torch.Generator().manual_seed(batch_seed(5, 0, 0))
        ref, _, _ = dsm_loss(module.student, x0, module.noise, generator=gen, antithetic=True, lambda_power=p)
        assert torch.equal(loss, ref)


def test_student_options_reach_the_student():
    module = ScoreModule(blocks=3, radius=4, width=8, emb_width=16)
    assert module.receptive_radius == 4 and module.student.net.noise_embed[0].out_features == 16


@pytest.mark.slow
def test_recipe_bench_quick(capsys):
    """``python -m sizetransfer.bench recipe --quick`` trains the shipped recipe briefly and prints the
    closed-form comparison (the full run is the benchmark, not a test)."""
    from sizetransfer.bench import main

    main(["recipe", "--quick"])
    out = capsys.readouterr().out
    assert "Gaussian teacher" in out and "<= 0.05" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [float(r[0]) for r in rows] == [0.5, 0.2, 0.05, 0.01]
    assert all(0 < float(r[1]) < 10 for r in rows)


def test_student_bench_table(capsys):
    """``python -m sizetransfer.bench training`` prints the student's CPU step against the var_mean
    SiteNorm baseline, and that baseline is the same function as SiteNorm."""
    from sizetransfer.benchmarks.training import _var_mean_site_norm, student_table
    from sizetransfer.models import SiteNorm

    h = torch.randn(3, 16, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(SiteNorm()(h), _var_mean_site_norm(h), rtol=1e-12, atol=1e-12)
    # the baseline student is a copy with every SiteNorm swapped; the student itself is untouched
    from sizetransfer.benchmarks.training import _with_var_mean_site_norms
    from sizetransfer.models import LocalScoreCNN

    model = LocalScoreCNN(blocks=1, width=8, zero_init_output=False).double()
    baseline = _with_var_mean_site_norms(model)
    assert sum(isinstance(m, SiteNorm) for m in baseline.modules()) == 0
    assert sum(isinstance(m, SiteNorm) for m in model.modules()) == 3  # two convs of the block, the head
    x, sigma = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0.1, 1.0], dtype=torch.float64)
    torch.testing.assert_close(baseline(x, sigma), model(x, sigma), rtol=1e-10, atol=1e-12)
    rows = student_table(repeats=1)
    assert [r["what"] for r in rows] == ["site norm", "student step B=1"]
    assert all(r["baseline"] > 0 and r["now"] > 0 for r in rows)
    assert "speed-up" in capsys.readouterr().out


def test_ablation_rows_train_the_named_options():
    """``python -m sizetransfer.benchmarks.ablation``: a configuration with the per-site MLP and another width
    trains and scores, its row carries both error levels, and the table reads the rows."""
    from sizetransfer.benchmarks.ablation import CONFIGS, RECIPE, build_student, table, train_and_score
    from sizetransfer.models import LocalScoreCNN

    options = {**RECIPE, "mlp_ratio": 2, "width": 8, "steps": 2, "batch_size": 2}
    # The options reach the student: its weights have the shapes of the student built with them directly.
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    direct = LocalScoreCNN(blocks=1, width=8, mlp_ratio=2, film="conv", norm="site", emb_width=128)
    assert shapes(build_student(options)) == shapes(direct)
    assert shapes(build_student({**options, "mlp_ratio": 0})) != shapes(direct)
    row = train_and_score(options, seed=0)
    assert row["options"] == options and row["seed"] == 0
    assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("rmse_0.05", "rmse_0.01"))
    assert "recipe + per-site MLP (mlp_ratio 2), 1500 steps" in CONFIGS
    # the loss weight reaches the loop: same seed and draws, another λ(σ), other weights after 2 steps
    weighted = train_and_score({**options, "lambda_power": 1.0}, seed=0)
    assert weighted["rmse_0.05"] != row["rmse_0.05"]
    # so does the precision: bf16 autocast rounds the network's arithmetic, other weights after 2 steps
    assert train_and_score({**options, "precision": "bf16-mixed"}, seed=0)["rmse_0.05"] != row["rmse_0.05"]
    assert table([row], {"tiny": options}).splitlines()[-1].startswith("| tiny | ")
