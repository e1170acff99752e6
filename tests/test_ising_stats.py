"""Error bars checked on processes with known answers: AR(1) series, whose integrated
autocorrelation time is τ = (1+φ)/(2(1−φ)), and i.i.d. data."""
import math

import numpy as np
import pytest

from ising import stats


def ar1(phi, n_series, n_steps, seed):
    """Stationary AR(1), unit variance: x_t = φ x_{t−1} + √(1−φ²) ε_t; shape (n_series, n_steps)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_steps, n_series))
    eps[1:] *= math.sqrt(1 - phi * phi)
    x = np.empty_like(eps)
    x[0] = eps[0]
    for t in range(1, n_steps):
        x[t] = phi * x[t - 1] + eps[t]
    return x.T.copy()


def tau_ar1(phi):
    return (1 + phi) / (2 * (1 - phi))


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_tau_of_ar1(phi):
    x = ar1(phi, 4, 50_000, seed=1)
    assert stats.integrated_autocorr_time(x) == pytest.approx(tau_ar1(phi), rel=0.05)
    # one long chain and the pooled chains agree, and each chain alone is close
    assert stats.integrated_autocorr_time(x[0]) == pytest.approx(tau_ar1(phi), rel=0.1)


def test_autocorrelation_of_ar1_and_constant_series():
    x = ar1(0.8, 8, 20_000, seed=2)
    rho = stats.autocorrelation(x)
    assert rho.shape == (20_000,) and rho[0] == 1.0
    np.testing.assert_allclose(rho[1:6], 0.8 ** np.arange(1, 6), atol=0.02)
    assert stats.integrated_autocorr_time(np.ones(100)) == 0.5
    assert stats.mean_stderr(np.ones(100)) == (1.0, 0.0)


def test_tau_vectorised_over_observables():
    x = ar1(0.7, 6, 20_000, seed=3).reshape(2, 3, 20_000)
    tau = stats.integrated_autocorr_time(x, axis=-1, chain_axis=None)
    assert tau.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert tau[i, j] == pytest.approx(stats.integrated_autocorr_time(x[i, j]), rel=1e-12)
    # time first, observables after: the layout of (n_samples, L, L) sample stacks
    mean, err = stats.mean_stderr(np.moveaxis(x, -1, 0), axis=0, chain_axis=None)
    assert mean.shape == err.shape == (2, 3)
    assert err[1, 2] == pytest.approx(stats.mean_stderr(x[1, 2])[1], rel=1e-12)


def test_short_series_warns():
    x = ar1(0.99, 1, 200, seed=4)  # τ ≈ 100
    with pytest.warns(RuntimeWarning, match="too short"):
        stats.integrated_autocorr_time(x)


@pytest.mark.parametrize("method", ["sokal", "batch"])
def test_stderr_coverage_on_ar1(method):
    """Over 400 independent AR(1) series (τ = 4.5) the z-scores of the mean have std ≈ 1.

    A stderr that ignored autocorrelation would give std(z) ≈ √(2τ) = 3."""
    x = ar1(0.8, 400, 4000, seed=5)
    mean, err = stats.mean_stderr(x, chain_axis=None, method=method)
    z = mean / err
    assert np.std(z) == pytest.approx(1.0, abs=0.1)
    assert abs(np.mean(z)) < 0.2
    expected = math.sqrt(2 * tau_ar1(0.8) / 4000)
    assert np.median(err) == pytest.approx(expected, rel=0.1)


def test_pooled_chains_stderr():
    x = ar1(0.8, 8, 5000, seed=6)  # (n_chains, n_steps) by default
    mean, err = stats.mean_stderr(x)
    assert mean == pytest.approx(x.mean(), rel=1e-12)
    assert err == pytest.approx(math.sqrt(2 * tau_ar1(0.8) / x.size), rel=0.1)
    bm, berr = stats.batch_means(x, n_batches=64)
    assert bm == pytest.approx(mean, rel=1e-12)
    assert berr == pytest.approx(err, rel=0.3)


def test_jackknife_of_linear_function_equals_batch_means():
    x = ar1(0.5, 1, 6400, seed=7)[0]
    est, err = stats.jackknife(lambda m: 3.0 * m + 1.0, x, n_blocks=32)
    bm, berr = stats.batch_means(x, n_batches=32)
    assert est == pytest.approx(3.0 * bm + 1.0, rel=1e-12)
    assert err == pytest.approx(3.0 * berr, rel=1e-10)


def test_jackknife_variance_coverage():
    """Var(x) = ⟨x²⟩ − ⟨x⟩² = 1 for unit AR(1) (τ = 4.5): over 1000 series the z-scores have
    std ≈ 1 (the series run along the observable axis, func acts elementwise). Expected ≈ 1.07:
    Student-t with 19 degrees of freedom, and blocks of 100 steps are not quite independent;
    an error off by √2 would give 0.7 or 1.4."""
    x = ar1(0.8, 1000, 2000, seed=8)
    est, err = stats.jackknife(lambda m1, m2: m2 - m1 * m1, x, x * x, n_blocks=20, chain_axis=None)
    assert est.shape == err.shape == (1000,)
    assert 0.9 < np.std((est - 1.0) / err) < 1.2
    assert abs(np.mean(est) - 1.0) < 4 * np.std(est) / math.sqrt(1000)


def test_jackknife_removes_bias():
    """i.i.d. unit variance, n = 50: the plug-in variance has bias −1/n; the blocked jackknife
    estimate of m2 − m1² is exactly unbiased."""
    x = np.random.default_rng(10).standard_normal((4000, 50))
    est, _ = stats.jackknife(lambda m1, m2: m2 - m1 * m1, x, x * x, n_blocks=10, chain_axis=None)
    noise = math.sqrt(2 / 50 / 4000)
    assert x.var(axis=1).mean() == pytest.approx(1 - 1 / 50, abs=4 * noise)
    assert est.mean() == pytest.approx(1.0, abs=4 * noise)


def test_jackknife_over_chains_and_array_output():
    x = ar1(0.5, 64, 300, seed=9)
    est, err = stats.jackknife(lambda m1, m2: np.array([m1, m2 - m1 * m1]), x, x * x)
    assert est.shape == err.shape == (2,)
    assert est[0] == pytest.approx(x.mean(), rel=1e-10)
    assert est[1] == pytest.approx(1.0, abs=4 * err[1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: stats.integrated_autocorr_time(np.zeros(10), c=0.0), "c must be a positive"),
        (lambda: stats.integrated_autocorr_time(np.float64(1.0)), "at least one axis"),
        (lambda: stats.integrated_autocorr_time(np.zeros((3, 1))), "at least 2 samples"),
        (lambda: stats.mean_stderr(np.zeros(10), method="naive"), "method must be 'sokal' or 'batch'"),
        (lambda: stats.mean_stderr(np.zeros((2, 10)), axis=2), r"axis must be an integer in \[-2, 1\]"),
        (lambda: stats.mean_stderr(np.zeros((2, 10)), chain_axis=1), "chain_axis must differ"),
        (lambda: stats.batch_means(np.zeros(10), n_batches=1), "n_batches must be an integer ≥ 2"),
        (lambda: stats.batch_means(np.zeros(10), n_batches=20), "shorter than one sample"),
        (lambda: stats.jackknife(lambda m: m), "series"),
        (lambda: stats.jackknife(lambda a, b: a, np.zeros(10), np.zeros(12)), "series must share one shape"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
