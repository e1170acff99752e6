"""Variance-exploding noise process: x_σ = x_0 + σ ε, ε ~ N(0, I) (Eq. 1; docs/method.md)."""
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
    """VE noise process with the training distribution of σ (Eq. 3; docs/training.md).

    ``distribution="log_uniform"``: log σ uniform on [log σ_min, log σ_max] (the paper's).
    ``"log_normal"``: log σ ~ N(log ``sigma_center``, ``log_std``²) truncated to [σ_min, σ_max]
    (EDM's choice), which puts the training signal where the evaluation is (low σ).
    ``stratified=True`` draws a batch's n levels one from each of n equal-probability strata
    (u_i = (i + v_i)/n, v_i uniform; VDM's low-discrepancy sampler): every level is still distributed as
    above, and the batch covers the σ range evenly, which lowers the variance of the loss over σ.
    Plain object (no parameters); all tensors follow the data's (n, channels, *lattice) layout,
    σ is one value per sample, shape (n,).
    """

    DISTRIBUTIONS = ("log_uniform", "log_normal")

    def __init__(self, sigma_min: float, sigma_max: float, distribution: str = "log_uniform",
                 sigma_center: float | None = None, log_std: float = 1.0, stratified: bool = False):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got sigma_min={sigma_min}")
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}")
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(f"sigma_distribution must be one of {self.DISTRIBUTIONS}, got {distribution!r}")
        if sigma_center is None:
            sigma_center = math.sqrt(sigma_min * sigma_max)
        if not sigma_min <= sigma_center <= sigma_max:
            raise ValueError(f"sigma_center must be in [sigma_min, sigma_max] = [{sigma_min}, {sigma_max}], "
                             f"got {sigma_center}")
        if not log_std > 0:
            raise ValueError(f"sigma_log_std must be > 0, got {log_std}")
        self.sigma_min, self.sigma_max, self.distribution = sigma_min, sigma_max, distribution
        self.sigma_center, self.log_std = float(sigma_center), float(log_std)
        self.stratified = bool(stratified)

    def __repr__(self) -> str:
        extra = (f", distribution='log_normal', sigma_center={self.sigma_center}, log_std={self.log_std}"
                 if self.distribution == "log_normal" else "")
        extra += ", stratified=True" if self.stratified else ""
        return f"VENoise(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}{extra})"

    def sample_sigma(self, n: int, *, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(n,) training noise levels drawn from the distribution (one uniform draw each; with
        ``stratified``, level i from the i-th of n equal-probability strata, in increasing order)."""
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        if self.stratified:
            u = (torch.arange(n, device=device, dtype=torch.float64) + u) / n
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        if self.distribution == "log_uniform":
            return torch.exp(log_min + u * (log_max - log_min)).to(dtype)
        # truncated normal in log σ by inverse CDF: u ↦ Φ⁻¹(Φ(a) + u (Φ(b) − Φ(a)))
        mu, s = math.log(self.sigma_center), self.log_std
        lo, hi = (0.5 * math.erfc(-(v - mu) / (s * math.sqrt(2))) for v in (log_min, log_max))
        z = torch.special.ndtri(lo + u * (hi - lo))
        return torch.exp(mu + s * z).clamp(self.sigma_min, self.sigma_max).to(dtype)

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
