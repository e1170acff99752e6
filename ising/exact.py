"""Exact references for the 2D nearest-neighbour Ising model.

Model: ``p(s) ∝ exp(−β H(s) + Σ_i h_i s_i)``, ``H(s) = −Σ_<ij> s_i s_j``, s ∈ {±1}^{M×N},
on a periodic M×N torus (M rows, N columns; an int L means L×L). Bonds are the 2MN pairs
(i, i+x̂) and (i, i+ŷ) over all sites i, i.e. ``H = −Σ s·(roll(s, 1, 0) + roll(s, 1, 1))``.
For a side of length 2 this couples each neighbouring pair twice (the torus wraps), the
convention of Kaufman's formula and of ``Tr T^M`` alike; all functions here share it.

Per-site quantities: energy ``e = ⟨H⟩/(MN) = −∂(log Z/MN)/∂β`` and specific heat
``c = β² ∂²(log Z/MN)/∂β² = β² MN Var(H/MN)``. ``*_log_partition`` of a finite torus is the
total log Z; ``onsager_log_partition`` is log Z per site at L = ∞.

* L = ∞: :func:`onsager_log_partition`, :func:`onsager_energy`,
  :func:`onsager_specific_heat`, :func:`yang_magnetization`.
* Any torus: :func:`kaufman_log_partition`, :func:`kaufman_energy`,
  :func:`kaufman_specific_heat` (Kaufman 1949; analytic β-derivatives, log space).
* Ring of N ≤ 12 columns: :func:`transfer_matrix_log_partition`,
  :func:`transfer_matrix_energy`, :func:`transfer_matrix_specific_heat` (zero field).
* MN ≤ 16 sites, any site field: :func:`enumerate_field` (mean, full covariance), and
  :func:`state_index` to map configurations to rows of its ``states``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ising import BETA_C  # re-exported: ising.exact.BETA_C

__all__ = [
    "BETA_C",
    "onsager_log_partition",
    "onsager_energy",
    "onsager_specific_heat",
    "yang_magnetization",
    "kaufman_log_partition",
    "kaufman_energy",
    "kaufman_specific_heat",
    "transfer_matrix_log_partition",
    "transfer_matrix_energy",
    "transfer_matrix_specific_heat",
    "Enumeration",
    "enumerate_field",
    "state_index",
]

_MAX_TM_RING = 12
_MAX_ENUM_SITES = 16


# --------------------------------------------------------------------------- input checks
def _check_side(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer ≥ 2; got {v!r}")
    if v < 2:
        raise ValueError(f"{name} must be an integer ≥ 2; got {v}")
    return int(v)


def _shape(L):
    """``L`` (int) or ``(M, N)`` → (rows M, columns N), each an integer ≥ 2."""
    if isinstance(L, (tuple, list)):
        if len(L) != 2:
            raise ValueError(f"L must be an integer ≥ 2 or a pair (rows, columns); got {L!r}")
        return _check_side(L[0], "L[0] (rows)"), _check_side(L[1], "L[1] (columns)")
    n = _check_side(L, "L")
    return n, n


def _beta(beta):
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ValueError(f"beta must be finite and ≥ 0; got {beta!r}")
    return b


def _out(x, like):
    x = np.asarray(x)
    return float(x.reshape(())) if like.ndim == 0 else x.reshape(like.shape)


# --------------------------------------------------------------------------- L = ∞ (Onsager)
def _elliptic_ke(kp):
    """Complete elliptic integrals K(k), E(k) from the complementary modulus k' = √(1−k²) (AGM)."""
    a = np.ones_like(kp)
    b = kp.copy()
    c2 = 1.0 - kp * kp  # c_0² = k²
    s = 0.5 * c2
    p = 0.5
    for _ in range(60):
        a, b, c = 0.5 * (a + b), np.sqrt(a * b), 0.5 * (a - b)
        p *= 2.0
        s += p * c * c
    with np.errstate(divide="ignore"):
        k = np.pi / (2.0 * a)
    return k, k * (1.0 - s)


def _onsager_moduli(b):
    """Signed complementary modulus k'_s = (sinh² 2β − 1)/cosh² 2β = 2 tanh² 2β − 1 of Onsager's
    k = 2 sinh 2β / cosh² 2β: |k'_s| = √(1 − k²), negative above T_c, zero at β_c."""
    sh = np.sinh(2.0 * b)
    return (sh * sh - 1.0) / np.cosh(2.0 * b) ** 2


def onsager_log_partition(beta):
    """log Z per site at L = ∞ (Onsager): ln(2 cosh 2β) + (1/π)∫_0^{π/2} ln[(1 + √(1 − k² cos²t))/2] dt.

    beta: float or array (≥ 0). The integrand's near-singularity at t = 0 (width |k'|, closing
    at β_c) is resolved by Gauss–Legendre panels graded geometrically from |k'|.
    """
    b = _beta(beta)
    flat = b.ravel()
    x, w = np.polynomial.legendre.leggauss(32)
    out = np.empty_like(flat)
    for i, bi in enumerate(flat):
        kp = abs(_onsager_moduli(bi))
        k2 = 1.0 - kp * kp
        edges = np.linspace(0.0, np.pi / 2, 5)
        if kp > 0:
            edges = np.union1d(edges, kp * 2.0 ** np.arange(0, int(np.log2(np.pi / 2 / kp)) + 1))
        a, c = edges[:-1, None], edges[1:, None]
        t = 0.5 * (c - a) * x + 0.5 * (c + a)
        f = np.log1p(np.sqrt(kp * kp + k2 * np.sin(t) ** 2)) - math.log(2.0)
        integral = np.sum(0.5 * (c - a) * w * f)
        out[i] = 2.0 * bi + math.log1p(math.exp(-4.0 * bi)) + integral / np.pi  # 1st terms: ln(2 cosh 2β)
    return _out(out, b)


def onsager_energy(beta):
    """Energy per site at L = ∞: u = −coth 2β [1 + (2/π)(2 tanh² 2β − 1) K(k)], u(β_c) = −√2."""
    b = _beta(beta)
    kps = _onsager_moduli(b)
    kk, _ = _elliptic_ke(np.abs(kps))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(kps == 0.0, 0.0, kps * kk)  # k' K(k) → 0 at β_c
        u = -(1.0 + 2.0 / np.pi * corr) / np.tanh(2.0 * b)
    return _out(np.where(b == 0.0, 0.0, u), b)


def onsager_specific_heat(beta):
    """Specific heat per site at L = ∞, c = −β² du/dβ; +inf at β = β_c.

    Differentiating :func:`onsager_energy` (with dK/dk = E/(k k'²) − K/k, k' = 2 tanh² 2β − 1):
    c = β² [(16/π) sech² 2β K − (4/π) coth² 2β (E − k'² K) − (2/sinh² 2β)(1 + (2/π) k' K)].
    """
    b = _beta(beta)
    kps = _onsager_moduli(b)
    kk, ee = _elliptic_ke(np.abs(kps))
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = 2.0 * b
        c = b * b * (16.0 / np.pi * kk / np.cosh(t2) ** 2
                     - 4.0 / np.pi / np.tanh(t2) ** 2 * (ee - kps * kps * kk)
                     - 2.0 / np.sinh(t2) ** 2 * (1.0 + 2.0 / np.pi * kps * kk))
    c = np.where(kps == 0.0, np.inf, c)
    return _out(np.where(b == 0.0, 0.0, c), b)


def yang_magnetization(beta):
    """Spontaneous magnetisation per site at L = ∞ (Yang): (1 − sinh⁻⁴ 2β)^{1/8} above β_c, else 0."""
    b = _beta(beta)
    with np.errstate(divide="ignore"):
        m = np.where(b > BETA_C, np.clip(1.0 - np.sinh(2.0 * b) ** -4.0, 0.0, None) ** 0.125, 0.0)
    return _out(m, b)


# --------------------------------------------------------------------------- Kaufman (any torus)
def _log_prod(a, d1, d2, kind):
    """Σ log(2 cosh a) or Σ log(2 sinh a) over the last axis (a > 0) and its first two derivatives,
    given a' = d1 and a'' = d2."""
    q = np.exp(-2.0 * a)
    if kind == "cosh":
        val = a + np.log1p(q)
        g1 = (1.0 - q) / (1.0 + q)  # tanh a
        g2 = 4.0 * q / (1.0 + q) ** 2  # sech² a
    else:
        val = a + np.log(-np.expm1(-2.0 * a))
        g1 = (1.0 + q) / (-np.expm1(-2.0 * a))  # coth a
        g2 = -4.0 * q / np.expm1(-2.0 * a) ** 2  # −csch² a
    return val.sum(-1), (g1 * d1).sum(-1), (g1 * d2 + g2 * d1 * d1).sum(-1)


def _kaufman(M, N, K):
    """log Z of the M×N torus and its first two derivatives in K, for an array K > 0.

    Z = ½ (2 sinh 2K)^{MN/2} [Π_odd 2cosh(Mγ_k/2) + Π_odd 2sinh(Mγ_k/2)
                              + Π_even 2cosh(Mγ_k/2) + Π_even 2sinh(Mγ_k/2)],
    odd/even k in {0..2N−1}, cosh γ_k = cosh 2K coth 2K − cos(πk/N), γ_k > 0 for k ≥ 1 and the
    signed γ_0 = 2K + ln tanh K (zero at β_c, where the last product vanishes). The k = 0
    factor is kept apart (scaled by e^{−M|γ_0|/2}) so the derivatives stay finite at β_c.
    """
    K = K[:, None]
    s2, c2 = np.sinh(2.0 * K), np.cosh(2.0 * K)
    e = np.exp(-2.0 * K)
    g0 = 2.0 * K + np.log(-np.expm1(-2.0 * K)) - np.log1p(e)
    g0d = 2.0 + 2.0 / s2
    g0dd = -4.0 * c2 / s2**2
    cd = 2.0 * c2 * (1.0 - 1.0 / s2**2)  # d/dK of cosh 2K coth 2K
    cdd = 4.0 * s2 - 4.0 / s2 + 8.0 * c2**2 / s2**3

    def gammas(k):
        x = 2.0 * np.sinh(0.5 * g0) ** 2 + 2.0 * np.sin(0.5 * np.pi * k / N) ** 2  # cosh γ − 1
        sh = np.sqrt(x * (x + 2.0))
        g = np.log1p(x + sh)
        gd = cd / sh
        gdd = (cdd - (1.0 + x) * gd * gd) / sh
        return 0.5 * M * g, 0.5 * M * gd, 0.5 * M * gdd

    odd = gammas(np.arange(1, 2 * N, 2))
    even = gammas(np.arange(2, 2 * N, 2))
    a0, a0d, a0dd = (0.5 * M * v[:, 0] for v in (g0, g0d, g0dd))
    q0, sg = np.exp(-2.0 * np.abs(a0)), np.sign(a0)
    one, zero = np.ones_like(a0), np.zeros_like(a0)
    # per term: log scale, d/dK and d²/dK² of the log of the k ≥ 1 part, and the k = 0 factor
    # F̃ = F e^{−|a0|} with its derivatives (F = 1 for the odd terms).
    terms = []
    for kind in ("cosh", "sinh"):
        r, r1, r2 = _log_prod(*odd, kind)
        terms.append((r, r1, r2, one, zero, zero))
    for kind in ("cosh", "sinh"):
        r, r1, r2 = _log_prod(*even, kind)
        if kind == "cosh":
            f, fd, fdd = 1.0 + q0, a0d * sg * (1.0 - q0), a0dd * sg * (1.0 - q0) + a0d**2 * (1.0 + q0)
        else:
            f, fd, fdd = sg * (1.0 - q0), a0d * (1.0 + q0), a0dd * (1.0 + q0) + a0d**2 * sg * (1.0 - q0)
        terms.append((r + np.abs(a0), r1, r2, f, fd, fdd))
    smax = np.max([t[0] for t in terms], axis=0)
    w = [np.exp(t[0] - smax) for t in terms]
    total = sum(wi * t[3] for wi, t in zip(w, terms))
    mu = sum(wi * (t[4] + t[3] * t[1]) for wi, t in zip(w, terms)) / total
    var = sum(wi * (t[5] + 2.0 * t[4] * (t[1] - mu) + t[3] * (t[2] + (t[1] - mu) ** 2))
              for wi, t in zip(w, terms)) / total
    K = K[:, 0]
    pre = 0.5 * M * N * np.log(2.0 * np.sinh(2.0 * K)) - math.log(2.0)
    log_z = pre + smax + np.log(total)
    d1 = M * N / np.tanh(2.0 * K) + mu
    d2 = -2.0 * M * N / np.sinh(2.0 * K) ** 2 + var
    return log_z, d1, d2


def _kaufman_all(L, beta):
    M, N = _shape(L)
    b = _beta(beta)
    flat = b.ravel()
    log_z = np.full(flat.shape, M * N * math.log(2.0))
    d1 = np.zeros_like(flat)
    d2 = np.zeros_like(flat)
    pos = flat > 0
    if np.any(pos):
        log_z[pos], d1[pos], d2[pos] = _kaufman(M, N, flat[pos])
    return M * N, b, flat, log_z, d1, d2


def kaufman_log_partition(L, beta):
    """Total log Z of the L×L (or M×N for ``L=(M, N)``) torus, zero field, any size (Kaufman 1949).

    beta: float or array (≥ 0). Computed in log space: safe for L in the tens of thousands.
    Energy and specific heat (below) are analytic β-derivatives of the same expression; their
    absolute error per site is ~1e-16/β (cancellation of the O(1/β) terms at high temperature).
    """
    _, b, _, log_z, _, _ = _kaufman_all(L, beta)
    return _out(log_z, b)


def kaufman_energy(L, beta):
    """Energy per site ⟨H⟩/(MN) of the finite torus (analytic derivative of Kaufman's log Z)."""
    n, b, _, _, d1, _ = _kaufman_all(L, beta)
    return _out(-d1 / n, b)


def kaufman_specific_heat(L, beta):
    """Specific heat per site β² ∂²(log Z/MN)/∂β² of the finite torus (analytic, Kaufman)."""
    n, b, flat, _, _, d2 = _kaufman_all(L, beta)
    return _out(flat**2 * d2 / n, b)


# --------------------------------------------------------------------------- row transfer matrix
def _ring_states(N):
    """All 2^N rows as a (2^N, N) int8 array; state index bit i set ⇔ s_i = −1."""
    idx = np.arange(2**N)[:, None]
    return (1 - 2 * ((idx >> np.arange(N)) & 1)).astype(np.int8)


def _transfer_matrix(L, beta, derivatives):
    M, N = _shape(L)
    if N > _MAX_TM_RING:
        raise ValueError(f"L (columns) must be ≤ {_MAX_TM_RING} for the transfer matrix (2^L × 2^L); got {N}")
    b = _beta(beta)
    s = _ring_states(N).astype(np.float64)
    ring = (s * np.roll(s, 1, axis=1)).sum(1)  # row bonds, each row's ring
    g = 0.5 * (ring[:, None] + ring[None, :]) + s @ s.T  # T = exp(β g): half of each row's ring + rungs
    out = np.empty((3, b.size))
    for i, bi in enumerate(b.ravel()):
        t = np.exp(bi * g)  # symmetric, positive definite: T = D^½ V D^½
        if not derivatives:
            lam = np.linalg.eigvalsh(t)
            out[0, i] = M * np.log(lam[-1]) + np.log(np.sum((lam / lam[-1]) ** M))
            continue
        lam, u = np.linalg.eigh(t)
        r = lam / lam[-1]
        z = np.sum(r**M)
        a = u.T @ (g * t) @ u / lam[-1]
        bdiag = np.einsum("ij,ij->j", u, (g * g * t) @ u) / lam[-1]
        z1 = M * np.sum(r ** (M - 1) * np.diag(a))
        a2 = a * a  # d² Tr T^M = M Tr(T^{M−1} T'') + M Σ_{m=0}^{M−2} Tr(T^m T' T^{M−2−m} T')
        z2 = M * np.sum(r ** (M - 1) * bdiag) + M * sum(r**m @ a2 @ r ** (M - 2 - m) for m in range(M - 1))
        out[:, i] = M * np.log(lam[-1]) + np.log(z), z1 / z, z2 / z - (z1 / z) ** 2
    return M * N, b, out


def transfer_matrix_log_partition(L, beta):
    """Total log Z = log Tr T^M of the M×N torus, zero field, exact by the 2^N × 2^N row
    transfer matrix (N ≤ 12 columns; L int means L×L; N = 12 takes seconds per β).
    beta: float or array (≥ 0)."""
    _, b, out = _transfer_matrix(L, beta, derivatives=False)
    return _out(out[0], b)


def transfer_matrix_energy(L, beta):
    """Energy per site from the transfer matrix: −∂ log Tr T^M/∂β / MN, via its eigenvectors."""
    n, b, out = _transfer_matrix(L, beta, derivatives=True)
    return _out(-out[1] / n, b)


def transfer_matrix_specific_heat(L, beta):
    """Specific heat per site β² ∂² log Tr T^M/∂β² / MN from the transfer matrix (eigenvectors)."""
    n, b, out = _transfer_matrix(L, beta, derivatives=True)
    return _out(b.ravel() ** 2 * out[2] / n, b)


# --------------------------------------------------------------------------- enumeration
@dataclass(frozen=True)
class Enumeration:
    """Exact moments of ``p(s) ∝ exp(β Σ_<ij> s_i s_j + Σ_i h_i s_i)`` on an M×N torus.

    Shapes for one field (batched fields prepend ``n``): ``log_z`` scalar (total log Z);
    ``mean`` (M, N) = E[s]; ``covariance`` (MN, MN) = Cov(s_i, s_j), sites in row-major
    order i = r·N + c; ``energy`` = E[H]/MN and ``specific_heat`` = β² Var(H)/MN of the
    coupling energy H = −Σ_<ij> s_i s_j only (the field term is excluded); ``states``
    (2^{MN}, M, N) int8 and ``probabilities`` (2^{MN},) when ``return_states=True`` (else None).
    """

    log_z: np.ndarray | float
    mean: np.ndarray
    covariance: np.ndarray
    energy: np.ndarray | float
    specific_heat: np.ndarray | float
    states: np.ndarray | None = None
    probabilities: np.ndarray | None = None


@lru_cache(maxsize=8)
def _enum_tables(M, N):
    s = _ring_states(M * N)  # (2^n, n), site i = r·N + c
    grid = s.reshape(-1, M, N).astype(np.int16)
    bonds = (grid * np.roll(grid, 1, axis=1) + grid * np.roll(grid, 1, axis=2)).sum((1, 2))
    s.setflags(write=False)
    return s, s.astype(np.float64), bonds.astype(np.float64)


def state_index(spins):
    """Row of ``Enumeration.states`` for each configuration: spins (..., M, N) of ±1 →
    int64 (...), bit r·N + c set where the spin is −1."""
    s = np.asarray(spins)
    if s.ndim < 2 or s.shape[-1] * s.shape[-2] > 62:
        raise ValueError(f"spins must have shape (..., M, N) with M·N ≤ 62; got {s.shape}")
    if not np.all(np.abs(s) == 1):
        raise ValueError("spins must be ±1")
    bits = (s.reshape(*s.shape[:-2], -1) < 0).astype(np.int64)
    return (bits << np.arange(bits.shape[-1], dtype=np.int64)).sum(-1)


def enumerate_field(L, beta, h=None, *, return_states=False):
    """Brute-force sum over all 2^{MN} states of the M×N torus (MN ≤ 16, i.e. up to 4×4).

    L: int 2..4 (L×L) or (M, N); beta: float ≥ 0; h: None (zero field), the site field (M, N),
    or a batch (n, M, N) of fields. Returns an :class:`Enumeration` (batched over n if h is).
    """
    M, N = _shape(L)
    n_sites = M * N
    if n_sites > _MAX_ENUM_SITES:
        raise ValueError(f"L must give at most {_MAX_ENUM_SITES} sites for enumeration (L ≤ 4); got {M}×{N}")
    b = _beta(beta)
    if b.ndim != 0:
        raise ValueError(f"beta must be a scalar for enumerate_field; got shape {b.shape}")
    if h is None:
        hh = np.zeros((1, n_sites))
    else:
        hh = np.asarray(h, dtype=np.float64)
        if hh.shape[-2:] != (M, N) or hh.ndim not in (2, 3):
            raise ValueError(f"h must have shape ({M}, {N}) or (n, {M}, {N}); got {hh.shape}")
        if not np.all(np.isfinite(hh)):
            raise ValueError("h must be finite")
        hh = hh.reshape(-1, n_sites)
    s8, s, bonds = _enum_tables(M, N)
    n_f, n_states = hh.shape[0], s.shape[0]
    log_z, mean, cov = np.empty(n_f), np.empty((n_f, n_sites)), np.empty((n_f, n_sites, n_sites))
    energy, heat = np.empty(n_f), np.empty(n_f)
    probs = np.empty((n_f, n_states)) if return_states else None
    chunk = max(1, (1 << 22) // (n_states * n_sites))
    for lo in range(0, n_f, chunk):
        sl = slice(lo, lo + chunk)
        lw = float(b) * bonds + hh[sl] @ s.T  # (c, 2^n)
        top = lw.max(axis=1, keepdims=True)
        p = np.exp(lw - top)
        zs = p.sum(axis=1, keepdims=True)
        p /= zs
        log_z[sl] = (top + np.log(zs))[:, 0]
        m = p @ s
        mean[sl] = m
        cov[sl] = np.matmul(s.T[None] * p[:, None, :], s) - m[:, :, None] * m[:, None, :]
        eb = p @ bonds
        energy[sl] = -eb / n_sites
        heat[sl] = float(b) ** 2 * (p @ bonds**2 - eb**2) / n_sites
        if return_states:
            probs[sl] = p
    one = h is None or np.ndim(h) == 2
    pick = (lambda x: x[0]) if one else (lambda x: x)
    return Enumeration(
        log_z=float(log_z[0]) if one else log_z,
        mean=pick(mean.reshape(n_f, M, N)),
        covariance=pick(cov),
        energy=float(energy[0]) if one else energy,
        specific_heat=float(heat[0]) if one else heat,
        states=s8.reshape(-1, M, N) if return_states else None,
        probabilities=pick(probs) if return_states else None,
    )
