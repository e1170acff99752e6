"""VE noise, DSM loss (Eq. 3) and reverse samplers, checked against the Gaussian teacher's
closed-form smoothed score (covariance C, spectrum λ_q)."""
import math

import pytest
import torch

from sizetransfer.diffusion import (VENoise, dsm_loss, geometric_sigmas, sample_euler_maruyama,
                                    sample_predictor_corrector, sample_probability_flow)
from sizetransfer.evaluation.metrics import local_observables
from sizetransfer.models import LocalScoreCNN
from sizetransfer.teachers.gaussian import GaussianTeacher

TEACHER = GaussianTeacher(seed=0)


def exact_model(x, sigma, cond=None):
    return TEACHER.smoothed_score(x, sigma)


def test_noise_validation():
    with pytest.raises(ValueError, match="sigma_min"):
        VENoise(0.0, 1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        VENoise(2.0, 1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_sigmas(1.0, 1.0, 10)


def test_sample_sigma_is_log_uniform():
    noise = VENoise(0.01, 10.0)
    s = noise.sample_sigma(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert s.shape == (20000,) and s.min() >= 0.01 and s.max() <= 10.0
    u = (s.log() - math.log(0.01)) / math.log(1000.0)  # uniform on [0, 1]
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / 20000)
    assert abs((u < 0.25).double().mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20000)
    again = noise.sample_sigma(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(s, again)


@pytest.mark.parametrize("distribution", ["log_uniform", "log_normal"])
def test_stratified_sigma_has_one_level_per_stratum_and_the_same_law(distribution):
    """Stratified draws: level i of a batch lies in the i-th equal-probability stratum, so a batch's
    CDF values are one per [i/n, (i+1)/n); pooled over batches they are uniform like plain draws."""
    plain = VENoise(0.01, 1.0, distribution, sigma_center=0.05)
    strat = VENoise(0.01, 1.0, distribution, sigma_center=0.05, stratified=True)
    gen, n, batches = torch.Generator().manual_seed(0), 8, 2500
    s = torch.stack([strat.sample_sigma(n, generator=gen, dtype=torch.float64) for _ in range(batches)])
    # CDF of the (truncated) law at s, by the inverse of sample_sigma's map u -> σ
    if distribution == "log_uniform":
        u = (s.log() - math.log(0.01)) / math.log(100.0)
    else:
        cdf = lambda v: 0.5 * math.erfc(-(v - math.log(0.05)) / math.sqrt(2))  # noqa: E731
        lo, hi = cdf(math.log(0.01)), cdf(math.log(1.0))
        u = (torch.special.ndtr(s.log() - math.log(0.05)) - lo) / (hi - lo)
    stratum = torch.floor(u * n - 1e-9).clamp(0, n - 1)
    assert torch.equal(stratum, torch.arange(n, dtype=u.dtype).expand_as(stratum))
    m = u.numel()
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / m)
    assert abs((u < 0.3).double().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / m)
    # the batch mean of a smooth function of σ varies much less than with independent draws
    f = lambda b: b.log().mean(1)  # noqa: E731
    p = torch.stack([plain.sample_sigma(n, generator=gen, dtype=torch.float64) for _ in range(batches)])
    assert f(s).var() < 0.1 * f(p).var()
    assert "stratified=True" in repr(strat)


def test_perturb_and_schedule():
    noise = VENoise(0.05, 20.0)
    x0, eps = torch.ones(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 2.0])
    torch.testing.assert_close(noise.perturb(x0, sigma, eps), x0 + sigma.view(3, 1, 1, 1) * eps)
    sig = noise.sigmas(50, dtype=torch.float64)
    assert sig.shape == (50,) and sig[0] == 20.0 and sig[-1] == 0.05
    ratio = sig[1:] / sig[:-1]
    torch.testing.assert_close(ratio, torch.full_like(ratio, (0.05 / 20.0) ** (1 / 49)))
    sig0 = noise.sigmas(50, append_zero=True)
    assert sig0.shape == (51,) and sig0[-1] == 0 and sig0[-2] == pytest.approx(0.05)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_dsm_loss_at_exact_smoothed_score_is_the_analytic_minimum(sigma):
    """E‖σ ∇log p_σ(x_σ) + ε‖²/N = 1 − σ² tr((C + σ²)⁻¹)/N for p = N(0, C)."""
    L, n = 8, 2000
    gen = torch.Generator().manual_seed(1)
    x0 = TEACHER.sample(n, L, generator=gen)
    noise = VENoise(0.01, 10.0)
    sig = torch.full((n,), sigma, dtype=torch.float64)
    state = gen.get_state()
    loss, per_sample, used = dsm_loss(exact_model, x0, noise, generator=gen, sigma=sig)
    assert per_sample.shape == (n,) and torch.equal(used, sig)
    expected = 1 - (sigma ** 2 / TEACHER.spectrum(L, sigma)).mean().item()
    se = per_sample.std().item() / math.sqrt(n)
    assert abs(loss.item() - expected) < 4 * se, (loss.item(), expected, se)
    # the same noise draws with a wrong score (1.3 × the exact one) give a larger loss
    gen.set_state(state)
    _, worse, _ = dsm_loss(lambda x, s, c: 1.3 * exact_model(x, s), x0, noise, generator=gen, sigma=sig)
    excess = worse - per_sample
    assert excess.mean() > 4 * excess.std() / math.sqrt(n)


def test_dsm_loss_samples_sigma_and_respects_mask():
    n, L = 4, 6
    x0 = torch.randn(n, 1, L, L, dtype=torch.float64)
    mask = torch.zeros(n, 1, L, L, dtype=torch.float64)
    mask[..., :3, :] = 1
    mask[0] = 0
    seen = {}

    def model(x, sigma, cond):
        seen["x"], seen["cond"] = x, cond
        return torch.zeros_like(x)

    noise = VENoise(0.1, 1.0)
    cond = torch.ones(n, 2, L, L)
    loss, per_sample, sigma = dsm_loss(model, x0, noise, mask=mask, cond=cond,
                                       generator=torch.Generator().manual_seed(0))
    assert seen["cond"] is cond and ((sigma >= 0.1) & (sigma <= 1.0)).all()
    assert torch.equal(seen["x"][mask.expand_as(x0) == 0], x0[mask.expand_as(x0) == 0])
    eps = (seen["x"] - x0) / sigma.view(-1, 1, 1, 1)  # with s_θ = 0 the loss is ‖ε‖² on the mask
    assert per_sample[0] == 0
    torch.testing.assert_close(per_sample[1:], eps[1:].square().sum((1, 2, 3)) / (3 * L))
    torch.testing.assert_close(loss, eps.square().sum() / mask.sum())


SAMPLERS = [(sample_euler_maruyama, 0.02), (sample_predictor_corrector, 0.03), (sample_probability_flow, 0.01)]


@pytest.mark.parametrize("sampler,bias", SAMPLERS, ids=["em", "pc", "pf"])
def test_samplers_with_exact_score_reproduce_teacher_statistics(sampler, bias):
    """Started in N(0, C + σ_max²), each sampler must end in N(0, C + σ_min²): variance and
    nearest-neighbour correlation within 4 standard errors plus the sampler's known
    discretisation bias (EM/PC at 500 steps; PC also carries the Langevin bias ≈ snr²)."""
    L, n = 8, 1024
    gen = torch.Generator().manual_seed(2)
    noise = VENoise(0.05, 10.0)
    sigmas = noise.sigmas(500, dtype=torch.float64)
    x = TEACHER.sample(n, L, generator=gen) + 10.0 * torch.randn(n, 1, L, L, generator=gen, dtype=torch.float64)
    out = sampler(exact_model, x, sigmas, generator=gen)
    cov = torch.fft.ifft2(TEACHER.spectrum(L, 0.05)).real  # Cov(x_0, x_a) of N(0, C + σ_min²)
    var = cov[0, 0].item()
    obs = local_observables(out)
    per_sample_var = out.var(dim=(1, 2, 3))
    se = per_sample_var.std().item() / math.sqrt(n) / var
    assert abs(obs["variance"].item() / var - 1) < 4 * se + bias
    for axis, c in ((0, cov[1, 0]), (1, cov[0, 1])):
        nn = (out * out.roll(-1, axis + 2)).mean((1, 2, 3)) / per_sample_var
        se_nn = nn.std().item() / math.sqrt(n)
        assert abs(obs[f"nn_corr_{axis}"].item() - c.item() / var) < 4 * se_nn + bias


def test_probability_flow_matches_exact_ode_solution_at_second_order():
    """For N(0, C) the PF-ODE scales each Fourier mode by √((λ + σ_min²)/(λ + σ_max²)) exactly;
    Heun's error must fall ≈ 4× when the step count doubles."""
    L = 8
    x = torch.randn(4, 1, L, L, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 5.0
    factor = (TEACHER.spectrum(L, 0.05) / TEACHER.spectrum(L, 5.0)).sqrt()
    exact = torch.fft.ifft2(torch.fft.fft2(x) * factor).real
    errors = [(sample_probability_flow(exact_model, x, VENoise(0.05, 5.0).sigmas(n, dtype=torch.float64))
               - exact).abs().max().item() for n in (20, 40)]
    assert errors[1] < 1e-2 * exact.abs().max().item()
    assert 3.0 < errors[0] / errors[1] < 5.0, errors


def test_probability_flow_denoise_returns_tweedie_mean():
    """PF-ODE maps modes deterministically: with denoise=True the output covariance is
    C (C + σ²)⁻¹ C, spectrum λ²/(λ + σ_min²); a schedule ending in 0 gives λ itself."""
    L, n = 8, 1024
    gen = torch.Generator().manual_seed(3)
    x = TEACHER.sample(n, L, generator=gen) + 5.0 * torch.randn(n, 1, L, L, generator=gen, dtype=torch.float64)
    lam = TEACHER.spectrum(L)
    for sigmas, target in ((VENoise(0.3, 5.0).sigmas(200, dtype=torch.float64), lam ** 2 / (lam + 0.09)),
                           (VENoise(0.01, 5.0).sigmas(300, append_zero=True, dtype=torch.float64), lam)):
        out = sample_probability_flow(exact_model, x, sigmas, denoise=True)
        power = torch.fft.fft2(out[:, 0]).abs().square().mean(0) / L ** 2  # ≈ spectrum per mode
        rel = (power.mean() / target.mean() - 1).abs().item()
        assert rel < 4 * math.sqrt(2 / (n * L * L)) + 0.01, rel


def test_samplers_share_signature_and_validate_sigmas():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for sampler in (sample_euler_maruyama, sample_predictor_corrector, sample_probability_flow):
        out = sampler(exact_model, x, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64),
                      cond=None, mask=None, generator=torch.Generator().manual_seed(0),
                      denoise=False, progress=False)
        assert out.shape == x.shape and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="sigmas"):
            sampler(exact_model, x, torch.tensor([1.0, 2.0]))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    mask[..., :4] = 1
    out = sample_euler_maruyama(exact_model, x, torch.tensor([2.0, 1.0, 0.5]), mask=mask)
    assert torch.equal(out[..., 4:], x[..., 4:])


def test_dsm_training_decreases_loss():
    """A few Adam steps on a strongly correlated Gaussian teacher lower the excess DSM loss over
    the exact smoothed score, measured on a fixed held-out batch with fixed noise draws."""
    teacher = GaussianTeacher(seed=1, strength=0.9)
    torch.manual_seed(0)
    model = LocalScoreCNN(blocks=1, width=16)
    noise = VENoise(0.05, 5.0)
    gen = torch.Generator().manual_seed(4)
    held = teacher.sample(64, 12, generator=gen)

    def held_out_loss(score):
        with torch.no_grad():
            return dsm_loss(score, held, noise, generator=torch.Generator().manual_seed(5))[0].item()

    floor = held_out_loss(lambda x, s, c: teacher.smoothed_score(x, s))
    before = held_out_loss(lambda x, s, c: model(x.float(), s.float()).double())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss, _, _ = dsm_loss(model, teacher.sample(16, 12, generator=gen).float(), noise, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss(lambda x, s, c: model(x.float(), s.float()).double())
    assert after - floor < 0.5 * (before - floor), (floor, before, after)


def test_antithetic_dsm_is_unbiased_and_removes_low_sigma_gradient_noise():
    """Antithetic pairs (ε, −ε): the same expected loss (both are averages over ε ~ N(0, I)), and at
    σ = 0.05 the spread of the gradient over noise draws shrinks by ~σ (the O(σ) term ε ∂_θ s cancels)."""
    x0 = torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noise = VENoise(0.01, 1.0)

    def draws(antithetic, n=400):
        losses, grads = [], []
        for k in range(n):
            theta = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
            model = lambda x, s, c: -theta * x  # noqa: E731  (a linear score s_θ(x) = −θ x)
            loss, _, _ = dsm_loss(model, x0, noise, generator=torch.Generator().manual_seed(k),
                                  sigma=torch.full((8,), 0.05, dtype=torch.float64), antithetic=antithetic)
            (g,) = torch.autograd.grad(loss, theta)
            losses.append(loss.detach())
            grads.append(g)
        return torch.stack(losses), torch.stack(grads)

    (l_plain, g_plain), (l_anti, g_anti) = draws(False), draws(True)
    se = (l_plain.var() / len(l_plain) + l_anti.var() / len(l_anti)).sqrt()
    assert abs(l_plain.mean() - l_anti.mean()) < 4 * se
    # plain: std of the gradient ∝ σ |x0|; antithetic: ∝ σ² — the ratio is O(σ) = 0.05, allow 0.2
    assert g_anti.std() < 0.2 * g_plain.std()
    # and both estimate the same mean gradient (within 4 SE of the plain one)
    assert abs(g_plain.mean() - g_anti.mean()) < 4 * g_plain.std() / len(g_plain) ** 0.5


def test_noise_draws_repeat_each_sample_with_independent_noise():
    """noise_draws = K: the loss is the plain DSM loss of the batch with every sample repeated K times
    (same generator stream), so σ and ε are drawn independently per copy; with antithetic each copy is a pair."""
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noise = VENoise(0.01, 1.0)
    model = lambda x, s, c: -0.7 * x  # noqa: E731
    for antithetic in (False, True):
        loss, per, sigma = dsm_loss(model, x0, noise, generator=torch.Generator().manual_seed(3), noise_draws=2,
                                    antithetic=antithetic)
        ref = dsm_loss(model, x0.repeat_interleave(2, 0), noise, generator=torch.Generator().manual_seed(3),
                       antithetic=antithetic)
        assert per.shape == (12 if antithetic else 6,) and torch.equal(sigma, ref[2])
        assert torch.equal(loss, ref[0]) and torch.equal(per, ref[1])
        assert sigma[0] != sigma[1]  # the two copies of sample 0 have their own σ
    fixed = dsm_loss(model, x0, noise, generator=torch.Generator().manual_seed(3), noise_draws=3,
                     sigma=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))[2]
    assert torch.equal(fixed, torch.tensor([0.1] * 3 + [0.2] * 3 + [0.3] * 3, dtype=torch.float64))
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="noise_draws"):
            dsm_loss(model, x0, noise, noise_draws=bad)


def test_lambda_power_weighs_each_sample_by_sigma_to_the_p_minus_2():
    """lambda_power = p: each sample's squared error is the σ² loss's times σ^(p − 2) (same σ, same ε from the
    same generator), so the loss is λ(σ) || s + ε/σ ||² with λ = σ^p; p = 2 is the default loss exactly."""
    x0 = torch.randn(4, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noise = VENoise(0.01, 1.0)
    model = lambda x, s, c: -0.6 * x  # noqa: E731
    base = dsm_loss(model, x0, noise, generator=torch.Generator().manual_seed(2), antithetic=True)
    assert all(torch.equal(a, b) for a, b in zip(base, dsm_loss(model, x0, noise, antithetic=True, lambda_power=2,
                                                                generator=torch.Generator().manual_seed(2))))
    for p in (1.0, 3.0, 0.0):
        loss, per, sigma = dsm_loss(model, x0, noise, generator=torch.Generator().manual_seed(2), antithetic=True,
                                    lambda_power=p)
        assert torch.equal(sigma, base[2])
        torch.testing.assert_close(per, base[1] * sigma ** (p - 2), rtol=1e-12, atol=0)
        torch.testing.assert_close(loss, (base[1] * sigma ** (p - 2)).mean(), rtol=1e-12, atol=0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lambda_power"):
            dsm_loss(model, x0, noise, lambda_power=bad)
