"""The diagnosis numbers for the Ising target (no exact score: Eq. 22 and the MCMC smoothed score).

At the probe σ (``DiagnoseConfig.ising_sigma``), on observations y = s + σz of prior spins s
(docs/metrics.md, docs/diagnose.md), at each size L:

* target response profile: the exact signed shell sums of Eq. 22 with their standard errors
  (:func:`~sizetransfer.evaluation.ising_eval.exact_response_cached`, r = 0..L_train/2); its range R_q is
  taken on |ρ(r)| with the shells within ``ising_noise_z`` standard errors of 0 set to 0;
* model response profile: signed shell sums of its autograd Jacobian rows
  (:func:`~sizetransfer.evaluation.ising_eval.learned_response_profile`), range R_q and support on |ρ(r)|;
* RMSE: clean_score_rmse (Eq. 16) of the model's score against the MCMC smoothed score
  (``ising.smoothed_score`` started from the spins that generated y, as
  :func:`~sizetransfer.evaluation.ising_eval.score_rmse_against_mcmc`), per observation and pooled;
* near / far response errors: ``response_relative_error`` of the learned against the exact signed
  profile over the near / far shells (the shell-summed form of Eq. 17's region responses).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from sizetransfer.diagnose.config import DiagnoseConfig
from sizetransfer.evaluation.ising_eval import (exact_response_cached, learned_response_profile, noisy_observations,
                                                shell_response_error)
from sizetransfer.evaluation.metrics import clean_score_rmse, response_relative_error
from sizetransfer.evaluation.score import ScoreFn, bind_score
from sizetransfer.lattice import response_range
from sizetransfer.seeding import batch_seed


def check_ising_sizes(data, sizes: Sequence[int], train_size: int, config: DiagnoseConfig) -> None:
    """One-line ValueError for a size the Ising target or the far shells do not allow."""
    for L in [train_size, *sizes]:
        try:
            data.check_size(int(L))
        except ValueError as err:
            raise ValueError(f"size L = {L}: {err}") from None
    if config.far[1] > train_size // 2:
        raise ValueError(f"far = {config.far} must satisfy far[1] <= L // 2 = {train_size // 2} at the training "
                         f"size L = {train_size} (the profiles cover r = 0..L_train // 2)")
    if min(sizes) < train_size:
        raise ValueError(f"sizes must be >= the training size {train_size}, got {sorted(sizes)}")


def _normalised(profile: np.ndarray) -> list[float]:
    off = profile[1:].sum()
    return (profile / off).tolist() if off > 0 else [math.nan] * len(profile)


def ising_row(score: ScoreFn, data, L: int, r_max: int, config: DiagnoseConfig) -> tuple[dict, dict, list]:
    """The row, the profile entry and the per-observation RMSEs of size L."""
    import ising

    sigma, beta, n = config.ising_sigma, float(data.beta), config.n_samples
    spins = data.eval_batch(L, n, seed=config.seed)["x0"]
    gen = torch.Generator().manual_seed(batch_seed(config.seed, L))
    y = noisy_observations(spins, sigma, generator=gen)
    bound = bind_score(score, sigma, None)
    learned, learned_sem = learned_response_profile(bound, y, r_max, generator=gen)
    exact, exact_err = exact_response_cached(L, beta, sigma, r_max, n_observations=config.ising_exact_observations,
                                             seed=config.seed)
    target, _ = ising.smoothed_score(y[:, 0].numpy(), beta, sigma, init=spins[:, 0].to(torch.int8).numpy())
    target = torch.as_tensor(np.asarray(target, dtype=np.float64))
    with torch.no_grad():
        model = bound(y)[:, 0].detach().to("cpu", torch.float64)
    per = [float(clean_score_rmse(model[b:b + 1], target[b:b + 1])) for b in range(n)]
    exact_abs = np.where(np.abs(exact) > config.ising_noise_z * exact_err, np.abs(exact), 0.0)
    learned_abs = np.abs(learned)
    row: dict[str, Any] = {"L": L, "rmse": float(clean_score_rmse(model, target)),
                           "rmse_se": float(np.std(per, ddof=1) / math.sqrt(n)) if n > 1 else math.nan}
    for name, (r_in, r_out) in (("near", config.near), ("far", config.far)):
        row[f"{name}_response_error"] = shell_response_error(learned, exact, r_in, r_out)
    row["response_profile_error"] = float(response_relative_error(torch.from_numpy(learned[1:]),
                                                                  torch.from_numpy(exact[1:])))
    row["response_range_student"] = int(response_range(torch.from_numpy(learned_abs), config.q))
    row["response_range_teacher"] = int(response_range(torch.from_numpy(exact_abs), config.q))
    profile = {"L": L, "r": list(range(r_max + 1)), "teacher": _normalised(exact_abs),
               "student": _normalised(learned_abs), "exact": exact.tolist(), "exact_stderr": exact_err.tolist(),
               "learned": learned.tolist(), "learned_sem": learned_sem.tolist()}
    return row, profile, per
