"""Tweedie's formula (paper Eq. 7; docs/method.md): the posterior mean of the clean field given
the noisy one, from the score of the smoothed density.

For x_σ = x_0 + σ ε, ε ~ N(0, I): E[X_0 | X_σ = x] = x + σ² ∇_x log p_σ(x), equivalently
s_σ(x) = (E[X_0 | X_σ = x] − x) / σ².
"""
from __future__ import annotations

import torch


def tweedie_denoise(x: torch.Tensor, score: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """E[X_0 | X_σ = x] = x + σ² s_σ(x).

    x, score: (n, C, *lattice); sigma: a float, a 0-d tensor or per-sample (n,) noise levels.
    Returns the denoised field, shape of x.
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 1:
        sigma = sigma.view(-1, *([1] * (x.dim() - 1)))
    return x + sigma ** 2 * score
