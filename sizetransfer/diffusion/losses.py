"""Denoising score matching loss (Eq. 3) with weight λ(σ) = σ²."""
from __future__ import annotations

import torch

from .noise import VENoise, expand_sigma


def dsm_loss(model, x0: torch.Tensor, noise_process: VENoise, *, cond: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
             sigma: torch.Tensor | None = None):
    """DSM loss ``|| σ s_θ(x0 + σ ε, σ) + ε ||²`` averaged over sites and channels.

    model: ``model(x, sigma, cond) -> score``, x (n, C, *lattice), sigma (n,).
    mask: optional (n, 1, *lattice) 0/1 site mask (3D: occupied sites). The noise process then
    acts on the masked coordinates only (ε is zeroed elsewhere, so unmasked sites stay at x0)
    and the average runs over masked sites × channels.
    sigma: fixed (n,) noise levels instead of log-uniform draws.
    Returns ``(loss, per_sample, sigma)``: the scalar loss (sum over the batch of masked squared
    errors / number of masked entries), the (n,) per-sample mean and the (n,) σ used.
    """
    n = x0.shape[0]
    if sigma is None:
        sigma = noise_process.sample_sigma(n, generator=generator, device=x0.device, dtype=x0.dtype)
    else:
        sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
        sigma = sigma.expand(n) if sigma.dim() == 0 else sigma  # other shapes: ValueError in perturb
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if mask is not None:
        mask = mask.to(x0.dtype).expand_as(x0)
        eps = eps * mask
    x_sigma = noise_process.perturb(x0, sigma, eps)
    err = (expand_sigma(sigma, x0) * model(x_sigma, sigma, cond) + eps).square()
    if mask is None:
        count = x0[0].numel() * torch.ones(n, dtype=x0.dtype, device=x0.device)
    else:
        err = err * mask
        count = mask.flatten(1).sum(1)
    sq = err.flatten(1).sum(1)
    per_sample = sq / count.clamp_min(1)
    loss = sq.sum() / count.sum().clamp_min(1)
    return loss, per_sample, sigma
