"""Exact references checked against each other and against independent closed forms.

Kaufman's formula, the row transfer matrix and brute-force enumeration are three
independent computations of the same torus partition function; Onsager's closed forms are
checked against Kaufman at large L, against their own β-derivatives and against the high-
and low-temperature series of the square lattice.
"""
import itertools
import math

import numpy as np
import pytest

from ising import exact as ex

BC = ex.BETA_C
BETAS = [0.2, 0.35, BC, 0.5, 0.7]
#: Machine epsilon of float64. Tolerances below are written as (operation count or cancellation
#: factor) × EPS, so that they hold for any numpy/BLAS build (which differ in summation order), not
#: only for the digits one machine happens to produce.
EPS = np.finfo(float).eps


def enumeration_tolerances(L, beta, e):
    """Absolute round-off bounds of ``enumerate_field``'s log Z, energy and specific heat.

    Enumeration sums over N_s = 2^n states (n sites). A sum of N_s terms carries an absolute error
    of at most N_s·EPS·Σ|terms| (Higham's γ_N bound, first order), whatever order a BLAS build adds
    them in. Hence: log Z = top + log Σp, Σp ≥ 1 of positive terms → N_s·EPS; energy per site
    −⟨B⟩/n with |B| ≤ 2n bonds → 2·N_s·EPS; the specific heat β²(⟨B²⟩ − ⟨B⟩²)/n is a difference of
    two sums of size ⟨B²⟩ and ⟨B⟩·max|B| (the cancellation that makes it the ill-conditioned one:
    ⟨B²⟩/Var(B) reaches ~200 at L = 4, β = 0.7) → β²·N_s·EPS·(⟨B²⟩ + 2|⟨B⟩|·2n)/n. Kaufman's own
    error (~1e-15 relative, checked against a 40-digit evaluation) is covered by the 16·EPS terms."""
    M, N = (L, L) if isinstance(L, int) else L
    n = M * N
    n_states = 2.0**n
    mean_b = -e.energy * n
    var_b = e.specific_heat * n / beta**2 if beta > 0 else 0.0
    second_b = var_b + mean_b**2
    log_z = n_states * EPS + 16 * EPS * abs(e.log_z)
    energy = 2 * n_states * EPS + 16 * EPS * abs(e.energy)
    heat = beta**2 * n_states * EPS * (second_b + 2 * abs(mean_b) * 2 * n) / n + 16 * EPS * e.specific_heat
    return log_z, energy, heat


def richardson_tolerance(d_h, d_2h, roundoff):
    """Tolerance of a 5-point (4th-order) difference d_h: its truncation error is ≈ |d_2h − d_h|/15
    (halving h divides it by 16), taken 4× for safety, plus the round-off bound ``roundoff``."""
    return 4 * abs(d_2h - d_h) / 15 + roundoff


def test_beta_c_value():
    assert ex.BETA_C == pytest.approx(0.5 * math.log(1 + math.sqrt(2)), rel=1e-15)
    assert math.sinh(2 * ex.BETA_C) == pytest.approx(1.0, rel=1e-15)


# Kaufman against the transfer matrix: log Z = M·log λ_max + log Σ(λ/λ_max)^M with eigvalsh's
# backward-stable eigenvalues (relative error ~ 2^N·EPS ≤ 1e-13 for N ≤ 10 — the observed error
# is 100× below); the derivatives go through eigenvectors and sums of 2^N² products, whose errors
# (≤ 2^2N·EPS relative to the largest term, ~1e-11 at N = 8) set rtol 1e-11 and 1e-10 for the
# energy and the heat, and atol 1e-13 ~ 1000·EPS where they are near zero (β = 0.3, small tori).
@pytest.mark.parametrize("L", range(2, 11))
def test_kaufman_log_partition_matches_transfer_matrix(L):
    b = np.array(BETAS if L <= 8 else [BC])  # 2^L × 2^L eigenvalues: keep L = 9, 10 cheap
    np.testing.assert_allclose(ex.kaufman_log_partition(L, b), ex.transfer_matrix_log_partition(L, b), rtol=1e-13)


@pytest.mark.parametrize("L", [2, 3, 5, 8, (2, 5), (5, 2), (3, 7), (6, 4)])
def test_kaufman_derivatives_match_transfer_matrix(L):
    b = np.array([0.3, BC, 0.6])
    np.testing.assert_allclose(ex.kaufman_log_partition(L, b), ex.transfer_matrix_log_partition(L, b), rtol=1e-13)
    np.testing.assert_allclose(ex.kaufman_energy(L, b), ex.transfer_matrix_energy(L, b), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ex.kaufman_specific_heat(L, b), ex.transfer_matrix_specific_heat(L, b),
                               rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("L", [2, 3, 4, (2, 3), (3, 4), (4, 2)])
@pytest.mark.parametrize("beta", BETAS)
def test_kaufman_matches_enumeration(L, beta):
    e = ex.enumerate_field(L, beta)
    tol_log_z, tol_energy, tol_heat = enumeration_tolerances(L, beta, e)  # round-off of the 2^n-state sums
    assert ex.kaufman_log_partition(L, beta) == pytest.approx(e.log_z, rel=0, abs=tol_log_z)
    assert ex.kaufman_energy(L, beta) == pytest.approx(e.energy, rel=0, abs=tol_energy)
    assert ex.kaufman_specific_heat(L, beta) == pytest.approx(e.specific_heat, rel=0, abs=tol_heat)


@pytest.mark.parametrize(
    "L, energy",
    [(4, -1.56562378764), (8, -1.49158910744), (16, -1.45306485281), (32, -1.43365846615), (64, -1.42393838983)],
)
def test_design_energies_at_beta_c(L, energy):
    # the reference values are quoted to 11 decimals (±5e-12); Kaufman's own error is ~EPS
    assert abs(ex.kaufman_energy(L, BC) - energy) < 1e-11


@pytest.mark.parametrize("L", [3, 16, 128])
def test_kaufman_continuous_through_beta_c(L):
    """γ_0 = 0 exactly at β_c: values there equal the quartic interpolation from both sides."""
    d = np.array([-2, -1, 1, 2]) * (1e-3 / L)  # in units of the finite-size width ~1/L
    w = np.array([-1, 4, 4, -1]) / 6.0  # f(0) = Σ w f(±d) + O(d⁴)
    # rel 1e-9: interpolation error (d·L)⁴ ~ 1e-12 of the scale of f, round-off Σ|w|·EPS ~ 4e-16;
    # a discontinuity at β_c (the failure this guards against) is O(1/L) ≫ 1e-9
    for fn in (ex.kaufman_log_partition, ex.kaufman_energy, ex.kaufman_specific_heat):
        side = fn(L, BC + d)
        assert np.all(np.isfinite(side))
        assert fn(L, BC) == pytest.approx(w @ side, rel=1e-9)


@pytest.mark.parametrize("L", [5, 16, 64])
@pytest.mark.parametrize("beta", [0.3, BC, 0.55])
def test_kaufman_derivatives_match_finite_differences(L, beta):
    h = 2e-4
    f = ex.kaufman_log_partition(L, beta + h * np.arange(-4, 5))  # f[4] at beta

    def d1(s):  # 5-point first and second derivatives with step s·h
        return (f[4 - 2 * s] - 8 * f[4 - s] + 8 * f[4 + s] - f[4 + 2 * s]) / (12 * s * h)

    def d2(s):
        return (-f[4 - 2 * s] + 16 * f[4 - s] - 30 * f[4] + 16 * f[4 + s] - f[4 + 2 * s]) / (12 * (s * h) ** 2)

    n, big = L * L, np.abs(f).max()
    # truncation by Richardson (h against 2h); round-off: Σ|coefficients|·EPS·|log Z| / (12 h^k)
    tol_e = richardson_tolerance(d1(1), d1(2), 18 * EPS * big / (12 * h)) / n
    tol_c = beta**2 * richardson_tolerance(d2(1), d2(2), 64 * EPS * big / (12 * h * h)) / n
    assert ex.kaufman_energy(L, beta) == pytest.approx(-d1(1) / n, rel=0, abs=tol_e)
    assert ex.kaufman_specific_heat(L, beta) == pytest.approx(beta**2 * d2(1) / n, rel=0, abs=tol_c)


def test_kaufman_tends_to_onsager():
    b = np.array([0.2, 0.35, 0.4, 0.48, 0.6, 1.0])
    np.testing.assert_allclose(ex.kaufman_energy(256, b), ex.onsager_energy(b), atol=1e-12)
    # ordered phase: the two ground states add log 2 to the finite torus's log Z
    f_inf = ex.onsager_log_partition(b) + np.where(b > BC, math.log(2) / 256**2, 0.0)
    np.testing.assert_allclose(ex.kaufman_log_partition(256, b) / 256**2, f_inf, atol=1e-12)
    np.testing.assert_allclose(ex.kaufman_specific_heat(1024, b), ex.onsager_specific_heat(b), rtol=1e-10)
    # at β_c: finite-size corrections vanish as L grows (≈ 1/L for e, 1/L² for log Z / N)
    err_e = [abs(ex.kaufman_energy(L, BC) - ex.onsager_energy(BC)) for L in (64, 256)]
    assert err_e[1] < 3e-3 and err_e[1] < err_e[0] / 3
    err_f = [abs(ex.kaufman_log_partition(L, BC) / L**2 - ex.onsager_log_partition(BC)) for L in (64, 256)]
    assert err_f[1] < 2e-5 and err_f[1] < err_f[0] / 12


def test_specific_heat_log_divergence_at_beta_c():
    """C_L(β_c) ≈ (8/π) β_c² ln L + const (Ferdinand & Fisher 1969)."""
    amp = 8 / math.pi * BC**2
    # abs 2e-4: not round-off but the next finite-size correction of the step, O(1/L) (3.3e-4 at
    # L = 256, 8.3e-5 at L = 1024; deterministic); the second assert checks that it shrinks
    step = [ex.kaufman_specific_heat(2 * L, BC) - ex.kaufman_specific_heat(L, BC) for L in (256, 1024)]
    assert step[1] == pytest.approx(amp * math.log(2), abs=2e-4)
    assert abs(step[1] - amp * math.log(2)) < abs(step[0] - amp * math.log(2)) / 3
    assert ex.onsager_specific_heat(BC) == math.inf


def test_kaufman_large_torus_is_finite():
    b = np.array([0.1, BC, 0.9])
    for fn in (ex.kaufman_log_partition, ex.kaufman_energy, ex.kaufman_specific_heat):
        assert np.all(np.isfinite(fn(20000, b)))


def test_onsager_exact_values_at_beta_c():
    catalan = 0.915965594177219015054603514932
    assert ex.onsager_log_partition(BC) == pytest.approx(0.5 * math.log(2) + 2 * catalan / math.pi, rel=1e-14)
    assert ex.onsager_energy(BC) == pytest.approx(-math.sqrt(2), rel=1e-14)
    assert ex.yang_magnetization(BC) == 0.0


def test_onsager_high_temperature_series():
    """log Z/N = ln 2 + 2 ln cosh β + t⁴ + 2t⁶ + O(t⁸), t = tanh β."""
    b = np.array([0.01, 0.03, 0.05])
    t = np.tanh(b)
    series = math.log(2) + 2 * np.log(np.cosh(b)) + t**4 + 2 * t**6
    np.testing.assert_allclose(ex.onsager_log_partition(b), series, atol=10 * t.max() ** 8)
    u_series = -2 * t - (4 * t**3 + 12 * t**5) * (1 - t**2)  # −∂/∂β of the series
    np.testing.assert_allclose(ex.onsager_energy(b), u_series, atol=100 * t.max() ** 7)
    assert ex.onsager_log_partition(0.0) == pytest.approx(math.log(2), rel=1e-15)
    assert ex.onsager_energy(0.0) == 0.0 and ex.onsager_specific_heat(0.0) == 0.0


def test_onsager_low_temperature_series():
    """log Z/N = 2β + x⁴ + 2x⁶ + (9/2)x⁸ + O(x¹⁰), x = e^{−2β} (one flipped spin, a pair, then
    two apart, lines, L-shapes and squares); Yang: m = 1 − 2x⁴ − 8x⁶ − 34x⁸ + O(x¹⁰)."""
    b = np.array([1.5, 2.0, 2.5])
    x = np.exp(-2 * b)
    tail = x.max() ** 10
    np.testing.assert_allclose(ex.onsager_log_partition(b), 2 * b + x**4 + 2 * x**6 + 4.5 * x**8,
                               atol=100 * tail, rtol=1e-15)
    np.testing.assert_allclose(ex.onsager_energy(b), -2 + 8 * x**4 + 24 * x**6 + 72 * x**8,
                               atol=1000 * tail, rtol=1e-15)
    np.testing.assert_allclose(ex.onsager_specific_heat(b), b**2 * (64 * x**4 + 288 * x**6 + 1152 * x**8),
                               atol=1e5 * tail, rtol=1e-12)
    np.testing.assert_allclose(ex.yang_magnetization(b), 1 - 2 * x**4 - 8 * x**6 - 34 * x**8, atol=1000 * tail)
    np.testing.assert_array_equal(ex.yang_magnetization(np.array([0.0, 0.3, BC])), 0.0)
    assert 0.5 < ex.yang_magnetization(BC + 1e-3) < 0.6  # (β − β_c)^{1/8} onset


@pytest.mark.parametrize("beta", [0.25, 0.43, 0.45, 0.6])
def test_onsager_energy_and_heat_are_derivatives_of_log_partition(beta):
    """Closed forms against 5-point differences of the quadrature (β_c itself: exact values above)."""
    h = 1e-4
    grid = beta + h * np.arange(-4, 5)  # [4] is beta

    def diff(v, s):  # 5-point first derivative with step s·h
        return (v[4 - 2 * s] - 8 * v[4 - s] + 8 * v[4 + s] - v[4 + 2 * s]) / (12 * s * h)

    # truncation by Richardson (h against 2h); round-off: 18·δ·|v|/(12 h) with δ = 100·EPS, the
    # accuracy of the graded Gauss–Legendre panel sums of log Z (≤ 8 panels × 32 nodes) and of K, E
    f, u = ex.onsager_log_partition(grid), ex.onsager_energy(grid)
    tol_u = richardson_tolerance(diff(f, 1), diff(f, 2), 18 * 100 * EPS * np.abs(f).max() / (12 * h))
    assert ex.onsager_energy(beta) == pytest.approx(-diff(f, 1), rel=0, abs=tol_u)
    tol_c = beta**2 * richardson_tolerance(diff(u, 1), diff(u, 2), 18 * 100 * EPS * np.abs(u).max() / (12 * h))
    assert ex.onsager_specific_heat(beta) == pytest.approx(-(beta**2) * diff(u, 1), rel=0, abs=tol_c)


# ------------------------------------------------------------------ enumeration in a field
def _loop_enumeration(M, N, beta, h):
    """Independent plain-Python sum over states (row-major sites, torus, doubled bonds at side 2)."""
    zs, m1, m2 = 0.0, np.zeros(M * N), np.zeros((M * N, M * N))
    for spins in itertools.product((1, -1), repeat=M * N):
        s = np.array(spins, dtype=float).reshape(M, N)
        bonds = sum(s[r, c] * (s[(r + 1) % M, c] + s[r, (c + 1) % N]) for r in range(M) for c in range(N))
        w = math.exp(beta * bonds + float(np.sum(h * s)))
        zs += w
        m1 += w * s.ravel()
        m2 += w * np.outer(s.ravel(), s.ravel())
    m1, m2 = m1 / zs, m2 / zs
    return math.log(zs), m1.reshape(M, N), m2 - np.outer(m1, m1)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (2, 3)])
def test_enumeration_matches_plain_loops(shape):
    rng = np.random.default_rng(11)
    h = rng.normal(scale=0.7, size=shape)
    e = ex.enumerate_field(shape, 0.37, h)
    log_z, mean, cov = _loop_enumeration(*shape, 0.37, h)
    assert e.log_z == pytest.approx(log_z, rel=1e-13)
    np.testing.assert_allclose(e.mean, mean, atol=1e-13)
    np.testing.assert_allclose(e.covariance, cov, atol=1e-13)
    assert e.covariance.shape == (shape[0] * shape[1],) * 2


@pytest.mark.parametrize("L, beta, scale", [(3, BC, 1.0), (4, BC, 0.3), (4, 0.8 * BC, 3.0)])
def test_enumeration_field_derivatives(L, beta, scale):
    """∂ log Z/∂h_i = E[s_i] and ∂E[s_i]/∂h_j = Cov(s_i, s_j): the exact basis of Eq. 22."""
    rng = np.random.default_rng(L)
    h = rng.normal(scale=scale, size=(L, L))
    n, eps = L * L, 1e-5
    bumps = np.eye(n).reshape(n, L, L) * eps
    plus = ex.enumerate_field(L, beta, h + bumps)  # batched over the n perturbed fields
    minus = ex.enumerate_field(L, beta, h - bumps)
    base = ex.enumerate_field(L, beta, h)
    np.testing.assert_allclose((plus.log_z - minus.log_z) / (2 * eps), base.mean.ravel(), atol=1e-8)
    jac = (plus.mean - minus.mean).reshape(n, n) / (2 * eps)  # jac[j, i] = ∂ mean_i / ∂ h_j
    np.testing.assert_allclose(jac.T, base.covariance, atol=1e-8)
    np.testing.assert_allclose(base.covariance, base.covariance.T, atol=1e-15)
    assert np.all(np.linalg.eigvalsh(base.covariance) > -1e-12)


def test_enumeration_batch_equals_single_and_probabilities():
    rng = np.random.default_rng(5)
    hs = rng.normal(size=(3, 3, 3))
    batch = ex.enumerate_field(3, 0.4, hs, return_states=True)
    assert batch.log_z.shape == (3,) and batch.mean.shape == (3, 3, 3) and batch.covariance.shape == (3, 9, 9)
    assert batch.states.shape == (512, 3, 3) and batch.states.dtype == np.int8
    assert batch.probabilities.shape == (3, 512)
    for k in range(3):
        one = ex.enumerate_field(3, 0.4, hs[k], return_states=True)
        assert one.log_z == pytest.approx(batch.log_z[k], rel=1e-14)
        np.testing.assert_allclose(one.covariance, batch.covariance[k], atol=1e-15)
        s = one.states.astype(float)
        bonds = (s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2))
        p = np.exp(0.4 * bonds + (s * hs[k]).sum((1, 2)) - one.log_z)
        np.testing.assert_allclose(one.probabilities, p, rtol=1e-12)
        np.testing.assert_allclose(one.mean, np.tensordot(p, s, 1), atol=1e-14)


def test_state_index_round_trip_and_strong_field_limit():
    e = ex.enumerate_field(4, BC, return_states=True)
    np.testing.assert_array_equal(ex.state_index(e.states), np.arange(2**16))
    assert e.probabilities.sum() == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose(e.mean, 0.0, atol=1e-14)  # zero field: spin-flip symmetry
    h = 30.0 * np.sign(np.random.default_rng(2).normal(size=(4, 4)))
    strong = ex.enumerate_field(4, BC, h)
    np.testing.assert_allclose(strong.mean, np.sign(h), atol=1e-20)
    np.testing.assert_allclose(strong.covariance, 0.0, atol=1e-20)


def test_lattice_of_side_two_doubles_bonds():
    """2×2 torus: each pair coupled twice, so it is a 4-ring with coupling 2β:
    Z = (2 cosh 2β)⁴ + (2 sinh 2β)⁴, ground energy −2 per site."""
    for beta in (0.3, BC, 1.0):
        z = (2 * math.cosh(2 * beta)) ** 4 + (2 * math.sinh(2 * beta)) ** 4
        assert ex.kaufman_log_partition(2, beta) == pytest.approx(math.log(z), rel=1e-14)
        assert ex.transfer_matrix_log_partition(2, beta) == pytest.approx(math.log(z), rel=1e-14)
        assert ex.enumerate_field(2, beta).log_z == pytest.approx(math.log(z), rel=1e-14)
    assert ex.enumerate_field(2, 5.0).energy == pytest.approx(-2.0, abs=1e-12)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ex.kaufman_log_partition(1, 0.4), "L must be an integer ≥ 2"),
        (lambda: ex.kaufman_energy(4.5, 0.4), "L must be an integer"),
        (lambda: ex.kaufman_energy(True, 0.4), "L must be an integer"),
        (lambda: ex.kaufman_specific_heat((3, 1), 0.4), r"L\[1\] \(columns\)"),
        (lambda: ex.kaufman_log_partition(4, -0.1), "beta must be finite and ≥ 0"),
        (lambda: ex.onsager_energy(np.nan), "beta must be finite"),
        (lambda: ex.transfer_matrix_log_partition(13, 0.4), "≤ 12"),
        (lambda: ex.transfer_matrix_energy(1, 0.4), "L must be an integer ≥ 2"),
        (lambda: ex.enumerate_field(5, 0.4), "at most 16 sites"),
        (lambda: ex.enumerate_field(1, 0.4), "L must be an integer ≥ 2"),
        (lambda: ex.enumerate_field(3, -1.0), "beta must be finite and ≥ 0"),
        (lambda: ex.enumerate_field(3, 0.4, np.zeros((4, 4))), r"h must have shape \(3, 3\)"),
        (lambda: ex.enumerate_field(3, 0.4, np.zeros((2, 2, 3, 3))), "h must have shape"),
        (lambda: ex.enumerate_field(3, 0.4, np.full((3, 3), np.inf)), "h must be finite"),
        (lambda: ex.state_index(np.zeros((3, 3))), "±1"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
