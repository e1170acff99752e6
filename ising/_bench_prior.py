"""Benchmark of the prior samplers (``python -m ising.bench prior [--quick]``).

At β_c, for L ∈ {32, 64, 128}, on one thread, each algorithm runs one chain (after its default
burn-in) that records the
energy per site after every natural unit (Wolff: one cluster; Swendsen–Wang and heat-bath:
one sweep). Reported: spin flips per ns (Wolff: cluster flips; SW, heat-bath: site updates,
N per sweep; ours include the energy measurement after every unit, mcising's are timed
without measurements), τ_int(E) in that unit and in sweeps (N site updates or flips), and
effectively independent energy samples per second, n / (2 τ_int) / time, timed in CPU seconds
of the process (robust on a shared machine) including the energy measurement after every unit.
Baselines timed in the same run: a vectorised NumPy checkerboard Metropolis sampler (one
chain like every other row, and, for reference, a batch of 8 chains vectorised together; its
τ_int(E) is pooled over the 8 chains, cold start, first 20% dropped) and, when
importable, ``mcising``'s Wolff (Rust). Last, chains per second of many Wolff chains on 1 and 2
threads (wall clock: on a machine shared with other jobs the second thread may find no core).

``tau_table()`` measures the autocorrelation times behind the samplers' default thinning.
"""
from __future__ import annotations

import time

import numpy as np
import numba

from ising import BETA_C, stats
from ising.samplers import ALGORITHMS, Chains, autocorr_time, default_burn_in


# --------------------------------------------------------------------------- baselines
def numpy_metropolis(L, beta, n_sweeps, n_chains=1, seed=0):
    """Vectorised NumPy checkerboard Metropolis (a batch of chains, from a cold start).

    Returns the energy per site after every sweep, float64 (n_chains, n_sweeps)."""
    rng = np.random.default_rng(seed)
    s = np.ones((n_chains, L, L), dtype=np.int8)
    r, c = np.indices((L, L))
    masks = [(r + c) % 2 == p for p in (0, 1)]
    accept = np.exp(-2.0 * beta * np.arange(-4, 5))  # P(accept) for s_i·h = −4..4
    out = np.empty((n_chains, n_sweeps))
    for t in range(n_sweeps):
        for mask in masks:
            h = np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2)
            flip = mask & (rng.random(s.shape) < accept[(s * h) + 4])
            s = np.where(flip, -s, s)
        out[:, t] = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum(axis=(1, 2)) / (L * L)
    return out


def _mcising_wolff(L, beta, n_clusters, seed=0):
    """mcising's Wolff (its Rust core, one thread): energy per site after every cluster, the
    CPU time of that run, and (flips, CPU time) of as many clusters without measurements; or
    None when mcising is not importable."""
    try:
        from mcising._core import IsingSimulation
    except ImportError:
        return None
    sim = IsingSimulation(L, 1.0, 0.0, 0.0, 0.0, seed, "wolff", "square")
    sim.sweep(max(100, n_clusters // 10), temperature=1.0 / beta)
    t0 = time.process_time()
    res = sim.production_sweeps(n_clusters, 1, temperature=1.0 / beta, store_configs=False)
    dt = time.process_time() - t0
    t0 = time.process_time()
    flips = sim.sweep(n_clusters, temperature=1.0 / beta)[0]
    return np.asarray(res["energies"]), dt, flips, time.process_time() - t0


# --------------------------------------------------------------------------- measurements
def _row(name, L, unit, n, dt, flips, tau_unit, sweeps_per_unit):
    return dict(name=name, L=L, unit=unit, flips_per_ns=flips / dt / 1e9, tau_unit=tau_unit,
                tau_sweeps=tau_unit * sweeps_per_unit, indep_per_s=n / (2.0 * tau_unit) / dt)


def _measure(alg, L, n_units, seed=0):
    ch = Chains(L, BETA_C, 1, algorithm=alg, seed=seed).burn_in(default_burn_in(L, BETA_C, alg))
    if alg == "wolff":
        ch.clusters_per_sweep = 1
    ch.energies(max(10, n_units // 100))  # warm-up, also compiles
    ch.flips = 0
    t0 = time.process_time()
    e = ch.energies(n_units)
    dt = time.process_time() - t0
    tau = stats.integrated_autocorr_time(e[0])
    N = L * L
    if alg == "wolff":
        return _row(alg, L, "cluster", n_units, dt, ch.flips, tau, ch.flips / n_units / N)
    return _row(alg, L, "sweep", n_units, dt, n_units * N, tau, 1.0)


def _chains_per_second(L, n_chains, n_sweeps, threads):
    """Wall-clock rate of n_chains Wolff chains of n_sweeps sweeps each on ``threads`` threads."""
    numba.set_num_threads(threads)
    ch = Chains(L, BETA_C, n_chains, algorithm="wolff", seed=3).burn_in(n_sweeps)
    ch.energies(2)  # starts the thread pool
    t0 = time.perf_counter()
    ch.energies(n_sweeps)
    return n_chains / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    """Run the benchmark and print its table; returns the rows."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    Ls = (16,) if quick else (32, 64, 128)
    rows, base, peer = [], {}, {}
    for L in Ls:
        N = L * L
        budget = 2e6 if quick else 4e8  # spin flips per measurement
        for alg in ALGORITHMS:
            if alg == "wolff":
                n = int(budget / (0.4 * N))
            elif alg == "sw":
                n = int(budget / N)
            else:
                n = int(max(budget / N, 50 * autocorr_time(L, BETA_C, "heatbath")))
            rows.append(_measure(alg, L, n))
        # τ from a batch of 8 chains (pooled, first 20% dropped); speed of one chain and of the batch
        n_np = 400 if quick else max(4000, 80 * L)
        t0 = time.process_time()
        e = numpy_metropolis(L, BETA_C, n_np, n_chains=8)[:, n_np // 5:]
        dt8 = (time.process_time() - t0) * 0.8
        tau = stats.integrated_autocorr_time(e)
        n1 = n_np // 8
        t0 = time.process_time()
        numpy_metropolis(L, BETA_C, n1)
        dt1 = time.process_time() - t0
        base[L] = _row("numpy metropolis", L, "sweep", n1, dt1, n1 * N, tau, 1.0)
        rows += [base[L], _row("  same, 8 chains", L, "sweep", e.size, dt8, e.size * N, tau, 1.0)]
        mc = _mcising_wolff(L, BETA_C, int(budget / (0.4 * N)))
        if mc is not None:
            e, dt, flips, dt_flips = mc
            tau = stats.integrated_autocorr_time(e)
            peer[L] = _row("mcising wolff", L, "cluster", e.size, dt, flips * dt / dt_flips, tau, flips / e.size / N)
            rows.append(peer[L])
    print(f"\nprior samplers at β_c, one thread (CPU time); {'quick' if quick else 'full'} run")
    print(f"{'algorithm':<18}{'L':>5}{'unit':>9}{'flips/ns':>10}{'τ_int(E)':>10}{'τ [sweeps]':>11}"
          f"{'indep/s':>11}{'× numpy':>9}{'× mcising':>10}")
    for r in rows:
        vs_np = r["indep_per_s"] / base[r["L"]]["indep_per_s"]
        vs_mc = f"{r['indep_per_s'] / peer[r['L']]['indep_per_s']:10.2f}" if r["L"] in peer else f"{'-':>10}"
        print(f"{r['name']:<18}{r['L']:>5}{r['unit']:>9}{r['flips_per_ns']:>10.4f}{r['tau_unit']:>10.2f}"
              f"{r['tau_sweeps']:>11.2f}{r['indep_per_s']:>11.1f}{vs_np:>9.1f}{vs_mc}")
    if not peer:
        print("mcising not importable: its column is skipped")
    L, n_chains, n_sweeps = (16, 8, 500) if quick else (64, 16, 400)
    rates = [_chains_per_second(L, n_chains, n_sweeps, t) for t in (1, min(2, threads))]
    print(f"parallel chains (Wolff, L={L}, {n_sweeps} sweeps each, wall time): "
          f"{rates[0]:.2f} chains/s on 1 thread, {rates[1]:.2f} on {min(2, threads)} (× {rates[1] / rates[0]:.2f})")
    numba.set_num_threads(threads)
    return rows


# --------------------------------------------------------------------------- τ_int table
def tau_table(Ls=(8, 16, 32, 64, 128), ratios=(0.8, 0.9, 1.0, 1.1, 1.2), n_chains=8, max_updates=1.5e10):
    """τ_int (sweeps) of E and m² per algorithm, L and β/β_c; chains burnt in, then recorded
    every sweep for ≥ 100 τ (capped at ``max_updates`` site updates in all). Prints one line
    per point and returns {(algorithm, L, ratio): (τ_E, τ_m², n_records)}."""
    out = {}
    for alg in ALGORITHMS:
        for L in Ls:
            for q in ratios:
                beta = q * BETA_C
                ch = Chains(L, beta, n_chains, algorithm=alg, seed=7).burn_in(1000)
                n = 2000
                es, ms = [], []
                while True:
                    e, m = ch.energies(n, magnetization=True)
                    es.append(e)
                    ms.append(m)
                    E, M = np.concatenate(es, axis=1), np.concatenate(ms, axis=1)
                    te = stats.integrated_autocorr_time(E)
                    tm = stats.integrated_autocorr_time(M**2)
                    total = E.shape[1]
                    if total >= 100 * max(te, tm) or total * n_chains * L * L * 2 > max_updates:
                        break
                    n = total
                out[alg, L, q] = (te, tm, total)
                print(f"{alg:<9} L={L:<4} β/β_c={q:<4} τ_E={te:8.2f} τ_m²={tm:8.2f}  n={total}", flush=True)
    return out
