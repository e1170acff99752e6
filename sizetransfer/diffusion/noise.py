"""Variance-exploding noise process: x_σ = x_0 + σ ε, ε ~ N(0, I) (DESIGN.md section 3)."""
from __future__ import annotations

import math

import torch


def geometric_sigmas(sigma_max: float, sigma_min: float, n_steps: int, *,
                     append_zero: bool = False, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decreasing geometric noise schedule σ_max = σ_0 > σ_1 > ... > σ_{n-1} = σ_min.

    Returns (n_steps,) or, with ``append_zero``, (n_steps + 1,) ending in σ = 0; the samplers
    of :mod:`sizetransfer.diffusion.sampling` then take a last step to the clean data.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}")
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    sig = torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n_steps,
                         device=device, dtype=torch.float64)
    sig[0], sig[-1] = sigma_max, sigma_min  # exact end points despite logspace rounding
    if append_zero:
        sig = torch.cat([sig, sig.new_zeros(1)])
    return sig.to(dtype)


class VENoise:
    """VE noise process with σ ~ log-uniform[σ_min, σ_max] for training (Eq. 3).

    Plain object (no parameters); all tensors follow the data's (n, channels, *lattice) layout,
    σ is one value per sample, shape (n,).
    """

    def __init__(self, sigma_min: float, sigma_max: float):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got sigma_min={sigma_min}")
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def __repr__(self) -> str:
        return f"VENoise(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sample_sigma(self, n: int, *, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(n,) noise levels, log σ uniform on [log σ_min, log σ_max]."""
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(log_min + u * (log_max - log_min)).to(dtype)

    @staticmethod
    def perturb(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_σ = x0 + σ ε; x0, noise (n, C, *lattice), sigma (n,) broadcast over the rest."""
        return x0 + expand_sigma(sigma, x0) * noise

    def sigmas(self, n_steps: int, *, append_zero: bool = False, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Sampling schedule σ_max → σ_min, see :func:`geometric_sigmas`."""
        return geometric_sigmas(self.sigma_max, self.sigma_min, n_steps,
                                append_zero=append_zero, device=device, dtype=dtype)


def expand_sigma(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View σ of shape (n,) (or a scalar) as (n, 1, ..., 1) to broadcast against x."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        return sigma
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape ({x.shape[0]},) or be a scalar, "
                         f"got {tuple(sigma.shape)}")
    return sigma.view(-1, *([1] * (x.dim() - 1)))
