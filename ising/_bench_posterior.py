"""Posterior benchmark (``python -m ising.bench posterior [--quick]``).

Rows, at L = 32, β = β_c, σ = 4 (h = y/σ², y = s + σz from prior samples s):
* heat-bath throughput, spin updates per ns, of the numba sampler (one thread; all threads
  over many observations, with the parallel speed-up; best of 3 interleaved runs, since the
  machine may be shared) and of a plain vectorised NumPy
  checkerboard heat-bath over the same batch of observations, with ratios;
* the wall time of ``response_profile`` for ρ(0..8) to 5% relative error on ρ(6)
  (``--quick``: 25%), prior sampling included, and the time the NumPy heat-bath would need
  for the same spin updates (sweeps only, measurements not counted), with the ratio.
"""
from __future__ import annotations

import math
import time

import numba
import numpy as np

from ising import BETA_C
from ising import _posterior_kernels as K
from ising._rng import seed_states
from ising.posterior import response_profile

L, SIGMA, R_MAX, TOL_R, N_SWEEPS = 32, 4.0, 8, 6, 1000


def numpy_heat_bath(s, h, beta, n_sweeps, rng):
    """Vectorised checkerboard heat-bath of a batch s (n, L, L) float ±1 in fields h (n, L, L)."""
    rr, cc = np.indices(s.shape[1:])
    masks = [(rr + cc) % 2 == p for p in (0, 1)]
    for _ in range(n_sweeps):
        for mask in masks:
            nb = np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2)
            p_up = 0.5 * (1.0 + np.tanh(beta * nb + h))
            s = np.where(mask, np.where(rng.random(s.shape) < p_up, 1.0, -1.0), s)
    return s


def _observations(n, seed=0):
    rng = np.random.default_rng(seed)
    s = np.where(rng.random((n, L, L)) < 0.5, 1, -1)  # throughput does not depend on s
    return s, (s + SIGMA * rng.standard_normal((n, L, L))) / SIGMA**2


def _numba_rates(s, h, n_sweeps, thread_counts, repeats):
    """Spin updates per ns of K.run_samples (n_sweeps heat-bath sweeps per observation) for each
    thread count: the best of ``repeats`` runs, thread counts interleaved (a shared machine)."""
    s0 = (s > 0).astype(np.uint8)
    obs = np.arange(s.shape[0], dtype=np.int64)
    states = seed_states(1, s.shape[0], 0)
    K.run_samples(s0[:2], obs[:2], h, BETA_C, 2, 1, 1, 0, states[:2])  # compile / warm up
    best = dict.fromkeys(thread_counts, math.inf)
    for _ in range(repeats):
        for n_threads in thread_counts:
            numba.set_num_threads(n_threads)
            t = time.perf_counter()
            K.run_samples(s0, obs, h, BETA_C, n_sweeps, 1, 1, 0, states)
            best[n_threads] = min(best[n_threads], time.perf_counter() - t)
    return [s.shape[0] * (n_sweeps + 1) * L * L / best[n] / 1e9 for n in thread_counts]


def run(quick: bool = False) -> None:
    threads = numba.config.NUMBA_NUM_THREADS
    saved = numba.get_num_threads()
    n_obs = 8 * threads
    n_sweeps = 500 if quick else 4000
    s, h = _observations(n_obs)
    try:
        one, many = _numba_rates(s, h, n_sweeps, (1, threads), repeats=2 if quick else 3)
    finally:
        numba.set_num_threads(saved)
    np_sweeps = 20 if quick else 100
    t = time.perf_counter()
    numpy_heat_bath(s.astype(np.float64), h, BETA_C, np_sweeps, np.random.default_rng(0))
    np_rate = n_obs * np_sweeps * L * L / (time.perf_counter() - t) / 1e9

    rel_tol = 0.25 if quick else 0.05
    response_profile(8, BETA_C, SIGMA, 2, n_observations=2, n_sweeps=64)  # compile
    t = time.perf_counter()
    rho, err, d = response_profile(L, BETA_C, SIGMA, R_MAX, n_observations=32, n_sweeps=N_SWEEPS, rel_tol=rel_tol,
                                   tol_r=TOL_R, seed=1, details=True)
    wall = time.perf_counter() - t
    numpy_wall = d["n_observations"] * N_SWEEPS * L * L / np_rate / 1e9

    print(f"\nposterior heat-bath, L = {L}, beta = beta_c, sigma = {SIGMA:g}, {n_obs} observations"
          f"{' (quick)' if quick else ''}")
    print(f"{'measurement':<52}{'value':>12}{'ratio':>22}")
    print(f"{'numba, 1 thread [spin updates / ns]':<52}{one:>12.3f}{one / np_rate:>16.1f} x NumPy")
    print(f"{f'numba, {threads} threads [spin updates / ns]':<52}{many:>12.3f}{many / one:>14.2f} x 1 thread")
    print(f"{'NumPy vectorised checkerboard [spin updates / ns]':<52}{np_rate:>12.4f}{'1':>22}")
    label = f"rho(0..{R_MAX}) to {rel_tol:.0%} on rho({TOL_R}) [s]"
    print(f"{label:<52}{wall:>12.1f}{numpy_wall / wall:>16.1f} x faster than NumPy sweeps")
    print(f"{'  NumPy heat-bath sweeps alone, same updates [s]':<52}{numpy_wall:>12.1f}")
    print(f"{'  observations used':<52}{d['n_observations']:>12d}")
    print(f"{f'  rho({TOL_R}) [1e-3], achieved relative error':<52}{rho[TOL_R] * 1e3:>12.3f}"
          f"{err[TOL_R] / abs(rho[TOL_R]):>22.3f}")
