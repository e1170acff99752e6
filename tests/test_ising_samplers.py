"""Prior samplers (Wolff, Swendsen–Wang, heat-bath) against exact results of ising.exact.

MC comparisons: |estimate − exact| < 4 standard errors, errors accounting for autocorrelation
(ising.stats: Sokal-windowed τ_int for means, blocked jackknife for the specific heat).
"""
import math

import numba
import numpy as np
import pytest

import ising
from ising import exact, stats
from ising.lattice import energy, magnetization
from ising.samplers import ALGORITHMS, Chains, autocorr_time, default_burn_in, sample

BETA_C = ising.BETA_C
N_SIGMA = 4.0


# --------------------------------------------------------------------------- observables
def test_energy_magnetization_known_configurations():
    up = np.ones((4, 4), dtype=np.int8)
    checker = np.where(np.indices((4, 4)).sum(0) % 2 == 0, 1, -1)
    assert energy(up) == -2.0 and magnetization(up) == 1.0
    assert energy(checker) == 2.0 and magnetization(checker) == 0.0
    batch = np.stack([up, -up, checker])
    np.testing.assert_array_equal(energy(batch), [-2.0, -2.0, 2.0])
    np.testing.assert_array_equal(magnetization(batch), [1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="spins"):
        energy(np.zeros((4, 4)))


@pytest.mark.parametrize("L", [2, 3])
def test_energy_matches_enumeration(L):
    """⟨energy⟩ and β² N Var(energy) under the exact Boltzmann weights equal ising.exact's."""
    beta = 0.37
    r = exact.enumerate_field(L, beta, return_states=True)
    e = energy(r.states)
    mean = r.probabilities @ e
    assert mean == pytest.approx(r.energy, abs=1e-12)
    assert beta**2 * L * L * (r.probabilities @ (e - mean) ** 2) == pytest.approx(r.specific_heat, abs=1e-12)


# --------------------------------------------------------------------------- against Kaufman
CASES = [pytest.param(L, q, marks=pytest.mark.slow) if L == 32 else (L, q) for L in (8, 16, 32) for q in (0.8, 1.0, 1.2)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("L, ratio", CASES)
def test_energy_and_specific_heat_vs_kaufman(algorithm, L, ratio):
    beta = ratio * BETA_C
    n_chains = 8
    n_records = int(max(10_000, 1000 * autocorr_time(L, beta, algorithm)))
    chains = Chains(L, beta, n_chains, algorithm=algorithm, seed=11).burn_in(default_burn_in(L, beta, algorithm))
    e = chains.energies(n_records)
    N = L * L
    mean, err = stats.mean_stderr(e)
    heat, heat_err = stats.jackknife(lambda m1, m2: beta**2 * N * (m2 - m1**2), e, e**2, n_blocks=32)
    e_exact, c_exact = exact.kaufman_energy(L, beta), exact.kaufman_specific_heat(L, beta)
    assert abs(mean - e_exact) < N_SIGMA * err, (mean, err, e_exact)
    assert abs(heat - c_exact) < N_SIGMA * heat_err, (heat, heat_err, c_exact)
    assert err < 4e-3 and heat_err < 0.02 * c_exact  # the test has power


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sample_defaults_vs_kaufman(algorithm):
    """sample() with default burn-in and thinning: energy of the samples at L = 16, β_c."""
    L, n_chains, n = 16, 8, 4000
    s = sample(L, BETA_C, n, algorithm=algorithm, n_chains=n_chains, seed=5)
    assert s.shape == (n, L, L) and s.dtype == np.int8
    e = energy(s).reshape(n // n_chains, n_chains).T  # (chain, record)
    mean, err = stats.mean_stderr(e)
    assert abs(mean - exact.kaufman_energy(L, BETA_C)) < N_SIGMA * err
    assert stats.integrated_autocorr_time(e) < 1.5  # default thinning gives nearly independent samples


# --------------------------------------------------------------------------- full histograms
def _chi_square_z(counts, probs, min_expected=5.0):
    """Wilson–Hilferty normal score of Pearson's χ² (bins with expected < min_expected pooled)."""
    expected = probs * counts.sum()
    small = expected < min_expected
    obs, exp_ = counts[~small], expected[~small]
    if small.any():
        obs, exp_ = np.append(obs, counts[small].sum()), np.append(exp_, expected[small].sum())
    chi2 = ((obs - exp_) ** 2 / exp_).sum()
    k = obs.size - 1
    return ((chi2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))


def _histogram(L, beta, algorithm, n, seed):
    # one sample per chain: independent draws after the default burn-in
    s = sample(L, beta, n, algorithm=algorithm, n_chains=n, seed=seed)
    return np.bincount(exact.state_index(s), minlength=2 ** (L * L))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("beta", [0.3, BETA_C, 0.7])
@pytest.mark.parametrize("L", [2, 3])
def test_histogram_matches_boltzmann(L, beta, algorithm):
    """All 2^(L²) states of the 2×2 and 3×3 torus: χ² against the exact Boltzmann weights."""
    p = exact.enumerate_field(L, beta, return_states=True).probabilities
    z = _chi_square_z(_histogram(L, beta, algorithm, 60_000, seed=21), p)
    assert z < N_SIGMA, z


def test_histogram_test_detects_wrong_coupling():
    """The χ² test has power: samples at 1.1 β_c are rejected against the weights at β_c."""
    p = exact.enumerate_field(3, BETA_C, return_states=True).probabilities
    assert _chi_square_z(_histogram(3, 1.1 * BETA_C, "wolff", 60_000, seed=21), p) > 2 * N_SIGMA


# --------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reproducible_across_threads_and_seeds(algorithm):
    kw = dict(algorithm=algorithm, n_chains=8, burn_in=30, thin=2)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = sample(12, BETA_C, 40, seed=3, **kw)
        numba.set_num_threads(threads)
        b = sample(12, BETA_C, 40, seed=3, **kw)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(a, b)
    c = sample(12, BETA_C, 40, seed=4, **kw)
    assert (a != c).any(axis=(1, 2)).all()  # every sample differs


def test_sample_count_and_order():
    """n_samples not a multiple of n_chains; samples are interleaved record by record."""
    s = sample(6, 0.3, 10, algorithm="sw", n_chains=4, burn_in=5, thin=1, seed=1)
    ch = Chains(6, 0.3, 4, algorithm="sw", seed=1).burn_in(5)
    ref = ch.samples(12, 1)
    np.testing.assert_array_equal(s, ref[:10])
    assert np.all(np.abs(s) == 1)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((1, 0.4, 10), {}, "L"),
        ((8.5, 0.4, 10), {}, "L"),
        (("8", 0.4, 10), {}, "L"),
        ((True, 0.4, 10), {}, "L"),
        ((8, -0.1, 10), {}, "beta"),
        ((8, float("nan"), 10), {}, "beta"),
        ((8, "0.4", 10), {}, "beta"),
        ((8, 0.4, 0), {}, "n_samples"),
        ((8, 0.4, 10.0), {}, "n_samples"),
        ((8, 0.4, 10), {"algorithm": "metropolis"}, "algorithm"),
        ((8, 0.4, 10), {"n_chains": 0}, "n_chains"),
        ((8, 0.4, 10), {"n_chains": 11}, "n_chains"),
        ((8, 0.4, 10), {"thin": 0}, "thin"),
        ((8, 0.4, 10), {"burn_in": -1}, "burn_in"),
        ((8, 0.4, 10), {"burn_in": 0, "algorithm": "wolff"}, "burn_in"),
        ((8, 0.4, 10), {"seed": -1}, "seed"),
    ],
)
def test_bad_input_raises(args, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}\b.*must be .*(integer|real|one of)"):
        sample(*args, **kwargs)


# --------------------------------------------------------------------------- benchmark smoke test
def test_bench_prior_quick(capsys):
    from ising._bench_prior import run

    rows = run(quick=True)
    names = {r["name"] for r in rows}
    assert set(ALGORITHMS) | {"numpy metropolis"} <= names
    assert all(r["indep_per_s"] > 0 and r["tau_unit"] > 0 for r in rows)
    assert "numpy" in capsys.readouterr().out


@pytest.mark.slow
def test_wolff_one_record_per_chain_is_unbiased():
    """Regression: a flip-count stopping rule in the Wolff burn-in biased chains toward
    ordered states; with one record per chain the samples are independent, so the plain
    standard error applies (4096 samples, L = 32, β_c: was −3.7 SE)."""
    import ising
    from ising.exact import kaufman_energy

    s = ising.sample(32, ising.BETA_C, 4096, algorithm="wolff", n_chains=4096, seed=3)
    e = ising.energy(s)
    z = (e.mean() - kaufman_energy(32, ising.BETA_C)) / (e.std(ddof=1) / np.sqrt(e.size))
    assert abs(z) < 4, z
