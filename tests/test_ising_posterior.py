"""Noisy-posterior MCMC against exact enumeration, and Eq. 22 checked exactly.

Monte Carlo comparisons use z = (estimate − exact) / stderr over all entries of a case
(fixed seeds). Pass: every |z| ≤ max(4, z_B) with z_B the two-sided Bonferroni threshold for
a family-wise 1% over the case's entries (≈ 4.2 for 200 entries), and rms(z) ≤ 2 (error bars
not loose: the entries of one observation share the slow global mode, so rms(z) of a case
averages only a few independent z's). Entries whose exact variance is below
what any chain can resolve (spins pinned by |h| ≳ 20) get an absolute floor of 1e-9.
"""
import math
from statistics import NormalDist

import numba
import numpy as np
import pytest

import ising
from ising._posterior_kernels import shell_sums
from ising.exact import BETA_C, enumerate_field

FLOOR = 1e-9


def assert_z(est, err, exact, what, z_min=4.0):
    d = np.abs(np.asarray(est) - exact).ravel()
    e = np.asarray(err).ravel()
    z = np.where(d <= FLOOR, 0.0, d / np.maximum(e, FLOOR))
    thr = max(z_min, NormalDist().inv_cdf(1 - 0.005 / z.size))
    assert z.max() <= thr, f"{what}: max |z| = {z.max():.2f} > {thr:.2f} (n = {z.size})"
    assert math.sqrt((z**2).mean()) <= 2.0, f"{what}: rms z = {math.sqrt((z**2).mean()):.2f} > 2"


def observations(L, sigma, n, seed):
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(n, L, L)) + sigma * rng.standard_normal((n, L, L))


def chebyshev(L):
    """d∞ between all pairs of sites of the L×L torus, (L², L²), sites row-major."""
    r, c = np.divmod(np.arange(L * L), L)
    dr = np.abs(r[:, None] - r[None]) % L
    dc = np.abs(c[:, None] - c[None]) % L
    return np.maximum(np.minimum(dr, L - dr), np.minimum(dc, L - dc))


def exact_profile(L, beta, sigma, y, r_max):
    """ρ(r) per observation from enumeration: shell sums of σ⁻⁴ Cov, site-averaged; ρ(0) − σ⁻²."""
    cov = enumerate_field(L, beta, y / sigma**2).covariance
    d = chebyshev(L)
    rho = np.stack([(cov * (d == r)).sum(axis=(1, 2)) for r in range(r_max + 1)], axis=1) / (L * L * sigma**4)
    rho[:, 0] -= 1.0 / sigma**2
    return rho


# --------------------------------------------------------------------------- against enumeration
CASES = [(L, b, s) for L in (3, 4) for b in (1.0, 0.8) for s in (0.3, 1.0, 3.0)]


@pytest.mark.parametrize("L,beta_rel,sigma", CASES)
def test_mean_and_covariance_match_enumeration(L, beta_rel, sigma):
    beta = beta_rel * BETA_C
    y = observations(L, sigma, 4, seed=100 + 10 * L + int(10 * sigma))
    exact = enumerate_field(L, beta, y / sigma**2)
    mean, err = ising.posterior_mean(y, beta, sigma, n_samples=8000, seed=1)
    assert mean.shape == err.shape == y.shape
    assert_z(mean, err, exact.mean, "posterior mean")
    sites = np.array([[0, 0], [1, 2]])
    cov, cerr = ising.posterior_covariance(y, beta, sigma, sites, n_samples=8000, seed=2)
    assert cov.shape == (4, 2, L, L)
    ex_cov = exact.covariance[:, sites[:, 0] * L + sites[:, 1]].reshape(4, 2, L, L)
    assert_z(cov, cerr, ex_cov, "posterior covariance")


@pytest.mark.parametrize("L,sigma", [(3, 3.0), (4, 8.0)])
def test_cluster_moves_are_exact(L, sigma):
    """Heat-bath + one Wolff-with-field attempt per sweep, and several chains from random starts."""
    beta = BETA_C
    y = observations(L, sigma, 3, seed=7)
    exact = enumerate_field(L, beta, y / sigma**2)
    mean, err = ising.posterior_mean(y, beta, sigma, n_samples=8000, cluster_every=1, n_chains=3, seed=3)
    assert_z(mean, err, exact.mean, "mean with cluster moves")
    cov, cerr = ising.posterior_covariance(y, beta, sigma, (2, 1), n_samples=8000, cluster_every=1, seed=4)
    assert_z(cov[:, 0], cerr[:, 0], exact.covariance[:, 2 * L + 1].reshape(3, L, L), "covariance with cluster moves")


def test_smoothed_score_and_response_match_finite_differences_of_enumeration():
    """score_response (MC) equals the central difference in y of the enumerated smoothed score."""
    L, beta, sigma, site = 4, BETA_C, 1.0, (1, 2)
    y = observations(L, sigma, 2, seed=21)
    exact_score = lambda yy: (enumerate_field(L, beta, yy / sigma**2).mean - yy) / sigma**2  # noqa: E731
    score, serr = ising.smoothed_score(y, beta, sigma, n_samples=8000, seed=15)
    assert_z(score, serr, exact_score(y), "smoothed score")
    eps = 1e-5
    fd = np.empty_like(y)
    for r in range(L):
        for c in range(L):
            dy = np.zeros_like(y)
            dy[:, r, c] = eps
            fd[:, r, c] = (exact_score(y + dy) - exact_score(y - dy))[:, site[0], site[1]] / (2 * eps)
    jac, jerr = ising.score_response(y, beta, sigma, site, n_samples=8000, seed=6)
    assert jac.shape == y.shape
    assert jac[:, 1, 2].max() < 0  # the −σ⁻² diagonal dominates at σ = 1
    assert_z(jac, jerr, fd, "score response vs finite differences")


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_eq22_exactly(sigma):
    """Enumeration alone: ∂ s_σ(y)_i/∂y_j = σ⁻⁴ Cov(S_i, S_j) − σ⁻² δ_ij (central differences)."""
    L, beta = 3, BETA_C
    y = observations(L, sigma, 1, seed=31)[0]
    cov = enumerate_field(L, beta, y / sigma**2).covariance
    eps = 1e-6 * sigma
    jac = np.empty((L * L, L * L))
    for j in range(L * L):
        dy = np.zeros(L * L)
        dy[j] = eps
        up = enumerate_field(L, beta, (y + dy.reshape(L, L)) / sigma**2).mean.ravel()
        dn = enumerate_field(L, beta, (y - dy.reshape(L, L)) / sigma**2).mean.ravel()
        jac[:, j] = ((up - dn) / (2 * eps) - (j == np.arange(L * L))) / sigma**2
    np.testing.assert_allclose(jac, cov / sigma**4 - np.eye(L * L) / sigma**2, atol=1e-6 / sigma**4)


# --------------------------------------------------------------------------- limits
def test_large_sigma_recovers_prior_correlations():
    L, beta, sigma = 4, BETA_C, 1e4
    y = observations(L, sigma, 2, seed=41)
    prior = enumerate_field(L, beta).covariance[0].reshape(L, L)
    cov, err = ising.posterior_covariance(y, beta, sigma, (0, 0), n_samples=8000, seed=7)
    assert_z(cov[:, 0], err[:, 0], np.broadcast_to(prior, (2, L, L)), "σ → ∞ covariance")
    assert prior.min() > 0.5  # strongly correlated at β_c on 4×4: the test has teeth


def test_small_sigma_pins_spins_to_sign_of_y():
    L, beta, sigma = 5, BETA_C, 0.05
    y = observations(L, sigma, 3, seed=42)
    s = ising.posterior_samples(y, beta, sigma, 50, seed=8)
    assert s.shape == (3, 50, L, L) and s.dtype == np.int8
    assert np.all(s == np.sign(y)[:, None])
    mean, err = ising.posterior_mean(y, beta, sigma, n_samples=64, seed=9)
    np.testing.assert_allclose(mean, np.sign(y), atol=1e-12)
    cov, _ = ising.posterior_covariance(y, beta, sigma, (0, 0), n_samples=64, seed=9)
    np.testing.assert_allclose(cov, 0.0, atol=1e-12)


# --------------------------------------------------------------------------- response profile
def test_shell_sums_match_brute_force():
    rng = np.random.default_rng(0)
    for M, N in ((3, 3), (4, 4), (5, 7), (8, 6)):
        x, y = rng.standard_normal((2, M, N))
        r_max, pad = 5, max(M, N) // 2 + 1
        out = np.zeros(r_max + 1)
        shell_sums(x, y, r_max, pad, np.zeros((M + 2 * pad + 1, N + 2 * pad + 1)), out)
        r, c = np.divmod(np.arange(M * N), N)
        dr, dc = np.abs(r[:, None] - r[None]), np.abs(c[:, None] - c[None])
        d = np.maximum(np.minimum(dr, M - dr), np.minimum(dc, N - dc))
        xy = x.ravel()[:, None] * y.ravel()[None]
        np.testing.assert_allclose(out, [(xy * (d == k)).sum() for k in range(r_max + 1)], atol=1e-12)


@pytest.mark.parametrize("sigma,cluster_every", [(1.0, 0), (3.0, 1)])
def test_response_profile_matches_enumeration(sigma, cluster_every):
    """Per observation: ρ against the enumerated shell sums for the same y, in chain errors.

    32 blocks, so the jackknife chain errors have ~31 degrees of freedom. Threshold 5, not 4: where
    y pins most spins, ρ(2) of one chain comes from rare flips and its estimate is skewed (a chain
    that saw few of them is low and reports a small error). At σ = 3 on 4×4 the heat-bath alone
    tunnels between the two magnetised states too rarely for blocks of 250 sweeps to measure its
    chain error; the Wolff move fixes that."""
    L, beta, r_max = 4, BETA_C, 2
    rho, err, d = ising.response_profile(L, beta, sigma, r_max, n_observations=24, n_sweeps=8000, n_blocks=32,
                                         seed=3, cluster_every=cluster_every, details=True)
    assert rho.shape == err.shape == (r_max + 1,) and d["rho_obs"].shape == (24, r_max + 1)
    exact = exact_profile(L, beta, sigma, d["y"], r_max)
    assert_z(d["rho_obs"], d["chain_stderr_obs"], exact, "ρ per observation", z_min=5.0)
    # the y-average and its standard error over observations
    assert_z(rho, err, exact.mean(axis=0), "ρ averaged over y")


def test_response_profile_matches_covariance_path_on_a_larger_torus():
    """L = 6 (beyond enumeration): the shell-sum estimator against posterior_covariance with every
    site as a probe, for the same y (two independent code paths and chains)."""
    L, beta, sigma, r_max = 6, BETA_C, 2.0, 3
    rho, _, d = ising.response_profile(L, beta, sigma, r_max, n_observations=4, n_sweeps=8000, seed=4,
                                       details=True)
    sites = np.stack(np.divmod(np.arange(L * L), L), axis=1)
    cov, cerr = ising.posterior_covariance(d["y"], beta, sigma, sites, n_samples=8000, seed=5)
    dist = chebyshev(L).reshape(L * L, L, L)
    shells = np.stack([(cov * (dist == r)).sum(axis=(2, 3)).mean(axis=1) for r in range(r_max + 1)], 1)
    shell_err = np.stack([np.sqrt(((cerr * (dist == r)) ** 2).sum(axis=(2, 3))).mean(axis=1)
                          for r in range(r_max + 1)], 1)  # conservative: errors of one probe's shell
    shells = shells / sigma**4
    shells[:, 0] -= 1.0 / sigma**2
    tot = np.sqrt(d["chain_stderr_obs"] ** 2 + (shell_err / sigma**4) ** 2)
    assert_z(d["rho_obs"], tot, shells, "ρ vs covariance path")


def test_response_profile_rel_tol_adds_observations():
    L, beta, sigma = 6, 0.8 * BETA_C, 2.0
    rho, err, d = ising.response_profile(L, beta, sigma, 2, n_observations=4, n_sweeps=400, rel_tol=0.1,
                                         tol_r=1, max_observations=256, seed=6, details=True)
    assert d["n_observations"] > 4
    assert err[1] <= 0.1 * abs(rho[1]) or d["n_observations"] == 256


# --------------------------------------------------------------------------- API contract
def test_reproducible_from_seed_whatever_the_thread_count():
    L, sigma = 6, 2.0
    y = observations(L, sigma, 5, seed=51)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = ising.posterior_samples(y, BETA_C, sigma, 20, seed=3, cluster_every=2)
        pa = ising.response_profile(L, BETA_C, sigma, 2, n_observations=4, n_sweeps=64, seed=3)
        numba.set_num_threads(threads)
        b = ising.posterior_samples(y, BETA_C, sigma, 20, seed=3, cluster_every=2)
        pb = ising.response_profile(L, BETA_C, sigma, 2, n_observations=4, n_sweeps=64, seed=3)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a, ising.posterior_samples(y, BETA_C, sigma, 20, seed=4, cluster_every=2))
    # a single observation gives unbatched shapes, same values as the batch's first chain
    np.testing.assert_array_equal(ising.posterior_samples(y[0], BETA_C, sigma, 20, seed=3, cluster_every=2), a[0])


def test_init_means_no_burn_in():
    """From init (the prior sample behind y, an exact posterior draw) burn_in defaults to 0."""
    L, sigma = 5, 2.0
    rng = np.random.default_rng(61)
    s = rng.choice([-1, 1], size=(L, L))
    y = s + sigma * rng.standard_normal((L, L))
    a = ising.posterior_samples(y, BETA_C, sigma, 3, init=s, seed=1)
    np.testing.assert_array_equal(a, ising.posterior_samples(y, BETA_C, sigma, 3, init=s, burn_in=0, seed=1))
    assert not np.array_equal(a, ising.posterior_samples(y, BETA_C, sigma, 3, init=s, burn_in=5, seed=1))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda y: ising.posterior_mean(y, BETA_C, 0.0), "sigma"),
        (lambda y: ising.posterior_mean(y, BETA_C, -1.0), "sigma"),
        (lambda y: ising.posterior_mean(y, -0.1, 1.0), "beta"),
        (lambda y: ising.posterior_mean(y[0, 0], BETA_C, 1.0), "y"),
        (lambda y: ising.posterior_mean(y[:, :2], BETA_C, 1.0), "y"),
        (lambda y: ising.posterior_mean(np.full_like(y, np.nan), BETA_C, 1.0), "y"),
        (lambda y: ising.posterior_covariance(y, BETA_C, 1.0, (4, 0)), "sites"),
        (lambda y: ising.posterior_covariance(y, BETA_C, 1.0, (0.5, 1)), "sites"),
        (lambda y: ising.score_response(y, BETA_C, 1.0, (0, -1)), "site"),
        (lambda y: ising.score_response(y, BETA_C, 1.0, [(0, 1), (1, 1)]), "site"),
        (lambda y: ising.posterior_samples(y, BETA_C, 1.0, 0), "n_samples"),
        (lambda y: ising.posterior_mean(y, BETA_C, 1.0, init=np.zeros((4, 4))), "init"),
        (lambda y: ising.response_profile(4, BETA_C, 0.0, 2), "sigma"),
        (lambda y: ising.response_profile(2, BETA_C, 1.0, 2), "L"),
        (lambda y: ising.response_profile(4, BETA_C, 1.0, -1), "r_max"),
        (lambda y: ising.response_profile(4, BETA_C, 1.0, 2, rel_tol=0.0), "rel_tol"),
        (lambda y: ising.response_profile(4, BETA_C, 1.0, 2, rel_tol=0.1, tol_r=3), "tol_r"),
    ],
)
def test_bad_input_raises_value_error_naming_the_parameter(call, name):
    y = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call(y)
