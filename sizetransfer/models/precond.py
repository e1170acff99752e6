"""EDM preconditioning (Karras et al. 2022): how σ enters the network and how its output is scaled.

    D_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ))
    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),
    c_noise = ¼ ln σ,

and the score follows by Tweedie, s_θ = (D_θ − x) / σ² (docs/method.md, "Preconditioning").
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..diffusion.noise import expand_sigma


class EDMCoefficients(NamedTuple):
    """c_skip, c_out, c_in shaped (n, 1, ..., 1) to broadcast against x; c_noise (n,)."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_coefficients(sigma: torch.Tensor, x: torch.Tensor, sigma_data: float = 1.0) -> EDMCoefficients:
    """The four EDM coefficients at noise level σ (a scalar or (n,)) for data x (n, C, *lattice)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    s = expand_sigma(sigma, x)  # validates the shape (n,)
    if sigma.dim() == 0:
        sigma, s = sigma.expand(x.shape[0]), s.expand(x.shape[0], *([1] * (x.dim() - 1)))
    var = s ** 2 + sigma_data ** 2
    return EDMCoefficients(sigma_data ** 2 / var, s * sigma_data / var.sqrt(), var.rsqrt(), 0.25 * sigma.log())


class EDMPrecond(nn.Module):
    """EDM denoiser D_θ around a raw network ``net(x, c_noise, cond)`` (see the module docstring).

    Conditioning channels go to the network unscaled. ``score`` returns (D_θ − x)/σ², written as
    −x/(σ² + σ_d²) + c_out F / σ² so that it does not cancel at small σ.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 1.0):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def _parts(self, x, sigma, cond):
        c = edm_coefficients(sigma, x, self.sigma_data)
        return c, self.net(c.c_in * x, c.c_noise, cond)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        """Denoiser D_θ(x, σ): x (n, C, *lattice), sigma (n,) or a scalar → (n, C, *lattice)."""
        c, f = self._parts(x, sigma, cond)
        return c.c_skip * x + c.c_out * f

    def score(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        """Score (D_θ(x, σ) − x) / σ², same shapes as :meth:`forward`."""
        c, f = self._parts(x, sigma, cond)
        s = c.c_out / (self.sigma_data * c.c_in)  # σ, shaped like c_out
        # (c_skip − 1)/σ² = −c_in²,  c_out/σ² = σ_d c_in / σ
        return -x * c.c_in ** 2 + (self.sigma_data * c.c_in / s) * f
