"""FDLF teachers: invertibility, exact density (brute-force log-det, normalisation), exact score
(finite differences, Stein's identity), size-uniform local statistics, calibrated response ranges.

Monte Carlo checks compare a mean over independent samples with its target within Z_TOL standard
errors (SE = sample std / √n of per-sample statistics) and also require the SE to be small
enough for the check to have power. All seeds are fixed, so the tests are deterministic.
"""
import math

import pytest
import torch
from helpers import Z_TOL, assert_mc, generator  # noqa: F401

from sizetransfer.lattice import normalised_tail, response_range
from sizetransfer.teachers import FDLF_KEYS, HARD_VALID_KEYS, PERIODIC_2D_KEYS, TEACHER_KEYS, Teacher, make_teacher
from sizetransfer.teachers.base import mean_response_profile

SMALL_L = {"simple_local": 6, "complex_local": 6, "medium_range": 12, "complex_long": 18}


@pytest.fixture(scope="module")
def teachers():
    return {key: make_teacher(key, seed=0) for key in FDLF_KEYS}


gen = generator


# ---------------------------------------------------------------- API and bad input

def test_registry_and_protocol(teachers):
    assert set(TEACHER_KEYS) == set(FDLF_KEYS) | {"gaussian"} | set(HARD_VALID_KEYS)
    assert set(PERIODIC_2D_KEYS) == set(FDLF_KEYS) | {"gaussian"}
    for key, t in teachers.items():
        assert isinstance(t, Teacher) and t.key == key and (t.dim, t.channels, t.periodic) == (2, 1, True)
    with pytest.raises(ValueError, match="simple_local.*complex_long.*gaussian"):
        make_teacher("long_range")


def test_bad_sizes_raise(teachers):
    with pytest.raises(ValueError, match="even"):
        teachers["simple_local"].sample(2, 7)
    with pytest.raises(ValueError, match="got 2"):
        teachers["simple_local"].check_size(2)
    with pytest.raises(ValueError, match=r"C = 8.*got 16"):          # 16 < 2C + 1 = 17
        teachers["complex_long"].sample(1, 16)
    with pytest.raises(ValueError, match=r"C = 5.*got 10"):
        teachers["medium_range"].log_prob(torch.zeros(1, 1, 10, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        teachers["simple_local"].score(torch.zeros(1, 8, 8))
    assert [teachers[k].min_size for k in FDLF_KEYS] == [4, 4, 12, 18]


def test_parameters_fixed_by_seed():
    a, b, c = (make_teacher("complex_long", seed=s) for s in (3, 3, 4))
    u = torch.randn(2, 1, 18, 18, generator=gen(0), dtype=torch.float64)
    assert torch.equal(a.transform(u), b.transform(u))
    assert not torch.allclose(a.transform(u), c.transform(u))
    assert a.mean_mode.c0 == b.mean_mode.c0


# ---------------------------------------------------------------- exact density

@pytest.mark.parametrize("key", FDLF_KEYS)
def test_inverse_roundtrip(teachers, key):
    t = teachers[key]
    for L in (SMALL_L[key], 32):
        u = torch.randn(3, 1, L, L, generator=gen(L), dtype=torch.float64)
        x = t.transform(u)
        assert torch.allclose(t.inverse(x), u, rtol=0, atol=1e-10)
        assert torch.allclose(t.forward(t.inverse(x)), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("key", FDLF_KEYS)
def test_log_det_matches_brute_force_jacobian(teachers, key):
    """log|det ∂F⁻¹/∂x| from the layers equals slogdet of the full autograd Jacobian of F⁻¹
    (row k of ∂u/∂x from one backward over N copies of x, copy k selecting u_k)."""
    t, L = teachers[key], SMALL_L[key]
    N = L * L
    x = t.sample(2, L, generator=gen(1))
    _, log_det = t.inverse_and_log_det(x)
    for k in range(2):
        copies = x[k:k + 1].expand(N, 1, L, L).clone().requires_grad_(True)
        (jac,) = torch.autograd.grad(t.inverse(copies).reshape(N, N).diagonal().sum(), copies)
        sign, logabs = torch.linalg.slogdet(jac.reshape(N, N))
        assert sign != 0 and abs(float(logabs - log_det[k])) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("key", ["simple_local", "complex_local"])
def test_log_prob_normalises_on_4x4(teachers, key):
    """E_q[p/q] = 1 for q a Gaussian fitted to teacher samples (covariance inflated 1.2²; the weights
    are heavy-tailed, hence n = 200k). Power check: dropping the log-det moves the estimate by
    > 4 SE. medium_range and complex_long need L ≥ 12 and L ≥ 18 (smoother cutoff), where
    importance sampling in 144+ dimensions is hopeless; the brute-force log-det test covers them."""
    t, L, n = teachers[key], 4, 200_000
    x = t.sample(n, L, generator=gen(2)).reshape(n, -1)
    q = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=torch.cov(x.T) * 1.2 ** 2)
    torch.manual_seed(3)
    y = q.sample((n,))
    _, log_det = t.inverse_and_log_det(y.view(n, 1, L, L))
    log_p = t.log_prob(y.view(n, 1, L, L))
    ratio = torch.exp(log_p - q.log_prob(y))
    assert_mc(ratio, 1.0, max_se=0.015, name=f"{key} E_q[p/q]")
    wrong = torch.exp(log_p - log_det - q.log_prob(y))
    assert abs(float(wrong.mean()) - 1) > Z_TOL * float(ratio.std() / math.sqrt(n))


# ---------------------------------------------------------------- exact score

@pytest.mark.parametrize("key", FDLF_KEYS)
def test_score_matches_finite_differences(teachers, key):
    t, L, h = teachers[key], SMALL_L[key], 1e-5
    x = t.sample(2, L, generator=gen(4))
    s = t.score(x)
    assert s.shape == x.shape and s.dtype == torch.float64
    for (i, j) in [(0, 0), (1, 2), (L - 1, L // 2)]:
        e = torch.zeros_like(x)
        e[:, 0, i, j] = h
        fd = (t.log_prob(x + e) - t.log_prob(x - e)) / (2 * h)
        assert torch.allclose(s[:, 0, i, j], fd, rtol=1e-6, atol=1e-6), (i, j, s[:, 0, i, j], fd)


@pytest.mark.parametrize("key", ["complex_local", "complex_long"])
def test_hessian_row_matches_finite_differences_of_score(teachers, key):
    """Row i of ∂s/∂x equals its column (symmetry), i.e. the central difference of s along e_i."""
    t, L, h, site = teachers[key], SMALL_L[key], 1e-5, (3, 4)
    x = t.sample(2, L, generator=gen(5))
    e = torch.zeros_like(x)
    e[:, 0, site[0], site[1]] = h
    fd = (t.score(x + e) - t.score(x - e)) / (2 * h)
    assert torch.allclose(t.hessian_row(x, site), fd, rtol=1e-5, atol=1e-7)
    prof = t.response_profile(x, site, L)                          # r_max > L/2: empty outer shells
    assert prof.shape == (2, L + 1) and torch.all(prof[:, L // 2 + 1:] == 0)
    assert torch.allclose(prof.sum(1), fd.abs().sum((1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("key", FDLF_KEYS)
def test_stein_identity(teachers, key):
    """E[s_i(x) x_j] = −δ_ij on teacher samples: (a) site-averaged s_i x_{i+e} per sample for
    e = 0 (→ −1) and (0, 1), (1, 1), (0, 2) (→ 0); (b) every entry of the 16 × 16 block of
    E[s xᵀ] over a 4 × 4 patch (→ −I, 4.5 SE per entry for 256 entries). x is centred by the site
    means of an independent batch (E[s] = 0, so the targets are unchanged, the variance smaller)."""
    t, L, n = teachers[key], SMALL_L[key], 1000
    x = t.sample(n, L, generator=gen(6))
    s = t.score(x)
    x = x - t.sample(n, L, generator=gen(60)).mean(0)
    for shift, target in [((0, 0), -1.0), ((0, 1), 0.0), ((1, 1), 0.0), ((0, 2), 0.0)]:
        stat = (s * x.roll(shift, (2, 3))).mean((1, 2, 3))
        assert_mc(stat, target, max_se=0.05, name=f"{key} E[s_i x_i+{shift}]")
    s_b, x_b = s[:, 0, 1:5, 2:6].reshape(n, 16), x[:, 0, 1:5, 2:6].reshape(n, 16)
    prod = s_b[:, :, None] * x_b[:, None, :]
    mean, se = prod.mean(0), prod.std(0) / math.sqrt(n)
    assert se.max() < 0.2, se.max()
    assert torch.all((mean + torch.eye(16, dtype=mean.dtype)).abs() <= 4.5 * se), (mean, se)


# ---------------------------------------------------------------- size uniformity and calibration

def local_statistics(x):
    """Per-sample site averages (n, 8): mean and second moment on each parity, and the
    nearest-neighbour products x_i x_{i+e} for e = (1, 0), (0, 1) on each parity of i."""
    L = x.shape[-1]
    idx = torch.arange(L)
    stats = []
    for parity in (0, 1):
        mask = ((idx[:, None] + idx[None, :]) % 2 == parity).to(x.dtype)
        avg = lambda f: (f[:, 0] * mask).sum((1, 2)) / mask.sum()  # noqa: E731
        stats += [avg(x), avg(x ** 2), avg(x * x.roll(1, 2)), avg(x * x.roll(1, 3))]
    return torch.stack(stats, 1)


@pytest.mark.parametrize("key", ["simple_local", "complex_local"])
def test_local_statistics_size_uniform(teachers, key):
    """Local families: single-site and nearest-neighbour statistics agree at L = 16 and L = 64."""
    t = teachers[key]
    a = local_statistics(t.sample(384, 16, generator=gen(7)))
    b = local_statistics(t.sample(24, 64, generator=gen(8)))
    diff = a.mean(0) - b.mean(0)
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    assert torch.all(se < 0.02), se
    assert torch.all(diff.abs() <= Z_TOL * se), (diff, se)


def test_complex_long_moments_and_mean_mode(teachers):
    """complex_long samples stay bounded (finite moments, no blow-up of the near-critical smoother)
    and the mean mode gives the site mean m(x) standard deviation κ = 0.2 at every L."""
    t = teachers["complex_long"]
    for L, n in [(32, 400), (64, 200)]:
        x = t.sample(n, L, generator=gen(L))
        assert torch.isfinite(x).all() and x.abs().max() < 30
        kurtosis = float(((x - x.mean()) ** 4).mean() / x.var() ** 2)
        assert 1.5 < kurtosis < 10
        sd_m = float(x.mean((1, 2, 3)).std())
        assert abs(sd_m / 0.2 - 1) < 5 / math.sqrt(2 * n) + 0.05, sd_m   # 5 SE of a std + c₀ error


RANGE_TARGETS = {  # key -> (lower bound on R_0.05 (exclusive), upper bound (inclusive), tail radius, min tail)
    "simple_local": (-1, 2, None, None),
    "complex_local": (-1, 3, None, None),
    "medium_range": (4, 8, 4, 0.25),
    "complex_long": (11, 32, 8, 0.25),
}


@pytest.mark.parametrize("key", FDLF_KEYS)
def test_response_range_targets_at_64(teachers, key):
    """Exact clean-score response profile at L = 64 (8 samples × 4 probe sites) meets the targets of docs/teachers.md."""
    profile = mean_response_profile(teachers[key], 64, n_samples=8, n_sites=4, seed=0)
    r = int(response_range(profile))
    low, high, tail_r, min_tail = RANGE_TARGETS[key]
    assert low < r <= high, (key, r)
    if tail_r is not None:
        assert float(normalised_tail(profile)[tail_r]) >= min_tail
