"""Prior Monte Carlo for the zero-field Ising model on the periodic L×L torus.

Target ``p(s) ∝ exp(β Σ_<ij> s_i s_j)``, s ∈ {±1}^{L×L}, with the bond convention of
:mod:`ising.lattice` (for L = 2 each neighbouring pair is coupled twice). Algorithms:

* ``"wolff"``: single-cluster moves (bond probability p_add = 1 − e^{−2β}).
* ``"sw"``: Swendsen–Wang; clusters labelled by breadth-first growth, bonds drawn lazily
  (each bond tested at most once), every cluster flipped with probability 1/2.
* ``"heatbath"``: sequential heat-bath sweeps in checkerboard order (sites (r + c) even, then
  odd), P(s_i = +1 | rest) = 1 / (1 + e^{−2β h_i}), h_i the sum of the 4 neighbours, from a
  5-entry table.

All three: before every recorded sample the configuration is globally flipped with
probability 1/2 (an exact move, p(s) = p(−s)), so the sign of the magnetisation mixes below
T_c (heat-bath never flips it at large L; Wolff flips the majority domain almost every cluster,
so without this its sign would return nearly deterministically after an even number of them).

Time unit: the **sweep**. Heat-bath: N = L² site updates. Swendsen–Wang: one full cluster
decomposition. Wolff: a fixed number k of clusters, k = round(N / ⟨|C|⟩) with ⟨|C|⟩ the mean
cluster size in the second half of the burn-in (pooled over chains), so a Wolff sweep flips
≈ N spins on average; ``burn_in`` and ``thin`` count sweeps for all three.

Chains start ordered for β ≥ β_c (all spins equal, the sign drawn per chain, so the start
and every later state are distributed symmetrically under s → −s) and from uniformly random
spins for β < β_c. Each chain owns a xoshiro256** stream (:mod:`ising._rng`) and chains run
in parallel (``numba.prange``), so results are bit-for-bit reproducible from ``seed`` whatever
the number of threads.

Defaults (:func:`default_thin`, :func:`default_burn_in`) come from the model
:func:`autocorr_time` of τ = max(τ_int(E), τ_int(m²)) in sweeps, fitted to the measurements
below (``python -c "from ising._bench_prior import tau_table; tau_table()"``: 8 chains per
point, recorded every sweep for ≥ 100 τ or 1.5·10¹⁰ site updates, Sokal window c = 5; entries
τ_int(E) / τ_int(m²) in sweeps, statistical error ≈ 10%; heat-bath L = 128 at β_c reached only
34 τ and is likely low). The model is within a factor 1.5 of max(τ_E, τ_m²) for the cluster
algorithms and 1.8 for heat-bath at every point of the table:

    ==========  =====  ============  ============  ============  ============  ============
    algorithm       L  β/β_c = 0.8   β/β_c = 0.9   β/β_c = 1.0   β/β_c = 1.1   β/β_c = 1.2
    ==========  =====  ============  ============  ============  ============  ============
    wolff           8  0.8 / 0.62    1.17 / 0.94   0.94 / 0.9    1.12 / 1.09   0.88 / 0.9
    wolff          16  0.81 / 0.53   1.14 / 0.7    1.49 / 1.27   1.39 / 1.39   0.88 / 0.89
    wolff          32  0.81 / 0.52   1.04 / 0.5    1.91 / 1.54   1.21 / 1.15   0.83 / 0.82
    wolff          64  0.83 / 0.5    1.1 / 0.47    1.86 / 1.34   1.19 / 1.16   0.87 / 0.87
    wolff         128  0.82 / 0.49   1.12 / 0.53   2.6 / 1.71    1.23 / 1.15   0.88 / 0.85
    sw              8  1.64 / 1.46   2.49 / 2.37   2.53 / 2.53   2.25 / 2.29   1.86 / 1.85
    sw             16  1.46 / 0.97   2.37 / 2.03   3.26 / 3.12   2.18 / 2.08   1.91 / 2.02
    sw             32  1.28 / 0.6    1.75 / 0.93   4.11 / 3.75   2.21 / 2.27   1.91 / 1.96
    sw             64  1.45 / 0.51   1.79 / 0.59   5.19 / 4.46   2.41 / 2.39   1.89 / 1.96
    sw            128  1.44 / 0.49   1.85 / 0.53   5.83 / 5.04   2.23 / 2.3    2.13 / 2.08
    heatbath        8  2.38 / 4.04   4.44 / 5.99   4.89 / 6.79   3.28 / 5.63   1.99 / 4.05
    heatbath       16  2.11 / 6.57   8.27 / 16.3   13 / 26.3     3.26 / 6.7    1.55 / 2.6
    heatbath       32  1.9 / 6.25    5.56 / 28.3   38.8 / 93.7   4.07 / 11.8   1.69 / 2.77
    heatbath       64  1.8 / 6.13    4.87 / 29.3   166 / 521     3.25 / 7.73   1.54 / 2.85
    heatbath      128  1.75 / 7.21   4.12 / 35.5   587 / 1897    3.48 / 9.48   1.63 / 3.09
    ==========  =====  ============  ============  ============  ============  ============
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ising import BETA_C
from ising._rng import next_u64, randint, seed_states, xoshiro_step
from ising.lattice import check_beta, check_choice, check_int, check_positive_int, check_size

__all__ = ["ALGORITHMS", "sample", "Chains", "autocorr_time", "default_thin", "default_burn_in"]

#: Algorithm names accepted by :func:`sample` and :class:`Chains`.
ALGORITHMS = ("wolff", "sw", "heatbath")
_CODE = {name: k for k, name in enumerate(ALGORITHMS)}
_WOLFF, _SW, _HEATBATH = 0, 1, 2
_STREAM = 1  # RNG stream tag of the prior samplers
#: Default number of chains: min(n_samples, this); fixed (not the thread count) so that the
#: default output does not depend on the machine.
DEFAULT_MAX_CHAINS = 32


# --------------------------------------------------------------------------- kernels (one chain)
# Hot loops hold the chain's xoshiro256** state in four scalars (registers), compare raw
# 53-bit outputs with integer thresholds ((r >> 11) < ⌈p·2⁵³⌉ ⟺ uniform() < p exactly) and
# grow clusters breadth-first without data-dependent branches: every neighbour test draws a
# number, the queue slot is written unconditionally and the tail advances only on acceptance
# (a FIFO queue, unlike a stack, lets the CPU overlap the processing of successive sites).
@njit(cache=True)
def _wolff_cluster(s, nbr, thr_add, st, queue):
    """Grow and flip one Wolff cluster of the flat spins ``s (N,)``; returns its size.

    nbr: (N, 4) int32 neighbour table; thr_add = ⌈p_add·2⁵³⌉; queue: int32 (N + 1,) work
    space (each site enters once, plus one slot for rejected writes); st: the chain's RNG state."""
    i = randint(st, s.shape[0])
    x0, x1, x2, x3 = st[0], st[1], st[2], st[3]
    s0 = s[i]
    s[i] = -s0  # flipping on entry also marks the site as taken
    queue[0] = i
    head, tail = 0, 1
    while head < tail:
        j = queue[head]
        head += 1
        for d in range(4):
            k = nbr[j, d]
            r, x0, x1, x2, x3 = xoshiro_step(x0, x1, x2, x3)
            add = np.int64((s[k] == s0) & ((r >> np.uint64(11)) < thr_add))
            queue[tail] = k
            tail += add
            s[k] = s[k] * np.int8(1 - 2 * add)
    st[0], st[1], st[2], st[3] = x0, x1, x2, x3
    return tail


@njit(cache=True)
def _sw_sweep(s, nbr, thr_add, st, queue, w):
    """One Swendsen–Wang sweep of ``s (N,)``; returns the number of spins flipped.

    Clusters are grown breadth-first from each not yet visited site; ``w`` (int8 (N,) work
    space) holds the spins at the start of the sweep, 0 once visited, so a bond (drawn with
    probability p_add between equal spins) is tested at most once."""
    x0, x1, x2, x3 = st[0], st[1], st[2], st[3]
    w[:] = s
    flipped = 0
    for i in range(s.shape[0]):
        if w[i] == 0:
            continue
        r, x0, x1, x2, x3 = xoshiro_step(x0, x1, x2, x3)
        flip = np.int64(r >> np.uint64(63))
        new = w[i] * np.int8(1 - 2 * flip)
        s0 = w[i]
        w[i] = 0
        queue[0] = i
        head, tail = 0, 1
        while head < tail:
            j = queue[head]
            head += 1
            for d in range(4):
                k = nbr[j, d]
                r, x0, x1, x2, x3 = xoshiro_step(x0, x1, x2, x3)
                add = np.int64((w[k] == s0) & ((r >> np.uint64(11)) < thr_add))
                queue[tail] = k
                tail += add
                w[k] = w[k] * np.int8(1 - add)
            s[j] = new
        flipped += flip * tail
    st[0], st[1], st[2], st[3] = x0, x1, x2, x3
    return flipped


@njit(cache=True)
def _heatbath_sweep(s, L, thr_up, st):
    """One checkerboard-ordered heat-bath sweep of ``s (L·L,)``; returns the number of spins changed.

    thr_up[(h + 4) // 2] = ⌈P(s_i = +1 | neighbour sum h)·2⁵³⌉, h ∈ {−4, −2, 0, 2, 4}."""
    x0, x1, x2, x3 = st[0], st[1], st[2], st[3]
    changed = 0
    for parity in range(2):
        for r in range(L):
            row = r * L
            up = ((r + L - 1) % L) * L
            dn = ((r + 1) % L) * L
            for c in range((r + parity) & 1, L, 2):
                cl = c - 1 if c > 0 else L - 1
                cr = c + 1 if c < L - 1 else 0
                h = s[up + c] + s[dn + c] + s[row + cl] + s[row + cr]
                u, x0, x1, x2, x3 = xoshiro_step(x0, x1, x2, x3)
                new = np.int8(1) if (u >> np.uint64(11)) < thr_up[(h + 4) >> 1] else np.int8(-1)
                changed += new != s[row + c]
                s[row + c] = new
    st[0], st[1], st[2], st[3] = x0, x1, x2, x3
    return changed


@njit(cache=True)
def _energy(s, L):
    """Energy per site of the flat configuration ``s (L·L,)``."""
    acc = 0
    for r in range(L):
        row = s[r * L:(r + 1) * L]
        dn = s[((r + 1) % L) * L:((r + 1) % L + 1) * L]
        a = 0
        for c in range(L - 1):
            a += np.int64(row[c]) * (np.int64(row[c + 1]) + np.int64(dn[c]))
        acc += a + np.int64(row[L - 1]) * (np.int64(row[0]) + np.int64(dn[L - 1]))
    return -acc / (L * L)


@njit(cache=True)
def _sweep(alg, s, L, nbr, thr_add, thr_up, st, queue, w, k_wolff):
    """One sweep (Wolff: k_wolff clusters); returns the number of spins flipped."""
    if alg == _WOLFF:
        flips = 0
        for _ in range(k_wolff):
            flips += _wolff_cluster(s, nbr, thr_add, st, queue)
        return flips
    if alg == _SW:
        return _sw_sweep(s, nbr, thr_add, st, queue, w)
    return _heatbath_sweep(s, L, thr_up, st)


# --------------------------------------------------------------------------- kernels (all chains)
@njit(parallel=True, cache=True)
def _start(spins, states, ordered):
    """Ordered start (all spins equal, the sign drawn per chain) or uniformly random spins."""
    for c in prange(spins.shape[0]):
        st = states[c]
        if ordered:
            spins[c, :] = 1 if (next_u64(st) >> np.uint64(63)) != 0 else -1
        else:
            for i in range(spins.shape[1]):
                spins[c, i] = 1 if (next_u64(st) >> np.uint64(63)) != 0 else -1


@njit(parallel=True, cache=True)
def _burn_in(alg, spins, states, L, nbr, thr_add, thr_up, n_sweeps, stats):
    """n_sweeps sweeps per chain; Wolff: clusters until ≥ n_sweeps·N spins are flipped, and
    stats[c] = (clusters, flips) over the second half of those flips."""
    n_chains, N = spins.shape
    for c in prange(n_chains):
        s, st = spins[c], states[c]
        queue = np.empty(N + 1, np.int32)
        w = np.empty(N, np.int8)
        if alg == _WOLFF:
            target = n_sweeps * N
            done = 0
            while done < target:
                size = _wolff_cluster(s, nbr, thr_add, st, queue)
                done += size
                if 2 * done > target:
                    stats[c, 0] += 1
                    stats[c, 1] += size
        else:
            for _ in range(n_sweeps):
                _sweep(alg, s, L, nbr, thr_add, thr_up, st, queue, w, 1)


@njit(parallel=True, cache=True)
def _produce(alg, spins, states, L, nbr, thr_add, thr_up, k_wolff, n_rec, thin, out_e, out_m, out_s, flips):
    """Chain c records n_rec[c] times, every ``thin`` sweeps: energy per site into out_e[c, r],
    magnetisation per site into out_m[c, r] if out_m has columns, the configuration into
    out_s[r·n_chains + c] if out_s has rows; flips[c] += spins flipped."""
    n_chains, N = spins.shape
    for c in prange(n_chains):
        s, st = spins[c], states[c]
        queue = np.empty(N + 1, np.int32)
        w = np.empty(N, np.int8)
        nf = 0
        for r in range(n_rec[c]):
            for _ in range(thin):
                nf += _sweep(alg, s, L, nbr, thr_add, thr_up, st, queue, w, k_wolff)
            if (next_u64(st) >> np.uint64(63)) != 0:  # global flip, an exact move
                for i in range(N):
                    s[i] = -s[i]
            out_e[c, r] = _energy(s, L)
            if out_m.shape[1] > 0:
                m = 0
                for i in range(N):
                    m += s[i]
                out_m[c, r] = m / N
            if out_s.shape[0] > 0:
                out_s[r * n_chains + c] = s
        flips[c] += nf


def _neighbours(L: int) -> np.ndarray:
    """Flat neighbour table (L·L, 4) int32: right, down, left, up."""
    r, c = np.divmod(np.arange(L * L), L)
    return np.stack(
        [r * L + (c + 1) % L, ((r + 1) % L) * L + c, r * L + (c - 1) % L, ((r - 1) % L) * L + c], axis=1
    ).astype(np.int32)


# --------------------------------------------------------------------------- chains
class Chains:
    """``n_chains`` independent Markov chains for the L×L torus at coupling β.

    Attributes: ``spins`` (n_chains, L·L) int8 current configurations (row-major sites);
    ``states`` (n_chains, 4) uint64 RNG states; ``clusters_per_sweep`` (Wolff: clusters per
    sweep, set by :meth:`burn_in`; a caller may set it, e.g. to 1 to count in clusters);
    ``flips``: spins flipped so far by :meth:`energies` / :meth:`samples`.

    Example (energy time series for autocorrelation analysis)::

        ch = Chains(64, BETA_C, 4, algorithm="sw", seed=1).burn_in(100)
        e = ch.energies(10_000)       # (4, 10000), one record per sweep
    """

    def __init__(self, L, beta, n_chains=1, *, algorithm="wolff", seed=0):
        self.L = check_size(L)
        self.beta = check_beta(beta)
        self.algorithm = check_choice(algorithm, "algorithm", ALGORITHMS)
        n_chains = check_positive_int(n_chains, "n_chains")
        self.states = seed_states(check_int(seed, "seed", 0), n_chains, _STREAM)
        self.spins = np.empty((n_chains, self.L * self.L), dtype=np.int8)
        _start(self.spins, self.states, self.beta >= BETA_C)
        self.clusters_per_sweep = None
        self.flips = 0
        self._nbr = _neighbours(self.L)
        p_add = -math.expm1(-2.0 * self.beta)
        p_up = 0.5 * (1.0 + np.tanh(self.beta * np.arange(-4.0, 5.0, 2.0)))  # 1 / (1 + e^{−2βh})
        self._thr_add = np.uint64(math.ceil(p_add * 2.0**53))
        self._thr_up = np.ceil(p_up * 2.0**53).astype(np.uint64)

    @property
    def n_chains(self) -> int:
        return self.spins.shape[0]

    def _args(self):
        return _CODE[self.algorithm], self.spins, self.states, self.L, self._nbr, self._thr_add, self._thr_up

    def burn_in(self, n_sweeps: int) -> "Chains":
        """Advance every chain ``n_sweeps`` sweeps (Wolff: until n_sweeps·N spins have been
        flipped, then set ``clusters_per_sweep``; needs n_sweeps ≥ 1). Returns self."""
        name = "burn_in (for algorithm='wolff', which calibrates its sweep in the burn-in)"
        n_sweeps = check_int(n_sweeps, name, 1) if self.algorithm == "wolff" else check_int(n_sweeps, "burn_in", 0)
        stats = np.zeros((self.n_chains, 2), dtype=np.int64)
        _burn_in(*self._args(), n_sweeps, stats)
        if self.algorithm == "wolff":
            clusters, flipped = stats.sum(axis=0)
            self.clusters_per_sweep = max(1, round(self.L * self.L * clusters / flipped))
            # Stopping on a flip count is a state-dependent stopping time (it favours states
            # with large clusters, i.e. ordered ones); relax that bias with a fixed number of
            # clusters, which is an ordinary Markov run.
            self._run(np.full(self.n_chains, 1, dtype=np.int64), n_sweeps, False,
                      np.empty((0, self.L * self.L), dtype=np.int8))
        return self

    def _run(self, n_rec, thin, magnetization, out_s):
        if self.algorithm == "wolff" and self.clusters_per_sweep is None:
            raise ValueError("run burn_in() first (or set clusters_per_sweep) for algorithm='wolff'")
        thin = check_positive_int(thin, "thin")
        out_e = np.full((self.n_chains, int(n_rec.max())), np.nan)
        out_m = np.full((self.n_chains, out_e.shape[1] if magnetization else 0), np.nan)
        flips = np.zeros(self.n_chains, dtype=np.int64)
        _produce(*self._args(), self.clusters_per_sweep or 1, n_rec, thin, out_e, out_m, out_s, flips)
        self.flips += int(flips.sum())
        return out_e, out_m

    def energies(self, n_records: int, thin: int = 1, *, magnetization: bool = False):
        """Energy per site recorded every ``thin`` sweeps: float64 (n_chains, n_records); with
        ``magnetization=True`` a pair (energy, magnetisation per site), both of that shape."""
        n_rec = np.full(self.n_chains, check_positive_int(n_records, "n_records"), dtype=np.int64)
        e, m = self._run(n_rec, thin, magnetization, np.empty((0, self.L * self.L), dtype=np.int8))
        return (e, m) if magnetization else e

    def samples(self, n_samples: int, thin: int = 1) -> np.ndarray:
        """n_samples configurations, each chain recording every ``thin`` sweeps; int8
        (n_samples, L, L), ordered record by record (sample k is record k // n_chains of
        chain k % n_chains), so chain c records ⌈(n_samples − c) / n_chains⌉ times."""
        n = check_positive_int(n_samples, "n_samples")
        C = self.n_chains
        n_rec = (n - np.arange(C) + C - 1) // C
        out_s = np.empty((n, self.L * self.L), dtype=np.int8)
        self._run(n_rec, thin, False, out_s)
        return out_s.reshape(n, self.L, self.L)


# --------------------------------------------------------------------------- defaults
# algorithm -> (a, b, z, c): τ = a + b ℓ^z sweeps, ℓ = 1 / (1/L + 1/(c ξ)); minimax fit of
# log τ over the table in the module docstring.
_TAU_MODEL = {
    "wolff": (0.950, 0.0056, 1.21, 0.576),
    "sw": (0.778, 0.932, 0.34, 0.500),
    "heatbath": (1.200, 0.1228, 1.96, 3.276),
}


def _correlation_length(beta: float) -> float:
    """Exponential correlation length of the infinite lattice (inf at β_c, 0 at β = 0)."""
    if beta == 0.0:
        return 0.0
    dual = -0.5 * math.log(math.tanh(beta))  # β* with sinh 2β sinh 2β* = 1
    gap = 2.0 * abs(beta - dual) * (1.0 if beta < BETA_C else 2.0)
    return math.inf if gap == 0.0 else 1.0 / gap


def autocorr_time(L, beta, algorithm="wolff") -> float:
    """Model of max(τ_int(E), τ_int(m²)) in sweeps: ``a + b ℓ^z`` with the effective size
    ℓ = 1 / (1/L + 1/(c ξ(β))), ξ the infinite-lattice correlation length; (a, b, z, c) per
    algorithm fitted to the table in the module docstring."""
    L, beta = check_size(L), check_beta(beta)
    a, b, z, c = _TAU_MODEL[check_choice(algorithm, "algorithm", ALGORITHMS)]
    xi = _correlation_length(beta)
    ell = 0.0 if xi == 0.0 else 1.0 / (1.0 / L + 1.0 / (c * xi))
    return a + b * ell**z


def default_thin(L, beta, algorithm="wolff") -> int:
    """Default thinning in sweeps: ⌈2 τ⌉ with τ = :func:`autocorr_time` (successive samples
    then have autocorrelation ≲ e⁻²)."""
    return max(1, math.ceil(2.0 * autocorr_time(L, beta, algorithm)))


def default_burn_in(L, beta, algorithm="wolff") -> int:
    """Default burn-in in sweeps: max(20, 10 × :func:`default_thin`) (≈ 20 τ)."""
    return max(20, 10 * default_thin(L, beta, algorithm))


# --------------------------------------------------------------------------- public sampler
def sample(L, beta, n_samples, *, algorithm="wolff", burn_in=None, thin=None, n_chains=None, seed=0):
    """Samples of the zero-field Ising prior on the L×L torus.

    L: integer ≥ 2; beta: coupling ≥ 0 (β_c = ``ising.BETA_C``); n_samples ≥ 1;
    algorithm: "wolff", "sw" or "heatbath"; burn_in, thin: sweeps (see module docstring;
    defaults :func:`default_burn_in`, :func:`default_thin`); n_chains: independent chains,
    1..n_samples (default min(n_samples, 32)); seed: integer ≥ 0.
    Each chain is burnt in, then records every ``thin`` sweeps; sample k is record k // n_chains
    of chain k % n_chains. Returns int8 ±1 of shape (n_samples, L, L).
    """
    L, beta = check_size(L), check_beta(beta)
    n = check_positive_int(n_samples, "n_samples")
    algorithm = check_choice(algorithm, "algorithm", ALGORITHMS)
    burn_in = default_burn_in(L, beta, algorithm) if burn_in is None else burn_in
    thin = default_thin(L, beta, algorithm) if thin is None else check_positive_int(thin, "thin")
    if n_chains is None:
        n_chains = min(n, DEFAULT_MAX_CHAINS)
    elif check_positive_int(n_chains, "n_chains") > n:
        raise ValueError(f"n_chains must be an integer in [1, n_samples={n}]; got {n_chains!r}")
    chains = Chains(L, beta, n_chains, algorithm=algorithm, seed=seed).burn_in(burn_in)
    return chains.samples(n, thin)
