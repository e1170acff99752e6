"""Denoising score matching loss (Eq. 3) with weight λ(σ) = σ² (or σ^p), and the oracle control's regression loss."""
from __future__ import annotations

import math

import torch

from .noise import VENoise, expand_sigma


def dsm_loss(model, x0: torch.Tensor, noise_process: VENoise, *, cond: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
             sigma: torch.Tensor | None = None, antithetic: bool = False, noise_draws: int = 1,
             lambda_power: float = 2.0):
    """DSM loss ``|| σ s_θ(x0 + σ ε, σ) + ε ||²`` averaged over sites and channels.

    model: ``model(x, sigma, cond) -> score``, x (n, C, *lattice), sigma (n,).
    mask: optional (n, 1, *lattice) 0/1 site mask (3D: occupied sites). The noise process then
    acts on the masked coordinates only (ε is zeroed elsewhere, so unmasked sites stay at x0)
    and the average runs over masked sites × channels.
    sigma: fixed (n,) noise levels instead of draws from ``noise_process``.
    antithetic: every sample is noised twice, with ε and −ε at the same σ (a batch of 2n; unbiased,
    since −ε ~ N(0, I) too). The O(σ) noise term of the gradient, ε ∂_θ s_θ, then cancels between
    the pair to first order in σ, which removes most of DSM's variance at low σ (docs/training.md).
    noise_draws: K ≥ 1 independent (σ, ε) draws per sample (each an antithetic pair when ``antithetic``):
    the sample is repeated K times before the noise levels are drawn, so one teacher sample buys K noisy
    copies (K× the student's compute, the same teacher samples; a given ``sigma`` is repeated too).
    lambda_power: p of the weight λ(σ) = σ^p of Eq. 3 (the loss is λ(σ) || s_θ + ε/σ ||²): 2 (default) is the
    σ² above; p < 2 weighs the low noise levels up, p > 2 down (each sample's error times σ^(p − 2)).
    Returns ``(loss, per_sample, sigma)``: the scalar loss (sum over the batch of masked squared
    errors / number of masked entries), the per-sample mean and the σ used ((Kn,), or (2Kn,) when antithetic).
    """
    if int(noise_draws) != noise_draws or noise_draws < 1:
        raise ValueError(f"noise_draws must be an integer >= 1, got {noise_draws}")
    if not math.isfinite(lambda_power):
        raise ValueError(f"lambda_power must be a finite number (λ(σ) = σ^lambda_power; 2 is Eq. 3), got {lambda_power}")
    if noise_draws > 1:
        repeat = lambda t: None if t is None else t.repeat_interleave(int(noise_draws), 0)  # noqa: E731
        sigma = None if sigma is None else repeat(_noise_levels(x0, noise_process, sigma, generator))
        x0, cond, mask = repeat(x0), repeat(cond), repeat(mask)
    sigma = _noise_levels(x0, noise_process, sigma, generator)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if antithetic:
        x0, sigma, eps = torch.cat([x0, x0]), torch.cat([sigma, sigma]), torch.cat([eps, -eps])
        cond = None if cond is None else torch.cat([cond, cond])
        mask = None if mask is None else torch.cat([mask, mask])
    if mask is not None:
        mask = mask.to(x0.dtype).expand_as(x0)
        eps = eps * mask
    x_sigma = noise_process.perturb(x0, sigma, eps)
    err = (expand_sigma(sigma, x0) * model(x_sigma, sigma, cond) + eps).square()
    if lambda_power != 2:
        err = err * expand_sigma(sigma ** (lambda_power - 2), x0)
    return _masked_mean(err, mask, sigma)


def exact_score_loss(model, x0: torch.Tensor, score: torch.Tensor, noise_process: VENoise, *,
                     cond: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, sigma: torch.Tensor | None = None):
    """Oracle control: ``|| s_θ(x0, σ) − ∇ log p(x0) ||²`` averaged over sites and channels.

    The student sees the clean sample x0 with the noise level σ drawn as in DSM and is regressed on
    the exact clean score ``score`` (same shape as x0): no DSM noise in the target, so its error at
    σ_eval is what a student of this radius can reach (the range-limited floor; docs/training.md).
    mask, sigma and the return value ``(loss, per_sample, sigma)`` as in :func:`dsm_loss`.
    """
    sigma = _noise_levels(x0, noise_process, sigma, generator)
    return _masked_mean((model(x0, sigma, cond) - score.to(x0.dtype)).square(), mask, sigma)


def _noise_levels(x0, noise_process: VENoise, sigma, generator) -> torch.Tensor:
    """(n,) σ: drawn from ``noise_process`` when ``sigma`` is None, else ``sigma`` (a scalar is expanded;
    other shapes fail in ``perturb``/``expand_sigma``)."""
    n = x0.shape[0]
    if sigma is None:
        return noise_process.sample_sigma(n, generator=generator, device=x0.device, dtype=x0.dtype)
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    return sigma.expand(n) if sigma.dim() == 0 else sigma


def _masked_mean(err: torch.Tensor, mask: torch.Tensor | None, sigma: torch.Tensor):
    """``(loss, per_sample, sigma)`` of squared errors err (n, C, *lattice), over the masked sites."""
    n = err.shape[0]
    if mask is None:
        count = err[0].numel() * torch.ones(n, dtype=err.dtype, device=err.device)
    else:
        mask = mask.to(err.dtype).expand_as(err)
        err = err * mask
        count = mask.flatten(1).sum(1)
    sq = err.flatten(1).sum(1)
    return sq.sum() / count.sum().clamp_min(1), sq / count.clamp_min(1), sigma
