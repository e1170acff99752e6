"""Gaussian teacher against dense linear algebra built from its kernel (no FFT)."""
import math

import pytest
import torch

from sizetransfer.evaluation.metrics import absolute_response_profile
from sizetransfer.teachers.gaussian import GaussianTeacher

TEACHER = GaussianTeacher(seed=3)
L = 6


def dense_kernel_matrix(teacher, L):
    """K with x = K u, x_i = Σ_a k_a u_{i−a} on the L×L torus (sites flattened row-major)."""
    r = teacher.kernel_radius
    K = torch.zeros(L * L, L * L, dtype=torch.float64)
    for i0 in range(L):
        for i1 in range(L):
            for a0 in range(-r, r + 1):
                for a1 in range(-r, r + 1):
                    j = ((i0 - a0) % L) * L + (i1 - a1) % L
                    K[i0 * L + i1, j] += teacher.kernel[a0 + r, a1 + r].double()
    return K


K = dense_kernel_matrix(TEACHER, L)
C = K @ K.T


def test_sample_is_kernel_times_latent_and_inverse_recovers_it():
    x = TEACHER.sample(5, L, generator=torch.Generator().manual_seed(0))
    u = torch.randn(5, 1, L, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (5, 1, L, L) and x.dtype == torch.float64
    torch.testing.assert_close(x.reshape(5, -1), u.reshape(5, -1) @ K.T)
    torch.testing.assert_close(TEACHER.inverse(x), u)


def test_log_prob_score_and_smoothed_score_match_dense_gaussian():
    x = TEACHER.sample(4, L, generator=torch.Generator().manual_seed(1))
    flat = x.reshape(4, -1)
    ref = torch.distributions.MultivariateNormal(torch.zeros(L * L, dtype=torch.float64), C)
    torch.testing.assert_close(TEACHER.log_prob(x), ref.log_prob(flat))
    torch.testing.assert_close(TEACHER.score(x).reshape(4, -1), -flat @ torch.linalg.inv(C))
    sigma = torch.tensor([0.1, 0.5, 1.0, 4.0], dtype=torch.float64)
    for k, s in enumerate(sigma):
        inv = torch.linalg.inv(C + s ** 2 * torch.eye(L * L, dtype=torch.float64))
        torch.testing.assert_close(TEACHER.smoothed_score(x, s.item())[k].reshape(-1), -inv @ flat[k])
        # Tweedie: E[X0 | x] = C (C + σ²)⁻¹ x, so (E[X0 | x] − x)/σ² is the smoothed score
        tweedie = (C @ inv @ flat[k] - flat[k]) / s ** 2
        torch.testing.assert_close(TEACHER.smoothed_score(x, sigma)[k].reshape(-1), tweedie)


def test_score_is_gradient_of_log_prob():
    x = TEACHER.sample(2, L, generator=torch.Generator().manual_seed(2))
    h = 1e-5
    score = TEACHER.score(x)
    for site in [(0, 0), (2, 5), (5, 3)]:
        e = torch.zeros_like(x)
        e[(slice(None), 0) + site] = h
        fd = (TEACHER.log_prob(x + e) - TEACHER.log_prob(x - e)) / (2 * h)
        torch.testing.assert_close(fd, score[(slice(None), 0) + site], rtol=1e-6, atol=1e-6)


def test_stein_identity_and_sample_covariance():
    """E[s(x)_i x_j] = −δ_ij (Stein, f(x) = x_j) and E[x_i x_j] = C_ij, within 4 standard errors."""
    n = 4000
    x = TEACHER.sample(n, L, generator=torch.Generator().manual_seed(3)).reshape(n, -1)
    s = TEACHER.score(x.reshape(n, 1, L, L)).reshape(n, -1)
    for i, j in [(0, 0), (0, 1), (7, 7), (7, 13)]:
        for vals, expected in ((s[:, i] * x[:, j], -float(i == j)), (x[:, i] * x[:, j], C[i, j].item())):
            assert abs(vals.mean().item() - expected) < 4 * vals.std().item() / math.sqrt(n)


def test_size_uniform_finite_range_covariance():
    """C_{0,a} is the same at every L and vanishes beyond Chebyshev distance 2r."""
    rows = {}
    for size in (6, 9, 16):
        rows[size] = torch.fft.ifft2(TEACHER.spectrum(size)).real
    for a0 in range(-2, 3):
        for a1 in range(-2, 3):
            torch.testing.assert_close(rows[6][a0 % 6, a1 % 6], rows[16][a0 % 16, a1 % 16])
    assert rows[16][3:14, :].abs().max() < 1e-12
    torch.testing.assert_close(rows[6].reshape(-1), C[0])


def test_response_profile_matches_autograd_of_smoothed_score():
    x = TEACHER.sample(3, 12, generator=torch.Generator().manual_seed(4))
    for sigma in (0.0, 0.7):
        analytic = TEACHER.response_profile(x, (3, 10), 6, sigma=sigma)
        numeric = absolute_response_profile(lambda y: TEACHER.smoothed_score(y, sigma), x, (3, 10), 6)
        torch.testing.assert_close(analytic, numeric)
        assert analytic.shape == (3, 7) and (analytic[:, -1] > 0).all()  # C⁻¹ is long ranged


def test_check_size_and_arguments():
    TEACHER.check_size(3)
    for bad in (2, 0, 4.5):
        with pytest.raises(ValueError, match="L must be"):
            TEACHER.check_size(bad)
    with pytest.raises(ValueError, match="strength"):
        GaussianTeacher(strength=1.0)
    with pytest.raises(ValueError, match="kernel_radius"):
        GaussianTeacher(kernel_radius=-1)
    with pytest.raises(ValueError, match="x must have shape"):
        TEACHER.score(torch.zeros(2, 2, 6, 6))
    assert (TEACHER.key, TEACHER.dim, TEACHER.channels, TEACHER.periodic) == ("gaussian", 2, 1, True)


def test_registry_builds_a_protocol_conforming_teacher():
    from sizetransfer.teachers import Teacher, make_teacher

    teacher = make_teacher("gaussian", seed=3)
    assert isinstance(teacher, GaussianTeacher) and isinstance(teacher, Teacher)
    torch.testing.assert_close(teacher.kernel, TEACHER.kernel)
