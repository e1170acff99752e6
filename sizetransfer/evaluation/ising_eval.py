"""Size extrapolation against the Ising target, as plain torch + numpy functions (docs/metrics.md).

The learned model is any score on fields ``(n, 1, L, L)`` at a fixed probe σ. Observations are
``y = s + σ z`` with s prior spins (±1) and z ~ N(0, I). Response profiles are *signed*
Chebyshev-shell sums of the Jacobian row ``∂s_i/∂y_j`` (ferromagnetic covariances are positive;
:func:`~sizetransfer.evaluation.metrics.signed_response_profile`), averaged over observations; r = 0
is the diagonal ``∂s_i/∂y_i`` (which carries the −σ⁻² term), the convention of the exact response
``ising.response_profile`` (Eq. 22).

:func:`evaluate_ising` runs the whole comparison at every size and probe σ.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sizetransfer.atomic import atomic_output
from sizetransfer.evaluation.fdlf import check_at_least
from sizetransfer.evaluation.metrics import clean_score_rmse, response_relative_error, signed_response_profile
from sizetransfer.evaluation.score import BoundScore, ScoreFn, bind_score


@dataclass
class IsingEvalConfig:
    """Options of :func:`evaluate_ising` (the ``evaluation.*`` config keys; ``r_max`` is ``ising_r_max``).

    Args:
        seed: seed of the evaluation spins, the observation noise, the probe sites and the exact response.
        probe_sigmas: probe noise levels σ.
        r_max: largest Chebyshev distance of the response profile (≤ L // 2).
        response_distances: distances r of the headline metrics; ``None``: (1, receptive radius).
        exact_observations: observations y of the exact response (the expensive part; cached on disk).
        learned_observations: observations y of the learned response (one autograd pass over all of
            them per probe site: the Ising evaluation's main cost at L = 64).
        sites_per_observation: random probe sites per observation of the learned response.
        score_observations: observations y of the score RMSE against the MCMC smoothed score.
        response_kwargs, smoothed_score_kwargs: extra arguments of ``ising.response_profile`` /
            ``ising.smoothed_score`` (sampler settings).
        cache_dir: cache root of exact responses (``None``: :func:`default_cache_dir`).
    """

    seed: int = 12345
    probe_sigmas: Sequence[float] = (1.0, 2.0, 4.0, 8.0)
    r_max: int = 8
    response_distances: Sequence[int] | None = None
    exact_observations: int = 16
    learned_observations: int = 16
    sites_per_observation: int = 1
    score_observations: int = 4
    response_kwargs: dict[str, Any] = field(default_factory=dict)
    smoothed_score_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_at_least(seed=(self.seed, 0), ising_r_max=(self.r_max, 1),
                       exact_observations=(self.exact_observations, 2),
                       learned_observations=(self.learned_observations, 2),
                       sites_per_observation=(self.sites_per_observation, 1),
                       score_observations=(self.score_observations, 1))
        if len(self.probe_sigmas) == 0 or any(not s > 0 for s in self.probe_sigmas):
            raise ValueError(f"probe_sigmas must be a non-empty list of σ > 0, got {self.probe_sigmas}")
        if self.response_distances is not None and any(not 0 <= int(r) <= self.r_max for r in self.response_distances):
            raise ValueError(f"response_distances must lie in [0, ising_r_max={self.r_max}], got {self.response_distances}")
        self.seed, self.r_max = int(self.seed), int(self.r_max)
        self.probe_sigmas = [float(s) for s in self.probe_sigmas]
        self.response_distances = None if self.response_distances is None else [int(r) for r in self.response_distances]
        self.exact_observations, self.learned_observations = int(self.exact_observations), int(self.learned_observations)
        self.sites_per_observation = int(self.sites_per_observation)
        self.score_observations = int(self.score_observations)
        self.response_kwargs, self.smoothed_score_kwargs = dict(self.response_kwargs), dict(self.smoothed_score_kwargs)

    def check_size(self, L: int) -> None:
        """ValueError unless the profile fits the torus of size L."""
        if self.r_max > L // 2:
            raise ValueError(f"ising_r_max = {self.r_max} must be <= L // 2 = {L // 2} at eval size L = {L}")


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


def learned_response_profile(score_fn: BoundScore, y: torch.Tensor, r_max: int, *,
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
        rows = signed_response_profile(score_fn, y, site, r_max, periodic=True)
        per_obs += rows.detach().to("cpu", torch.float64)
    per_obs /= sites_per_observation
    mean = per_obs.mean(0).numpy()
    sem = (per_obs.std(0, unbiased=True) / math.sqrt(n)).numpy() if n > 1 else np.full(r_max + 1, np.nan)
    return mean, sem


def shell_response_error(learned: np.ndarray, exact: np.ndarray, r_in: int, r_out: int) -> float:
    """Relative error of the learned against the exact signed profile over the shells r = r_in..r_out
    (``response_relative_error``; the shell-summed form of Eq. 17's region responses, e.g. near = (1, 2),
    far = (5, 8)). Profiles (r_max + 1,) with r_max ≥ r_out."""
    return float(response_relative_error(torch.as_tensor(learned[r_in:r_out + 1], dtype=torch.float64),
                                         torch.as_tensor(exact[r_in:r_out + 1], dtype=torch.float64)))


def score_rmse_against_mcmc(score_fn: BoundScore, spins: torch.Tensor, y: torch.Tensor, beta: float, sigma: float,
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


def _ising_row(score: ScoreFn, spins: torch.Tensor, beta: float, L: int, k: int, sigma: float,
               config: IsingEvalConfig, distances: list[int], progress: bool) -> tuple[dict, dict]:
    """The metrics row and the profile entry of one (L, σ)."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 1009 * L + k)
    y = noisy_observations(spins, sigma, generator=gen)
    student = bind_score(score, sigma, None)
    learned, learned_sem = learned_response_profile(student, y[: config.learned_observations], config.r_max,
                                                    sites_per_observation=config.sites_per_observation,
                                                    generator=gen)
    exact, exact_err = exact_response_cached(L, beta, sigma, config.r_max, n_observations=config.exact_observations,
                                             seed=config.seed, cache_dir=config.cache_dir, progress=progress,
                                             **config.response_kwargs)
    n_s = config.score_observations
    rmse = score_rmse_against_mcmc(student, spins[:n_s], y[:n_s], beta, sigma, **config.smoothed_score_kwargs)
    row: dict[str, Any] = {"L": L, "sigma": sigma}
    for r in distances:
        row[f"response_exact_r{r}"] = float(exact[r])
        row[f"response_exact_stderr_r{r}"] = float(exact_err[r])
        row[f"response_learned_r{r}"] = float(learned[r])
        row[f"response_ratio_r{r}"] = float(learned[r] / exact[r])
    row["response_profile_error"] = float(response_relative_error(torch.from_numpy(learned[1:]),
                                                                  torch.from_numpy(exact[1:])))
    row["score_rmse"], row["score_rmse_mc_floor"] = rmse["rmse"], rmse["mc_floor"]
    profile = {"L": L, "sigma": sigma, "r": list(range(config.r_max + 1)), "exact": exact.tolist(),
               "exact_stderr": exact_err.tolist(), "student": learned.tolist(), "student_sem": learned_sem.tolist()}
    return row, profile


def evaluate_ising(score: ScoreFn, data, config: IsingEvalConfig | None = None, *, receptive_radius: int,
                   sizes: Sequence[int] | None = None, progress: bool = False) -> dict[str, Any]:
    """Learned against exact boundary response (Eq. 22) and score RMSE against the MCMC smoothed score.

    Args:
        score: model score ``(x, sigma, cond) -> score`` on float64 CPU tensors.
        data: anything with ``beta``, ``eval_sizes`` and ``eval_batch(L, n, *, seed)`` (±1 spins
            ``(n, 1, L, L)``; :mod:`sizetransfer.data.protocol`).
        receptive_radius: the student's R (default headline distances (1, R)).
        sizes: sizes L (default ``data.eval_sizes``).
    Returns:
        ``{"target": "ising", "target_name", "beta", "metric_keys", "rows", "profiles"}``: one row per
        (L, σ) (``response_exact_r<r>``, ``response_exact_stderr_r<r>``, ``response_learned_r<r>``,
        ``response_ratio_r<r>``, ``response_profile_error``, ``score_rmse``, ``score_rmse_mc_floor``)
        and one profile entry per (L, σ) (exact with stderr, learned with sem, r = 0..r_max).
    """
    config = config or IsingEvalConfig()
    beta = float(data.beta)
    distances = config.response_distances or sorted({1, min(int(receptive_radius), config.r_max)})
    n_y = max(config.learned_observations, config.score_observations)
    sizes = list(sizes or data.eval_sizes)
    rows, profiles = [], []
    bar = tqdm(total=len(sizes) * len(config.probe_sigmas), desc="Ising size extrapolation", disable=not progress)
    with torch.inference_mode(False), torch.no_grad():  # the Jacobians enable grad locally
        for L in sizes:
            spins = data.eval_batch(L, n_y, seed=config.seed)["x0"]
            for k, sigma in enumerate(config.probe_sigmas):
                row, profile = _ising_row(score, spins, beta, L, k, sigma, config, distances, progress)
                rows.append(row)
                profiles.append(profile)
                bar.update()
    bar.close()
    keys = [k for k in rows[0] if k not in ("L", "sigma")]
    return {"target": "ising", "target_name": "Ising", "beta": beta, "metric_keys": keys,
            "rows": rows, "profiles": profiles}
