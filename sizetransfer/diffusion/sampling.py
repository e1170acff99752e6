"""Reverse-diffusion samplers for the VE process, one signature (k-diffusion style).

Every sampler is ``sample_x(model, x, sigmas, *, cond=None, mask=None, generator=None,
denoise=False, progress=False, ...)``:

* ``model(x, sigma, cond) -> score`` with x (n, C, *lattice), sigma (n,); any score function
  (a student, or a teacher's exact smoothed score) fits. Samplers run under ``torch.no_grad``.
* ``x``: the initial state at ``sigmas[0]`` (the caller draws it, e.g. σ_max · N(0, I)).
* ``sigmas``: decreasing schedule (e.g. :meth:`VENoise.sigmas`); it may end in 0, in which case
  the last step is the noise-free Tweedie step to the clean data.
* ``mask``: optional (n, 1, *lattice) 0/1 site mask: only masked coordinates move (3D: occupied).
* ``denoise``: if the schedule ends at σ_last > 0, return the Tweedie denoised
  ``x + σ_last² s(x, σ_last)`` (the posterior mean E[X0 | x], :func:`~sizetransfer.diffusion.tweedie.tweedie_denoise`)
  instead of the sample at σ_last; no effect when the schedule ends in 0.
Returns the final x, shape of ``x``.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .tweedie import tweedie_denoise


def _score(model, x, sigma, cond, mask):
    s = model(x, sigma.expand(x.shape[0]).to(x.dtype), cond)
    return s if mask is None else s * mask


def _noise(x, generator, mask):
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return z if mask is None else z * mask


def _check(x, sigmas):
    sigmas = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device)
    if sigmas.dim() != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D schedule of length >= 2, got shape {tuple(sigmas.shape)}")
    if not bool((sigmas[1:] < sigmas[:-1]).all()) or bool(sigmas[-1] < 0) or bool(sigmas[-2] <= 0):
        raise ValueError("sigmas must be strictly decreasing and positive (the last may be 0)")
    return sigmas


def _finish(model, x, sigmas, cond, mask, denoise):
    last = sigmas[-1]
    if denoise and last > 0:
        x = tweedie_denoise(x, _score(model, x, last, cond, mask), last)
    return x


def _euler_maruyama_step(model, x, sigma, sigma_next, cond, generator, mask):
    """Reverse-SDE step σ → σ_next: x += (σ² − σ_next²) s + √(σ² − σ_next²) z; to σ_next = 0 it is the
    Tweedie step x + σ² s."""
    if sigma_next == 0:
        return tweedie_denoise(x, _score(model, x, sigma, cond, mask), sigma)
    var = sigma ** 2 - sigma_next ** 2
    x = x + var * _score(model, x, sigma, cond, mask)
    return x + var.sqrt() * _noise(x, generator, mask)


@torch.no_grad()
def sample_euler_maruyama(model, x, sigmas, *, cond=None, mask=None, generator=None,
                          denoise=False, progress=False):
    """Euler–Maruyama discretisation of the VE reverse SDE dx = −d(σ²) s dt + dσ² dW̄."""
    sigmas = _check(x, sigmas)
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="EM"):
        x = _euler_maruyama_step(model, x, sigmas[i], sigmas[i + 1], cond, generator, mask)
    return _finish(model, x, sigmas, cond, mask, denoise)


@torch.no_grad()
def sample_predictor_corrector(model, x, sigmas, *, snr=0.16, n_corrector=1, cond=None,
                               mask=None, generator=None, denoise=False, progress=False):
    """Predictor–corrector sampler (Song et al. 2021): at each σ_i, ``n_corrector`` Langevin
    steps x += ε s + √(2ε) z with ε = 2 (snr ‖z‖ / ‖s‖)², then one Euler–Maruyama predictor
    step to σ_{i+1}. As in Song et al.'s reference code, ‖z‖ and ‖s‖ are batch means of the
    per-sample norms: a per-sample ε would depend on the sample's own state, and that biases
    the Langevin chain's stationary law (measured: +2% variance on a 8×8 Gaussian)."""
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if n_corrector < 0:
        raise ValueError(f"n_corrector must be >= 0, got {n_corrector}")
    sigmas = _check(x, sigmas)
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="PC"):
        for _ in range(n_corrector):
            s = _score(model, x, sigmas[i], cond, mask)
            z = _noise(x, generator, mask)
            s_norm = s.flatten(1).norm(dim=1).mean().clamp_min(torch.finfo(x.dtype).tiny)
            step = 2 * (snr * z.flatten(1).norm(dim=1).mean() / s_norm) ** 2
            x = x + step * s + (2 * step).sqrt() * z
        x = _euler_maruyama_step(model, x, sigmas[i], sigmas[i + 1], cond, generator, mask)
    return _finish(model, x, sigmas, cond, mask, denoise)


@torch.no_grad()
def sample_probability_flow(model, x, sigmas, *, cond=None, mask=None, generator=None,
                            denoise=False, progress=False):
    """Heun (2nd order) integration of the probability-flow ODE dx/dσ = −σ s(x, σ)
    (a last step to σ = 0 is Euler's, x + σ² s: the Tweedie step). Deterministic; ``generator`` is
    accepted for the common signature and unused."""
    sigmas = _check(x, sigmas)
    for i in tqdm(range(len(sigmas) - 1), disable=not progress, desc="PF-ODE"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        s = _score(model, x, sigma, cond, mask)
        if sigma_next == 0:
            x = tweedie_denoise(x, s, sigma)
            continue
        d = -sigma * s
        x_next = x + (sigma_next - sigma) * d
        d_next = -sigma_next * _score(model, x_next, sigma_next, cond, mask)
        x = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return _finish(model, x, sigmas, cond, mask, denoise)
