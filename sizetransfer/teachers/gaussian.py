"""Stationary Gaussian teacher on the periodic torus, with closed-form smoothed score.

x = k ⊛ u, u ~ N(0, I) on (Z/LZ)², k a fixed (2r+1)² kernel drawn from the seed (centre 1,
off-centre weights uniform in [0, 1) rescaled to Σ w = ``strength`` < 1, so the field is
positively correlated and |k̂| ≥ 1 − strength > 0 at every L).
The covariance C = K Kᵀ is circulant with spectrum λ(q) = |k̂(q)|² and finite range 2r, the
same kernel at every L (size-uniform). Everything is diagonal in Fourier space:
log p, score −C⁻¹x, and the smoothed score ∇ log N(x; 0, C + σ² I) = −(C + σ² I)⁻¹ x.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from sizetransfer.lattice import shell_sums


class GaussianTeacher:
    """Gaussian field teacher; fields are (n, 1, L, L) in ``dtype`` (float64 by default)."""

    key = "gaussian"
    dim = 2
    channels = 1
    periodic = True

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64, kernel_radius: int = 1,
                 strength: float = 0.6):
        if int(kernel_radius) != kernel_radius or kernel_radius < 0:
            raise ValueError(f"kernel_radius must be an integer >= 0, got {kernel_radius}")
        if not 0 <= strength < 1:
            raise ValueError(f"strength must be in [0, 1), got {strength}")
        self.seed, self.dtype = seed, dtype
        self.kernel_radius, self.strength = int(kernel_radius), float(strength)
        gen = torch.Generator().manual_seed(seed)
        side = 2 * self.kernel_radius + 1
        w = torch.rand(side, side, generator=gen, dtype=torch.float64)
        w[self.kernel_radius, self.kernel_radius] = 0
        if self.kernel_radius > 0:
            w *= self.strength / w.sum()
        w[self.kernel_radius, self.kernel_radius] = 1
        self.kernel = w.to(dtype)  # k[a + r, b + r] = weight of offset (a, b)
        self._spectra: dict[int, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"GaussianTeacher(seed={self.seed}, kernel_radius={self.kernel_radius}, "
                f"strength={self.strength})")

    def check_size(self, L: int) -> None:
        """Raise ValueError unless L is an integer ≥ 2r + 1 (kernel offsets must not alias)."""
        if int(L) != L or L < 2 * self.kernel_radius + 1:
            raise ValueError(f"L must be an integer >= {2 * self.kernel_radius + 1} "
                             f"(2 * kernel_radius + 1), got {L}")

    def kernel_hat(self, L: int) -> torch.Tensor:
        """k̂(q), complex (L, L): the FFT of the kernel placed at its offsets mod L."""
        self.check_size(L)
        if L not in self._spectra:
            r = self.kernel_radius
            grid = torch.zeros(L, L, dtype=torch.float64)
            idx = torch.arange(-r, r + 1) % L
            grid[idx[:, None], idx[None, :]] = self.kernel.to(torch.float64)
            self._spectra[L] = torch.fft.fft2(grid)
        return self._spectra[L]

    def spectrum(self, L: int, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Eigenvalues λ(q) + σ² of C + σ² I, real (L, L) (or (n, 1, L, L) for σ of shape (n,))."""
        lam = self.kernel_hat(L).abs().square()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).to(lam.device)
        if sigma.dim() == 1:
            sigma = sigma.view(-1, 1, 1, 1)
        return lam + sigma ** 2

    def _check_x(self, x: torch.Tensor) -> int:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
            raise ValueError(f"x must have shape (n, 1, L, L), got {tuple(x.shape)}")
        L = x.shape[-1]
        self.check_size(L)
        return L

    def _apply(self, x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        """Circulant operator with Fourier multiplier (L, L) or (n, 1, L, L) applied to x (n, 1, L, L)."""
        out = torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64)) * multiplier.to(x.device)).real
        return out.to(x.dtype)

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent fields (n, 1, L, L)."""
        self.check_size(L)
        device = generator.device if generator is not None else None
        u = torch.randn(n, 1, L, L, generator=generator, dtype=self.dtype, device=device)
        return self._apply(u, self.kernel_hat(L))

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """u = k⁻¹ ⊛ x, the latent white noise of x (n, 1, L, L)."""
        return self._apply(x, 1 / self.kernel_hat(self._check_x(x)))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, C), shape (n,)."""
        L = self._check_x(x)
        lam = self.spectrum(L).to(x.device)
        quad = (torch.fft.fft2(x[:, 0].to(torch.float64)).abs().square() / lam).sum((-2, -1)) / L ** 2
        logp = -0.5 * quad - 0.5 * (L ** 2 * math.log(2 * math.pi) + lam.log().sum())
        return logp.to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Clean score −C⁻¹ x, (n, 1, L, L)."""
        return self.smoothed_score(x, 0.0)

    def smoothed_score(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Score of p_σ = N(0, C + σ² I): −(C + σ² I)⁻¹ x; sigma a scalar or (n,)."""
        return -self._apply(x, 1 / self.spectrum(self._check_x(x), sigma))

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int, *,
                         sigma: float = 0.0, absolute: bool = True) -> torch.Tensor:
        """Shell sums ρ(r) of the score's Jacobian row ∂s_i/∂x_j = −[(C + σ² I)⁻¹]_ij, (n, r_max + 1).

        The row does not depend on x (the score is linear); σ = 0 is the clean score.
        """
        L = self._check_x(x)
        row = -torch.fft.ifft2(1 / self.spectrum(L, sigma)).real              # row of the origin
        row = row.roll(tuple(int(c) for c in site), dims=(0, 1)).to(x.dtype).to(x.device)
        return shell_sums(row.expand(x.shape[0], L, L), site, r_max, periodic=True, absolute=absolute)
