"""Numba kernels of the noisy-posterior sampler (see :mod:`ising.posterior` for the maths).

Inside the kernels a configuration is ``uint8`` (M, N) with 1 for spin +1 and 0 for −1, so
the number of up neighbours k = 0..4 indexes precomputed per-site tables directly:

* ``thr[r, c, k] = round(2³² · P(s = +1 | k))``, ``P = 1 / (1 + exp(−2 a))``,
  ``a = β (2k − 4) + h[r, c]``: a heat-bath update is one table lookup and one 32-bit
  uniform (two updates per 64-bit xoshiro output; probabilities are quantised to 2⁻³²);
* ``mtab[r, c, k] = tanh(a) = E[S_i | neighbours]``, the Rao–Blackwellised spin;
* ``t3[r, c, k3] = tanh(β (2 k3 − 3) + h[r, c])``, k3 = 0..3 up spins among three of the
  neighbours: the field on i from all but one neighbour j, for the pair estimator
  ``E[S_i S_j | all but i, j] = (tanh β + t) / (1 + t tanh β)``, t = t3_i · t3_j (exact: the
  pair (i, j) is a two-spin Ising model with coupling β in those fields).

Every chain has its own RNG state row, so results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ising._rng import next_u64, randint, uniform

_TWO32 = 4294967296.0
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True)
def field_tables(h, beta, thr, mtab, t3):
    """Fill ``thr`` (M, N, 5) uint64, ``mtab`` (M, N, 5) and ``t3`` (M, N, 4) for the field h (M, N)."""
    M, N = h.shape
    for r in range(M):
        for c in range(N):
            for k in range(5):
                t = np.tanh(beta * (2 * k - 4) + h[r, c])
                mtab[r, c, k] = t
                thr[r, c, k] = np.uint64(np.rint(0.5 * (1.0 + t) * _TWO32))
            for k in range(4):
                t3[r, c, k] = np.tanh(beta * (2 * k - 3) + h[r, c])


@njit(inline="always", cache=True)
def _up_neighbours(s, r, c, M, N):
    ru = r - 1 if r > 0 else M - 1
    rd = r + 1 if r < M - 1 else 0
    cl = c - 1 if c > 0 else N - 1
    cr = c + 1 if c < N - 1 else 0
    return np.int64(s[ru, c]) + s[rd, c] + s[r, cl] + s[r, cr]


@njit(cache=True)
def heat_bath_sweep(s, thr, st):
    """One checkerboard-ordered heat-bath sweep (all sites once) of s (M, N) uint8 in place.

    Sites are visited sequentially (sublattice (r + c) even, then odd), so the update is exact
    for any M, N (odd sizes included).
    """
    M, N = s.shape
    for parity in range(2):
        for r in range(M):
            ru = r - 1 if r > 0 else M - 1
            rd = r + 1 if r < M - 1 else 0
            c0 = (r + parity) & 1
            # column 0 (wraps left), then interior pairs (no wrap, two updates per 64-bit
            # random number), then the rest (the right edge wraps)
            c = c0
            if c == 0:
                k = np.int64(s[ru, 0]) + s[rd, 0] + s[r, N - 1] + s[r, 1 % N]
                u = next_u64(st) & _LOW32
                s[r, 0] = np.uint8(1) if u < thr[r, 0, k] else np.uint8(0)
                c = 2
            while c + 2 < N - 1:
                x = next_u64(st)
                k = np.int64(s[ru, c]) + s[rd, c] + s[r, c - 1] + s[r, c + 1]
                s[r, c] = np.uint8(1) if (x & _LOW32) < thr[r, c, k] else np.uint8(0)
                c2 = c + 2
                k = np.int64(s[ru, c2]) + s[rd, c2] + s[r, c2 - 1] + s[r, c2 + 1]
                s[r, c2] = np.uint8(1) if (x >> np.uint64(32)) < thr[r, c2, k] else np.uint8(0)
                c += 4
            while c < N:
                k = _up_neighbours(s, r, c, M, N)
                u = next_u64(st) & _LOW32
                s[r, c] = np.uint8(1) if u < thr[r, c, k] else np.uint8(0)
                c += 2


@njit(cache=True)
def wolff_field_move(s, h, p_add, st, members, stamp, tag):
    """One Wolff cluster attempt with the field; exact for π ∝ exp(β Σ s_i s_j + Σ h_i s_i).

    The cluster grows over aligned neighbours with probability p_add = 1 − exp(−2β) (the
    zero-field rule) and is flipped with probability min(1, exp(−2 Σ_{i∈C} h_i s_i)).
    members: int64 (M·N,) scratch; stamp: int64 (M, N) marks, ``tag`` this attempt's mark.
    Returns the cluster size if flipped, else 0.
    """
    M, N = s.shape
    i0 = randint(st, M * N)
    r0, c0 = i0 // N, i0 % N
    v = s[r0, c0]
    stamp[r0, c0] = tag
    members[0] = i0
    n = 1
    head = 0
    field = 0.0
    while head < n:
        i = members[head]
        head += 1
        r, c = i // N, i % N
        field += h[r, c]
        for d in range(4):
            if d == 0:
                rr, cc = (r - 1 if r > 0 else M - 1), c
            elif d == 1:
                rr, cc = (r + 1 if r < M - 1 else 0), c
            elif d == 2:
                rr, cc = r, (c - 1 if c > 0 else N - 1)
            else:
                rr, cc = r, (c + 1 if c < N - 1 else 0)
            if s[rr, cc] == v and stamp[rr, cc] != tag and uniform(st) < p_add:
                stamp[rr, cc] = tag
                members[n] = rr * N + cc
                n += 1
    delta = 2.0 * field * (1.0 if v == 1 else -1.0)  # −Δ log π of the flip = 2 Σ h_i s_i
    if delta > 0.0 and uniform(st) >= np.exp(-delta):
        return 0
    nv = np.uint8(1 - v)
    for a in range(n):
        i = members[a]
        s[i // N, i % N] = nv
    return n


@njit(cache=True)
def _advance(s, thr, h, p_add, st, n_sweeps, cluster_every, t, members, stamp):
    """n_sweeps heat-bath sweeps; a Wolff attempt after every ``cluster_every``-th sweep of the
    chain (global sweep counter t, returned updated); cluster_every = 0: none."""
    for _ in range(n_sweeps):
        heat_bath_sweep(s, thr, st)
        t += 1
        if cluster_every > 0 and t % cluster_every == 0:
            wolff_field_move(s, h, p_add, st, members, stamp, t)
    return t


@njit(cache=True)
def _chain_tables(h, beta):
    M, N = h.shape
    thr = np.empty((M, N, 5), dtype=np.uint64)
    mtab = np.empty((M, N, 5), dtype=np.float64)
    t3 = np.empty((M, N, 4), dtype=np.float64)
    field_tables(h, beta, thr, mtab, t3)
    return thr, mtab, t3


@njit(parallel=True, cache=True)
def run_samples(s, obs, h, beta, n_burn, n_samples, thin, cluster_every, states):
    """Chains c = 0..C−1 (start s[c] (M, N) uint8, field h[obs[c]]): n_burn sweeps, then
    n_samples recorded every ``thin`` sweeps. Returns int8 ±1 (C, n_samples, M, N)."""
    C, M, N = s.shape
    out = np.empty((C, n_samples, M, N), dtype=np.int8)
    p_add = 1.0 - np.exp(-2.0 * beta)
    for ch in prange(C):
        st = states[ch].copy()  # a private copy: rows of one cache line would be falsely shared
        hc = h[obs[ch]]
        thr, _, _ = _chain_tables(hc, beta)
        sc = s[ch].copy()
        members = np.empty(M * N, dtype=np.int64)
        stamp = np.zeros((M, N), dtype=np.int64)
        t = _advance(sc, thr, hc, p_add, st, n_burn, cluster_every, 0, members, stamp)
        for k in range(n_samples):
            t = _advance(sc, thr, hc, p_add, st, thin, cluster_every, t, members, stamp)
            for r in range(M):
                for c in range(N):
                    out[ch, k, r, c] = np.int8(2 * np.int64(sc[r, c]) - 1)
    return out


@njit(inline="always", cache=True)
def _rb_field(s, mtab, m, k):
    """k[r, c] = up neighbours, m[r, c] = E[S | neighbours] = tanh(β Σ_nb s + h) of s."""
    M, N = s.shape
    for r in range(M):
        for c in range(N):
            kk = _up_neighbours(s, r, c, M, N)
            k[r, c] = kk
            m[r, c] = mtab[r, c, kk]


@njit(inline="always", cache=True)
def _pair(s, k, t3, tau, ri, ci, rj, cj):
    """E[S_i S_j | all spins but i, j] for neighbours i, j (module docstring)."""
    t = t3[ri, ci, k[ri, ci] - s[rj, cj]] * t3[rj, cj, k[rj, cj] - s[ri, ci]]
    return (tau + t) / (1.0 + tau * t)


@njit(parallel=True, cache=True)
def run_moments(s, obs, h, beta, n_burn, n_blocks, block_len, thin, cluster_every, probes, states):
    """Block means of the Rao–Blackwellised estimators, one sample every ``thin`` sweeps.

    Returns ``mblk`` (C, n_blocks, M, N): means of m_j = tanh(β Σ_nb s + h_j) (→ E[S_j]);
    ``pblk`` (C, n_blocks, P, M, N): means of the estimator of E[S_p S_j] for probe
    p = probes[q] = (row, col): 1 at j = p; the pair expectation for j a neighbour of p;
    m_p m_j otherwise (S_p, S_j conditionally independent given the rest).
    """
    C, M, N = s.shape
    P = probes.shape[0]
    mblk = np.zeros((C, n_blocks, M, N))
    pblk = np.zeros((C, n_blocks, P, M, N))
    p_add = 1.0 - np.exp(-2.0 * beta)
    tau = np.tanh(beta)
    inv = 1.0 / block_len
    for ch in prange(C):
        st = states[ch].copy()  # a private copy: rows of one cache line would be falsely shared
        hc = h[obs[ch]]
        thr, mtab, t3 = _chain_tables(hc, beta)
        sc = s[ch].copy()
        members = np.empty(M * N, dtype=np.int64)
        stamp = np.zeros((M, N), dtype=np.int64)
        m = np.empty((M, N))
        kn = np.empty((M, N), dtype=np.int64)
        t = _advance(sc, thr, hc, p_add, st, n_burn, cluster_every, 0, members, stamp)
        for b in range(n_blocks):
            for _ in range(block_len):
                t = _advance(sc, thr, hc, p_add, st, thin, cluster_every, t, members, stamp)
                _rb_field(sc, mtab, m, kn)
                for r in range(M):
                    for c in range(N):
                        mblk[ch, b, r, c] += m[r, c] * inv
                for q in range(P):
                    pr, pc = probes[q, 0], probes[q, 1]
                    mp = m[pr, pc] * inv
                    for r in range(M):
                        for c in range(N):
                            pblk[ch, b, q, r, c] += mp * m[r, c]
                    ru = pr - 1 if pr > 0 else M - 1
                    rd = pr + 1 if pr < M - 1 else 0
                    cl = pc - 1 if pc > 0 else N - 1
                    cr = pc + 1 if pc < N - 1 else 0
                    for d in range(4):
                        rr, cc = (ru, pc) if d == 0 else (rd, pc) if d == 1 else (pr, cl) if d == 2 else (pr, cr)
                        pair = _pair(sc, kn, t3, tau, pr, pc, rr, cc)
                        pblk[ch, b, q, rr, cc] += (pair - m[pr, pc] * m[rr, cc]) * inv
                    pblk[ch, b, q, pr, pc] += (1.0 - m[pr, pc] * m[pr, pc]) * inv
    return mblk, pblk


@njit(cache=True)
def _box_bounds(r, L):
    """Offsets d in [lo, hi] with minimum-image |d| ≤ r on a ring of L sites (each once)."""
    return -min(r, (L - 1) // 2), min(r, L // 2)


@njit(cache=True)
def _summed_area(y, pad, sat):
    """sat (M+2pad+1, N+2pad+1): summed-area table of y extended periodically by pad ≤ min(M, N).

    Column sums first (row by row, vector adds), then prefix sums along the rows (column by
    column, independent adds): no serial dependency in the inner loops."""
    M, N = y.shape
    for a in range(M + 2 * pad):
        ya = a - pad
        src = y[ya + M if ya < 0 else (ya - M if ya >= M else ya)]
        prev, dst = sat[a], sat[a + 1]
        for b in range(pad):
            dst[b + 1] = prev[b + 1] + src[N - pad + b]
        for b in range(N):
            dst[pad + b + 1] = prev[pad + b + 1] + src[b]
        for b in range(pad):
            dst[pad + N + b + 1] = prev[pad + N + b + 1] + src[b]
    for b in range(1, N + 2 * pad):
        for a in range(1, M + 2 * pad + 1):
            sat[a, b + 1] += sat[a, b]


@njit(cache=True, fastmath=True)
def shell_sums(x, y, r_max, pad, sat, out):
    """out[r] += Σ_i x_i Σ_{j: d∞(i,j) = r} y_j, r = 0..r_max, on the periodic M×N lattice.

    Box sums of y read from its periodic summed-area table (sat, pad ≥ the largest offset,
    ≤ min(M, N)); O(M N r_max). Shells beyond the lattice's half-size are empty.
    """
    M, N = x.shape
    _summed_area(y, pad, sat)
    prev = 0.0
    for r in range(r_max + 1):
        lo_r, hi_r = _box_bounds(r, M)
        lo_c, hi_c = _box_bounds(r, N)
        tot = 0.0
        b0, b1 = pad + lo_c, pad + hi_c + 1
        for a in range(M):
            lo, hi = sat[a + pad + lo_r], sat[a + pad + hi_r + 1]
            hi1, lo1, hi0, lo0 = hi[b1:b1 + N], lo[b1:b1 + N], hi[b0:b0 + N], lo[b0:b0 + N]
            xa = x[a]
            for b in range(N):
                tot += xa[b] * (hi1[b] - lo1[b] - hi0[b] + lo0[b])
        out[r] += tot - prev
        prev = tot


@njit(parallel=True, cache=True)
def run_profile(s, h, beta, n_blocks, block_len, thin, cluster_every, r_max, states):
    """One chain per observation o (start s[o], field h[o]) for the shell-summed covariance.

    Returns ``ss`` (n_obs, n_blocks, r_max+1): block means of Σ_i Σ_{d∞(i,j)=r} of the
    Rao–Blackwellised estimator of E[S_i S_j] (1 on the diagonal, the pair expectation for
    neighbours, m_i m_j otherwise), and ``q`` (n_obs, n_blocks, n_blocks, r_max+1): the shell
    sums Σ_i Σ_{d∞(i,j)=r} m̄ᵃ_i m̄ᵇ_j of the block means m̄ᵃ of m = tanh(β Σ_nb s + h).
    """
    n_obs, M, N = s.shape
    R1 = r_max + 1
    ss = np.zeros((n_obs, n_blocks, R1))
    q = np.zeros((n_obs, n_blocks, n_blocks, R1))
    p_add = 1.0 - np.exp(-2.0 * beta)
    tau = np.tanh(beta)
    pad = min(r_max, max(M, N) // 2) + 1  # ≥ the largest box offset
    inv = 1.0 / block_len
    for o in prange(n_obs):
        st = states[o].copy()  # a private copy: rows of one cache line would be falsely shared
        hc = h[o]
        thr, mtab, t3 = _chain_tables(hc, beta)
        sc = s[o].copy()
        members = np.empty(M * N, dtype=np.int64)
        stamp = np.zeros((M, N), dtype=np.int64)
        m = np.empty((M, N))
        kn = np.empty((M, N), dtype=np.int64)
        mbar = np.zeros((n_blocks, M, N))
        sat = np.zeros((M + 2 * pad + 1, N + 2 * pad + 1))
        acc = np.zeros(R1)
        t = 0
        for b in range(n_blocks):
            acc[:] = 0.0
            for _ in range(block_len):
                t = _advance(sc, thr, hc, p_add, st, thin, cluster_every, t, members, stamp)
                _rb_field(sc, mtab, m, kn)
                shell_sums(m, m, r_max, pad, sat, acc)
                # diagonal: E[S_i²] = 1; neighbours: the pair expectation in place of m_i m_j
                # (each bond once here, twice among the ordered pairs of the shell)
                d0 = 0.0
                d1 = 0.0
                for r in range(M):
                    rd = r + 1 if r < M - 1 else 0
                    for c in range(N):
                        cr = c + 1 if c < N - 1 else 0
                        d0 += 1.0 - m[r, c] * m[r, c]
                        d1 += _pair(sc, kn, t3, tau, r, c, rd, c) - m[r, c] * m[rd, c]
                        d1 += _pair(sc, kn, t3, tau, r, c, r, cr) - m[r, c] * m[r, cr]
                d1 *= 2.0
                acc[0] += d0
                if R1 > 1:
                    acc[1] += d1
                for r in range(M):
                    for c in range(N):
                        mbar[b, r, c] += m[r, c] * inv
            for k in range(R1):
                ss[o, b, k] = acc[k] * inv
        for a in range(n_blocks):
            for b in range(a, n_blocks):
                acc[:] = 0.0
                shell_sums(mbar[a], mbar[b], r_max, pad, sat, acc)
                for k in range(R1):
                    q[o, a, b, k] = acc[k]
                    q[o, b, a, k] = acc[k]
    return ss, q
