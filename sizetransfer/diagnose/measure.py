"""What decides size transfer, measured on one model and one exact target (docs/diagnose.md).

Every number comes from the project's evaluation: :func:`~sizetransfer.evaluation.evaluate_fdlf`
(clean-score RMSE, Eq. 16; near/far responses, Eq. 17; response profiles and ranges R_q, Eq. 5) at
each size, and :func:`~sizetransfer.evaluation.metrics.clean_score_rmse` per sample for the spread.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from sizetransfer.diagnose.config import DiagnoseConfig
from sizetransfer.evaluation.far_share import far_share
from sizetransfer.evaluation.fdlf import FDLFEvalConfig, evaluate_fdlf, sigma_name
from sizetransfer.evaluation.flatness import log_size_slope
from sizetransfer.evaluation.metrics import clean_score_rmse
from sizetransfer.evaluation.score import ScoreFn, bind_score


def eval_config(config: DiagnoseConfig) -> FDLFEvalConfig:
    """The evaluation options of ``config`` (profiles over the whole torus, r = 0..L/2)."""
    return FDLFEvalConfig(n_samples=config.n_samples, seed=config.seed, sigma_eval=config.sigma_eval,
                          near=config.near, far=config.far, n_probes=config.n_probes,
                          fd_epsilon=config.fd_epsilon, response_samples=config.response_samples, q=config.q)


def default_sizes(train_size: int, max_size: int, extra: Sequence[int] = ()) -> list[int]:
    """train L × (1, 4/3, 2, 8/3, 4, 16/3, 8, ...) rounded to even sizes, up to ``max_size``, with ``extra``."""
    sizes = {int(train_size)}
    k = 0
    while True:
        for f in (1.0, 4 / 3):
            L = int(round(train_size * 2 ** k * f / 2)) * 2
            if L <= max_size:
                sizes.add(L)
        if train_size * 2 ** k > max_size:
            break
        k += 1
    sizes |= {int(L) for L in extra if int(L) <= max_size}
    return sorted(L for L in sizes if L >= train_size)


def check_sizes(teacher, sizes: Sequence[int], train_size: int, econf: FDLFEvalConfig) -> None:
    """One-line ValueError naming the first size the target or the response regions do not allow."""
    for L in [train_size, *sizes]:
        try:
            econf.check_size(teacher, int(L))
        except ValueError as err:
            raise ValueError(f"size L = {L}: {err}") from None
    if min(sizes) < train_size:
        raise ValueError(f"sizes must be >= the training size {train_size}, got {sorted(sizes)}")


def check_score_shape(score: ScoreFn, data, train_size: int, config: DiagnoseConfig) -> None:
    """Call the model once on 2 samples at the training size: ValueError unless it returns the shape of x,
    differentiably in x."""
    x = data.eval_batch(train_size, config.n_samples, seed=config.seed)["x0"][:2].to(torch.float64)
    x = x.detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = score(x, config.sigma_eval, None)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 (a user's model failing on our input: say so in one line)
        raise ValueError(f"score_fn failed on x of shape {tuple(x.shape)} at sigma={config.sigma_eval}: "
                         f"{type(err).__name__}: {err}") from None
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {tuple(out.shape)}")
    if not out.requires_grad:
        raise ValueError("score_fn must be differentiable in x (its response profile is an autograd Jacobian "
                         "row), but its output carries no gradient (detached or computed under no_grad)")


def per_sample_rmse(score: ScoreFn, data, L: int, config: DiagnoseConfig) -> np.ndarray:
    """Clean-score relative RMSE (Eq. 16) of each evaluation sample at size L, float64 (n_samples,)."""
    batch = data.eval_batch(L, config.n_samples, seed=config.seed)
    x = batch["x0"].to(torch.float64)
    with torch.no_grad():
        learned = bind_score(score, config.sigma_eval, batch.get("cond"))(x).detach()
        target = data.teacher.score(x)
    return np.array([float(clean_score_rmse(learned[b:b + 1], target[b:b + 1])) for b in range(len(x))])


def trend(sizes: Sequence[int], rmse: Sequence[float], se: Sequence[float]) -> dict[str, float]:
    """Weighted least-squares line RMSE(L) = a + b ln L (:func:`~sizetransfer.evaluation.flatness.log_size_slope`
    with weights 1/se², se the standard error of each size's RMSE from its per-sample spread; sizes are
    independent draws).

    Returns slope b with its standard error, and the fitted relative change
    b ln(L_max / L_train) / RMSE(L_train) (0 when RMSE(L_train) is 0)."""
    if len(sizes) < 2:
        return {"slope": 0.0, "slope_se": math.inf, "relative_change": 0.0}
    fit = log_size_slope(sizes, rmse, se)
    base = float(rmse[0])
    change = 0.0 if base == 0 else fit["slope"] * math.log(sizes[-1] / sizes[0]) / base
    return {"slope": fit["slope"], "slope_se": fit["slope_se"], "relative_change": float(change)}


def support(profile: Sequence[float], tol: float) -> int:
    """Largest r whose shell holds more than ``tol`` of the off-diagonal response of a normalised profile
    (Σ_{r ≥ 1} = 1); 0 for a model with no off-diagonal response."""
    p = np.asarray(profile, dtype=np.float64)
    above = np.nonzero(np.nan_to_num(p[1:], nan=0.0) > tol)[0]
    return int(above[-1] + 1) if len(above) else 0


def fdlf_row(score: ScoreFn, data, L: int, config: DiagnoseConfig) -> tuple[dict, dict, list]:
    """The row (``evaluate_fdlf``'s, plus ``rmse`` and its standard error ``rmse_se``), the profile entry and
    the per-sample RMSEs of size L."""
    res = evaluate_fdlf(score, data, eval_config(config), receptive_radius=0, sizes=[L])
    per = per_sample_rmse(score, data, L, config)
    row = dict(res["rows"][0])
    row["rmse"] = row[f"rmse_sigma{sigma_name(config.sigma_eval)}"]
    row["rmse_se"] = float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else math.nan
    return row, res["profiles"][0], per.tolist()


def measure(score: ScoreFn, data, *, train_size: int, sizes: Sequence[int], config: DiagnoseConfig,
            oracle: ScoreFn | None = None, progress=None, kind: str = "fdlf") -> dict[str, Any]:
    """All numbers of a diagnosis: one row and profile per size (:func:`fdlf_row`; Ising:
    :func:`~sizetransfer.diagnose.ising_target.ising_row`), per-sample RMSEs, the trend, the target's and the
    model's ranges, and the oracle floor at the training size when ``oracle`` is given. ``progress``: a tqdm
    bar advanced once per step (sizes, then the oracle)."""
    from sizetransfer.diagnose.ising_target import ising_row

    rows, profiles, spread = [], [], []
    for L in sizes:
        if progress is not None:
            progress.set_postfix_str(f"L = {L}")
        if kind == "ising":
            row, profile, per = ising_row(score, data, L, train_size // 2, config)
        else:
            row, profile, per = fdlf_row(score, data, L, config)
        rows.append(row)
        profiles.append(profile)
        spread.append(per)
        if progress is not None:
            progress.update()
    floor = None
    if oracle is not None:
        if progress is not None:
            progress.set_postfix_str("oracle floor")
        floor = float(fdlf_row(oracle, data, train_size, config)[0]["rmse"])
        if progress is not None:
            progress.update()
    fit = trend([r["L"] for r in rows], [r["rmse"] for r in rows], [r["rmse_se"] for r in rows])
    ranges = [r["response_range_teacher"] for r in rows]
    t_prof = np.asarray(profiles[0]["teacher"])
    return {"rows": rows, "profiles": profiles, "per_sample_rmse": spread, "trend": fit,
            "target_range": max(ranges), "target_range_L": rows[int(np.argmax(ranges))]["L"],
            "model_range_q": int(rows[-1]["response_range_student"]),
            "model_support": support(profiles[-1]["student"], config.support_tol),
            "target_far_share": far_share(t_prof, config.far), "oracle_floor": floor}
