"""Ising-target evaluation pieces (DESIGN.md §6, §7 "Ising boundary response"); plain torch + numpy.

The learned model is any ``score_fn(y) -> score`` on fields ``(n, 1, L, L)`` at a fixed probe σ.
Observations are ``y = s + σ z`` with s prior spins (±1) and z ~ N(0, I). Response profiles are
*signed* Chebyshev-shell sums of the Jacobian row ``∂s_i/∂y_j`` (ferromagnetic covariances are
positive), averaged over observations; r = 0 is the diagonal ``∂s_i/∂y_i`` (which carries the
−σ⁻² term), the same convention as ``ising.response_profile``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from sizetransfer.evaluation.metrics import clean_score_rmse, score_response_profile

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file; the parent directory is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")  # usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def default_cache_dir() -> Path:
    """``$SIZETRANSFER_CACHE`` or ``$XDG_CACHE_HOME/sizetransfer`` (default ``~/.cache/sizetransfer``)."""
    root = os.environ.get("SIZETRANSFER_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sizetransfer"


def exact_response_cached(L: int, beta: float, sigma: float, r_max: int, *, n_observations: int,
                          seed: int = 0, cache_dir: str | os.PathLike | None = None, progress: bool = False,
                          **response_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Exact y-averaged response profile ``ising.response_profile`` (Eq. 22), cached on disk.

    Returns ``(rho, stderr)``, each float64 ``(r_max + 1,)``: signed shell sums, ρ(0) including
    −σ⁻², stderr over observations. The cache file
    ``<cache_dir>/ising_response/L…_beta…_sigma…_r…_n…_seed…[_<kwargs hash>].npz`` is keyed by
    every argument but ``progress`` (sampler settings in ``response_kwargs`` included), so a
    changed setting never reuses a stale result; ``cache_dir=None`` uses :func:`default_cache_dir`.
    """
    import ising

    name = f"L{L}_beta{beta:.12g}_sigma{sigma:.12g}_r{r_max}_n{n_observations}_seed{seed}"
    if response_kwargs:
        blob = json.dumps(response_kwargs, sort_keys=True, default=str).encode()
        name += "_" + hashlib.sha1(blob).hexdigest()[:10]
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "ising_response" / f"{name}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["rho"], f["stderr"]
    rho, stderr = ising.response_profile(L, beta, sigma, r_max, n_observations=n_observations,
                                         seed=seed, progress=progress, **response_kwargs)
    rho, stderr = np.asarray(rho, dtype=np.float64), np.asarray(stderr, dtype=np.float64)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, rho=rho, stderr=stderr)
    return rho, stderr


def noisy_observations(spins: torch.Tensor, sigma: float, *, generator: torch.Generator) -> torch.Tensor:
    """``y = s + σ z``: spins (n, 1, L, L) ±1 → float64 observations of the same shape."""
    s = spins.to(torch.float64)
    return s + sigma * torch.randn(s.shape, generator=generator, dtype=torch.float64)


def learned_response_profile(score_fn: ScoreFn, y: torch.Tensor, r_max: int, *,
                             sites_per_observation: int = 1,
                             generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Signed shell sums of the learned score's autograd Jacobian row, averaged over observations.

    y: (n, 1, L, L) observations; each draws ``sites_per_observation`` uniform probe sites (the
    torus is translation invariant). Returns ``(mean, sem)`` float64 ``(r_max + 1,)``, the standard
    error taken over the n observations (sites of one observation averaged first).
    """
    n, L = y.shape[0], y.shape[-1]
    per_obs = torch.zeros(n, r_max + 1, dtype=torch.float64)
    for _ in range(sites_per_observation):
        site = tuple(int(c) for c in torch.randint(0, L, (2,), generator=generator))
        rows = score_response_profile(score_fn, y, site, r_max, periodic=True, absolute=False)
        per_obs += rows.detach().to("cpu", torch.float64)
    per_obs /= sites_per_observation
    mean = per_obs.mean(0).numpy()
    sem = (per_obs.std(0, unbiased=True) / math.sqrt(n)).numpy() if n > 1 else np.full(r_max + 1, np.nan)
    return mean, sem


def score_rmse_against_mcmc(score_fn: ScoreFn, spins: torch.Tensor, y: torch.Tensor, beta: float, sigma: float,
                            **score_kwargs) -> dict[str, float]:
    """Relative RMSE of the learned score against the MCMC smoothed score ``ising.smoothed_score``.

    spins (n, 1, L, L) ±1 are the prior samples that generated y (n, 1, L, L): exact posterior
    draws, so the chains start from them without burn-in (unless ``score_kwargs`` sets ``init``).
    ``rmse = sqrt(Σ (s_θ − ŝ)² / Σ ŝ²)`` over all sites (Eq. 16 with the MCMC target);
    ``mc_floor = sqrt(Σ stderr² / Σ ŝ²)`` is the rmse that the MCMC estimate's own error alone
    would give (an rmse near the floor means the student is within Monte Carlo error).
    """
    import ising

    score_kwargs.setdefault("init", spins[:, 0].to(torch.int8).cpu().numpy())
    target, stderr = ising.smoothed_score(y[:, 0].detach().cpu().numpy(), beta, sigma, **score_kwargs)
    target = torch.as_tensor(np.asarray(target, dtype=np.float64))
    stderr = torch.as_tensor(np.asarray(stderr, dtype=np.float64))
    with torch.no_grad():
        learned = score_fn(y)[:, 0].detach().to("cpu", torch.float64)
    return {"rmse": float(clean_score_rmse(learned, target)),
            "mc_floor": float(clean_score_rmse(target + stderr, target))}
