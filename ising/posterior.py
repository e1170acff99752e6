"""Noisy-posterior Monte Carlo: the smoothed score of the Ising prior and its exact response.

Observation ``y = s + σ z`` of a prior sample s (z ~ N(0, I)). The posterior (Eq. 21) is a
random-field Ising model on the periodic M×N torus (M, N ≥ 3),
``π^y(s) ∝ exp(β Σ_<ij> s_i s_j + Σ_i h_i s_i)``, ``h_i = y_i / σ²``. Tweedie gives the
smoothed score ``s_σ(y) = (E_{π^y}[S] − y) / σ²`` and Eq. 22 its Jacobian
``∂ s_σ(y)_i / ∂ y_j = σ⁻⁴ Cov_{π^y}(S_i, S_j) − σ⁻² δ_ij``.

Sampler. Checkerboard-ordered heat-bath sweeps with per-site probability tables (see
:mod:`ising._posterior_kernels`); optionally one Wolff cluster attempt with the field
(flip accepted with min(1, exp(−2 Σ_{i∈C} h_i s_i))) after every ``cluster_every``-th sweep.
Default ``cluster_every``: 4 at σ ≥ 8 (safeguard for the slow global mode of a weak
field), else none. Chains start from ``init`` — the prior sample that generated y, an exact
draw from π^y, so no burn-in is needed — or else from uniformly random spins after
``burn_in`` sweeps (default max(100, n_samples·thin / 2)).

Estimators (Rao–Blackwellised, all exact in expectation under π^y). With
m_i = E[S_i | rest] = tanh(β Σ_{j~i} s_j + h_i):
* E[S_i] ← average of m_i;
* E[S_i S_j] ← 1 for j = i; m_i m_j for j not a neighbour of i (S_i, S_j are conditionally
  independent given all other spins, and m_i does not depend on s_j); for neighbours j ~ i
  the exact pair expectation E[S_i S_j | all but i, j] = (tanh β + t)/(1 + t tanh β),
  t = tanh(a_i) tanh(a_j), a_i = β Σ_{l~i, l≠j} s_l + h_i (a two-spin Ising model);
* Cov(S_i, S_j) = E[S_i S_j] − E[S_i] E[S_j], jackknife bias-corrected over blocks (for the
  product of two means this is the U-statistic over distinct blocks, free of the O(τ/n)
  bias of a product of means taken from one chain).
Errors: each chain is cut into ``n_blocks`` blocks and every (chain, block) is one unit;
stderr of means from batch means, of covariances from the blocked jackknife
(:mod:`ising.stats`), both times √(1 + 2ρ₁) for the measured correlation ρ₁ of adjacent
blocks (:func:`_block_inflation`). Valid when a block is longer than the autocorrelation time.

All functions take y as (M, N) or a batch (n, M, N) and return arrays with the same leading
batch axis (or none); everything is reproducible from ``seed`` whatever the thread count.
"""
from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
from numba import get_num_threads

from ising import _posterior_kernels as K
from ising import stats
from ising._rng import seed_states
from ising.lattice import check_beta, check_choice, check_int, check_size
from ising.samplers import ALGORITHMS, sample

__all__ = [
    "posterior_samples",
    "posterior_mean",
    "smoothed_score",
    "posterior_covariance",
    "score_response",
    "response_profile",
]

_STREAM_CHAINS, _STREAM_INIT = 11, 12


def default_cluster_every(sigma: float) -> int:
    """Default Wolff-with-field schedule: one attempt per 4 sweeps at σ ≥ 8 (weak field, slow
    global mode), none below (heat-bath alone is cheaper per core-second there)."""
    return 4 if sigma >= 8.0 else 0


# --------------------------------------------------------------------------- validation
def _sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (0.0 < sigma < math.inf):
        raise ValueError(f"sigma must be a finite real number > 0; got {sigma!r}")
    return float(sigma)


def _observations(y):
    """y (M, N) or (n, M, N) → float64 (n, M, N) and whether a batch axis was given."""
    a = np.asarray(y, dtype=np.float64)
    if a.ndim not in (2, 3) or min(a.shape[-2:]) < 3 or 0 in a.shape:
        raise ValueError(f"y must have shape (M, N) or (n, M, N) with M, N ≥ 3 and n ≥ 1; got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("y must be finite")
    return np.ascontiguousarray(a.reshape(-1, *a.shape[-2:])), a.ndim == 3


def _initial(init, shape, n_chains, seed):
    """Start configurations (n·n_chains, M, N) uint8 (1 = spin +1), chain-major per observation."""
    n, M, N = shape
    if init is None:
        return np.random.default_rng([seed, _STREAM_INIT]).integers(0, 2, size=(n * n_chains, M, N), dtype=np.uint8)
    s = np.asarray(init)
    if s.shape[-2:] != (M, N) or s.reshape(-1, M, N).shape[0] != n or not np.all(np.abs(s) == 1):
        raise ValueError(f"init must hold ±1 spins of the shape of y, ({n}, {M}, {N}) or ({M}, {N}); got {s.shape}")
    return np.repeat((s.reshape(n, M, N) > 0).astype(np.uint8), n_chains, axis=0)


def _sampling(y, beta, sigma, init, n_chains, n_samples, thin, burn_in, cluster_every, seed):
    """Validate the common arguments; return the chain set-up for the kernels."""
    yy, batched = _observations(y)
    beta, sigma = check_beta(beta), _sigma(sigma)
    n_chains = check_int(n_chains, "n_chains", 1)
    n_samples = check_int(n_samples, "n_samples", 1)
    thin = check_int(thin, "thin", 1)
    seed = check_int(seed, "seed", 0)
    if burn_in is None:
        burn_in = 0 if init is not None else max(100, n_samples * thin // 2)
    burn_in = check_int(burn_in, "burn_in", 0)
    cluster_every = default_cluster_every(sigma) if cluster_every is None else check_int(cluster_every,
                                                                                         "cluster_every", 0)
    s0 = _initial(init, yy.shape, n_chains, seed)
    obs = np.repeat(np.arange(yy.shape[0], dtype=np.int64), n_chains)
    h = yy / sigma**2
    states = seed_states(seed, s0.shape[0], _STREAM_CHAINS)
    return dict(yy=yy, batched=batched, beta=beta, sigma=sigma, h=h, s0=s0, obs=obs, states=states,
                n_chains=n_chains, n_samples=n_samples, thin=thin, burn_in=burn_in, cluster_every=cluster_every)


def _unbatch(batched, *arrays):
    out = tuple(a if batched else a[0] for a in arrays)
    return out if len(out) > 1 else out[0]


# --------------------------------------------------------------------------- samples and moments
def posterior_samples(y, beta, sigma, n_samples, *, init=None, burn_in=None, thin=1, cluster_every=None, seed=0):
    """Samples of π^y, one chain per observation.

    y: (M, N) or (n, M, N) observations; beta ≥ 0; sigma > 0 (noise std, h = y/σ²);
    n_samples recorded every ``thin`` sweeps after ``burn_in`` sweeps; init: ±1 start
    (shape of y), e.g. the prior sample that generated y. Returns int8 ±1 of shape
    (n_samples, M, N) or (n, n_samples, M, N).
    """
    c = _sampling(y, beta, sigma, init, 1, n_samples, thin, burn_in, cluster_every, seed)
    out = K.run_samples(c["s0"], c["obs"], c["h"], c["beta"], c["burn_in"], c["n_samples"], c["thin"],
                        c["cluster_every"], c["states"])
    return _unbatch(c["batched"], out)


def _moments(y, beta, sigma, probes, *, n_samples, thin, n_blocks, n_chains, init, burn_in, cluster_every, seed):
    """Block means from :func:`K.run_moments`, reshaped to (n, n_chains, n_blocks, ...)."""
    c = _sampling(y, beta, sigma, init, n_chains, n_samples, thin, burn_in, cluster_every, seed)
    n_blocks = check_int(n_blocks, "n_blocks", 2)
    block_len = -(-c["n_samples"] // n_blocks)  # n_samples rounded up to a multiple of n_blocks
    n, M, N = c["yy"].shape
    mblk, pblk = K.run_moments(c["s0"], c["obs"], c["h"], c["beta"], c["burn_in"], n_blocks, block_len, c["thin"],
                               c["cluster_every"], probes, c["states"])
    shape = (n, n_chains, n_blocks)
    return c, mblk.reshape(*shape, M, N), pblk.reshape(*shape, probes.shape[0], M, N)


def _block_inflation(x):
    """Error-bar factor √(1 + 2ρ₁) ≥ 1 per observation for block means x (n, C, B, ...).

    ρ₁: lag-1 autocorrelation of consecutive block means, pooled over chains and all entries
    of one observation (:func:`ising.stats.autocorrelation`), plus 1/B (the bias of ρ̂₁ for
    independent blocks). It corrects batch means for the correlation of adjacent blocks (their
    variance is Σ_t ρ_t ≈ 1 + 2ρ₁ times the block variance when blocks are longer than the
    autocorrelation time); a RuntimeWarning flags a mean ρ₁ > 0.3 (blocks too short).
    """
    n, C, B = x.shape[:3]
    series = np.moveaxis(x, 2, -1).reshape(n, -1, B)
    rho1 = stats.autocorrelation(series, axis=-1, chain_axis=1)[:, 1] + 1.0 / B
    rho1[series.std(axis=-1).max(axis=-1) < 1e-9] = 0.0  # frozen chains (pinned spins): nothing to correct
    if rho1.mean() > 0.3:
        warnings.warn(f"posterior: consecutive blocks are correlated (mean ρ₁ = {rho1.mean():.2f}); error bars "
                      "are approximate: increase n_samples or thin", RuntimeWarning, stacklevel=3)
    return np.sqrt(1.0 + 2.0 * np.clip(rho1, 0.0, None))


_MOMENT_DOC = """
    Sampling keywords: n_samples (measurements per chain, one every ``thin`` sweeps; rounded
    up to a multiple of n_blocks), n_blocks (blocks per chain for the error bars), n_chains
    (independent chains per observation), init (±1 start, shape of y; burn_in then defaults
    to 0), burn_in (sweeps), cluster_every (Wolff-with-field attempt every k sweeps; 0 = none;
    default 4 at σ ≥ 8, else 0), seed.
"""


def posterior_mean(y, beta, sigma, *, n_samples=2000, thin=1, n_blocks=32, n_chains=1, init=None, burn_in=None,
                   cluster_every=None, seed=0):
    """Posterior mean E_{π^y}[S] and its standard error (batch means over blocks).

    y: (M, N) or (n, M, N); returns ``(mean, stderr)``, each of y's shape.
    """
    c, mblk, _ = _moments(y, beta, sigma, np.zeros((0, 2), np.int64), n_samples=n_samples, thin=thin,
                          n_blocks=n_blocks, n_chains=n_chains, init=init, burn_in=burn_in,
                          cluster_every=cluster_every, seed=seed)
    mean, err = stats.batch_means(mblk, mblk.shape[1] * mblk.shape[2], axis=2, chain_axis=1)
    return _unbatch(c["batched"], mean, err * _block_inflation(mblk)[:, None, None])


def smoothed_score(y, beta, sigma, **kw):
    """Smoothed score s_σ(y) = (E_{π^y}[S] − y) / σ² (Tweedie) and its standard error.

    y: (M, N) or (n, M, N); keywords as :func:`posterior_mean`. Returns ``(score, stderr)``.
    """
    mean, err = posterior_mean(y, beta, sigma, **kw)
    s2 = _sigma(sigma) ** 2
    return (mean - np.asarray(y, dtype=np.float64)) / s2, err / s2


def _probes(sites, M, N, name="sites"):
    p = np.asarray(sites)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 1 or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"{name} must be a (row, col) pair or an integer array (P, 2); got {np.asarray(sites)!r}")
    if np.any(p < 0) or np.any(p[:, 0] >= M) or np.any(p[:, 1] >= N):
        raise ValueError(f"{name} must satisfy 0 ≤ row < {M}, 0 ≤ col < {N}; got {p.tolist()}")
    return np.ascontiguousarray(p, dtype=np.int64)


def posterior_covariance(y, beta, sigma, sites, *, n_samples=2000, thin=1, n_blocks=32, n_chains=1, init=None,
                         burn_in=None, cluster_every=None, seed=0):
    """Cov_{π^y}(S_i, S_j) for probe sites i and all sites j, with standard errors.

    y: (M, N) or (n, M, N); sites: (row, col) or an integer array (P, 2). Returns
    ``(cov, stderr)`` of shape (P, M, N) or (n, P, M, N): cov[..., p, r, c] = Cov(S_{sites[p]},
    S_{(r, c)}); jackknife over (chain, block) units, bias-corrected.
    """
    probes = _probes(sites, *_observations(y)[0].shape[1:])
    c, mblk, pblk = _moments(y, beta, sigma, probes, n_samples=n_samples, thin=thin, n_blocks=n_blocks,
                             n_chains=n_chains, init=init, burn_in=burn_in, cluster_every=cluster_every, seed=seed)
    mj = np.broadcast_to(mblk[:, :, :, None], pblk.shape)
    mp = np.broadcast_to(mblk[:, :, :, probes[:, 0], probes[:, 1]][..., None, None], pblk.shape)
    cov, err = stats.jackknife(lambda ss, a, b: ss - a * b, pblk, mj, mp, n_blocks=pblk.shape[1] * pblk.shape[2],
                               axis=2, chain_axis=1)
    mean = lambda x: x.mean(axis=(1, 2), keepdims=True)  # noqa: E731
    influence = pblk - mean(mp) * mj - mean(mj) * mp  # linearised covariance per block
    return _unbatch(c["batched"], cov, err * _block_inflation(influence)[:, None, None, None])


def score_response(y, beta, sigma, site, **kw):
    """Jacobian row of the smoothed score (Eq. 22): ∂ s_σ(y)_i / ∂ y_j for one site i.

    = σ⁻⁴ Cov_{π^y}(S_i, S_j), with −σ⁻² added at j = i. y: (M, N) or (n, M, N); site: (row,
    col). Returns ``(jac, stderr)`` of y's shape; keywords as :func:`posterior_covariance`.
    """
    if np.shape(site) != (2,):
        raise ValueError(f"site must be one (row, col) pair; got {site!r}")
    p = _probes(site, *_observations(y)[0].shape[1:], name="site")[0]
    cov, err = posterior_covariance(y, beta, sigma, p, **kw)
    s4 = _sigma(sigma) ** 4
    jac, err = cov[..., 0, :, :] / s4, err[..., 0, :, :] / s4
    jac[..., p[0], p[1]] -= 1.0 / sigma**2
    return jac, err


posterior_mean.__doc__ += _MOMENT_DOC
posterior_covariance.__doc__ += _MOMENT_DOC


# --------------------------------------------------------------------------- response profile
def _prior_observations(L, beta, sigma, n, seed, batch, prior_algorithm):
    """n prior samples s (one per independent chain) and y = s + σ z for batch ``batch``."""
    sub = int(np.random.SeedSequence([seed, batch]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    s = sample(L, beta, n, algorithm=prior_algorithm, n_chains=n, seed=sub)
    z = np.random.default_rng([seed, batch, 1]).standard_normal(s.shape)
    return s, s + sigma * z


def _profile_batch(s, y, beta, sigma, n_sweeps, thin, n_blocks, cluster_every, r_max, seed, first):
    """ρ per observation (n, r_max+1) and its chain-only jackknife stderr (n, r_max+1)."""
    n, M, N = y.shape
    block_len = -(-n_sweeps // (thin * n_blocks))
    states = seed_states(seed, first + n, _STREAM_CHAINS)[first:]
    ss, q = K.run_profile((s > 0).astype(np.uint8), y / sigma**2, beta, n_blocks, block_len, thin, cluster_every,
                          r_max, states)
    B = n_blocks
    ss_tot = ss.sum(axis=1)
    q_diag = np.einsum("obbr->obr", q)
    q_off = q.sum(axis=(1, 2)) - q_diag.sum(axis=1)  # Σ_{a≠b}
    scale = 1.0 / (sigma**4 * M * N)
    delta0 = np.zeros(r_max + 1)
    delta0[0] = 1.0 / sigma**2

    def rho(ss_sum, off, nb):
        return (ss_sum / nb - off / (nb * (nb - 1))) * scale - delta0

    full = rho(ss_tot, q_off, B)
    # leave block a out: Σ_{b≠c, b,c≠a} q = q_off − 2 Σ_{b≠a} q_ab
    row_off = q.sum(axis=2) - q_diag  # (n, B, R)
    loo = rho(ss_tot[:, None] - ss, q_off[:, None] - 2.0 * row_off, B - 1)
    chain_err = np.sqrt((B - 1) / B * ((loo - loo.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
    return full, chain_err


def response_profile(L, beta, sigma, r_max, *, n_observations=64, n_sweeps=1000, thin=4, n_blocks=8,
                     cluster_every=None, rel_tol=None, tol_r=None, max_observations=4096, seed=0,
                     prior_algorithm="sw", progress=False, details=False):
    """Response profile ρ(r), r = 0..r_max, of the smoothed score, averaged over y ~ p_σ.

    ρ(r) = E_y[ Σ_{j: d∞(i,j) = r} ∂ s_σ(y)_i / ∂ y_j ] = E_y[ Σ_{d∞(i,j)=r} σ⁻⁴ Cov_{π^y}(S_i,
    S_j) ] for r ≥ 1 (signed shell sums, Eq. 22), and ρ(0) = E_y[σ⁻⁴ Var(S_i)] − σ⁻²; every site
    i is a probe (translation invariance: Σ_i over the L×L torus, divided by L²). Each
    observation: s from the prior sampler (``ising.sample`` with ``prior_algorithm``, one
    independent chain each; default Swendsen–Wang: the first record of a Wolff chain measured
    5σ too ordered at β_c, L = 32, in this version),
    y = s + σ z, one posterior chain of ``n_sweeps`` sweeps started at s (exact equilibrium),
    measured every ``thin`` sweeps; shell sums of the Rao–Blackwellised E[S_i S_j] estimator
    (module docstring) by summed-area tables, O(L² r_max) per measurement; the product of
    means as the U-statistic over distinct blocks (``n_blocks`` per chain).

    stderr: standard error over observations (std of the per-observation ρ / √n), which
    holds both the spread over y and the chain noise. With ``rel_tol``, observations are added
    (in rounds) until stderr[tol_r] ≤ rel_tol · |ρ(tol_r)| (tol_r default r_max) or
    ``max_observations`` is reached; n_observations is then the first round's size.

    Returns ``(rho, stderr)``, each (r_max+1,); with ``details=True`` also a dict with
    ``rho_obs`` (n, r_max+1), ``chain_stderr_obs`` (n, r_max+1) (blocked jackknife of each
    observation's chain), the observations ``y`` (n, L, L), ``n_observations`` and ``seconds``.
    """
    L = check_size(L, "L", 3)
    beta, sigma = check_beta(beta), _sigma(sigma)
    r_max = check_int(r_max, "r_max", 0)
    n_first = check_int(n_observations, "n_observations", 2)
    n_sweeps = check_int(n_sweeps, "n_sweeps", 1)
    thin = check_int(thin, "thin", 1)
    n_blocks = check_int(n_blocks, "n_blocks", 3)
    if n_sweeps < thin * n_blocks:
        raise ValueError(f"n_sweeps must be ≥ thin · n_blocks = {thin * n_blocks}; got {n_sweeps}")
    cluster_every = default_cluster_every(sigma) if cluster_every is None else check_int(cluster_every,
                                                                                         "cluster_every", 0)
    seed = check_int(seed, "seed", 0)
    max_obs = check_int(max_observations, "max_observations", n_first)
    if rel_tol is not None and not (isinstance(rel_tol, numbers.Real) and 0.0 < rel_tol < math.inf):
        raise ValueError(f"rel_tol must be a positive real number or None; got {rel_tol!r}")
    tol_r = r_max if tol_r is None else check_int(tol_r, "tol_r", 0)
    if tol_r > r_max:
        raise ValueError(f"tol_r must be in [0, r_max = {r_max}]; got {tol_r}")
    check_choice(prior_algorithm, "prior_algorithm", ALGORITHMS)

    t0 = time.perf_counter()
    bar = _progress(progress, max_obs if rel_tol is not None else n_first)
    rho_obs, chain_err, ys = [], [], []
    n_done, batch, n_next = 0, 0, n_first
    while n_next > 0:
        s, y = _prior_observations(L, beta, sigma, n_next, seed, batch, prior_algorithm)
        r, e = _profile_batch(s, y, beta, sigma, n_sweeps, thin, n_blocks, cluster_every, r_max, seed, n_done)
        rho_obs.append(r)
        chain_err.append(e)
        ys.append(y)
        n_done += n_next
        batch += 1
        if bar is not None:
            bar.update(n_next)
        n_next = 0
        if rel_tol is not None and n_done < max_obs:
            allr = np.concatenate(rho_obs)
            mean, err = allr[:, tol_r].mean(), allr[:, tol_r].std(ddof=1) / math.sqrt(n_done)
            if not err <= rel_tol * abs(mean):
                need = n_done * (err / (rel_tol * abs(mean))) ** 2 if mean != 0 else 2 * n_done
                step = min(max(need - n_done, n_done / 4), n_done)  # at most doubling per round
                nt = get_num_threads()
                n_next = min(int(math.ceil(step / nt)) * nt, max_obs - n_done)
    if bar is not None:
        bar.close()
    allr, alle = np.concatenate(rho_obs), np.concatenate(chain_err)
    rho = allr.mean(axis=0)
    err = allr.std(axis=0, ddof=1) / math.sqrt(allr.shape[0])
    if details:
        return rho, err, dict(rho_obs=allr, chain_stderr_obs=alle, y=np.concatenate(ys),
                              n_observations=allr.shape[0], seconds=time.perf_counter() - t0)
    return rho, err


def _progress(enabled, total):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="obs", leave=False)
