"""Flatness of a size curve, tested rather than eyeballed: the slope of an error against ln L with its
standard error (docs/size_curve.md).

Within one run (:func:`log_size_slope`), ordinary least squares of y_k = a + b ln L_k over the K sizes:

    b = Σ_k (x_k − x̄)(y_k − ȳ) / S_xx,   s.e.(b) = sqrt( Σ_k e_k² / (K − 2) / S_xx ),

x = ln L, S_xx = Σ_k (x_k − x̄)², e the residuals (s.e. needs K ≥ 3; NaN for K = 2). Given each size's
standard error se_k (independent sizes, e.g. ``diagnose``), weighted least squares instead: weights
w_k = 1/se_k², x̄ and S_xx weighted, s.e.(b) = 1/sqrt(S_xx) (the errors are known, not fitted). Over runs — seeds of
one student and teacher — (:func:`seed_slope`): the mean of the per-run slopes b_s and its standard error
std(b_s, ddof = 1) / √S over the S runs (S ≥ 2; NaN for one run). A flat curve has |b| within about two
standard errors of 0; b is in units of the error per e-fold of L (b ln 2: the change per doubling).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def log_size_slope(sizes: Sequence[float], values: Sequence[float],
                   se: Sequence[float] | None = None) -> dict[str, float]:
    """Least-squares slope of ``values`` against ln(``sizes``) and its standard error (module docstring):
    ordinary least squares, or weighted by 1/``se``² when each value's standard error is given.

    Returns ``{"slope", "slope_se", "n_sizes"}``; ValueError for fewer than 2 distinct sizes, a size ≤ 0,
    mismatched lengths or a non-finite value."""
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"sizes and values must be 1-D of the same length, got {x.shape} and {y.shape}")
    if len(np.unique(x)) < 2 or not (x > 0).all():
        raise ValueError(f"sizes must hold at least 2 distinct sizes L > 0, got {x.tolist()}")
    if not np.isfinite(y).all():
        raise ValueError(f"values must be finite, got {y.tolist()}")
    x, k = np.log(x), len(x)
    w = np.ones_like(x)  # ordinary least squares: equal weights
    if se is not None:
        w = np.asarray(se, dtype=np.float64)
        if w.shape != x.shape:
            raise ValueError(f"se must hold one standard error per size, got {w.shape} for {x.shape}")
        w = 1.0 / (w ** 2 + 1e-24)
    dx = x - (w * x).sum() / w.sum()
    sxx = float((w * dx ** 2).sum())
    slope = float((w * dx * (y - (w * y).sum() / w.sum())).sum() / sxx)
    if se is not None:  # known errors: s.e. from the weights alone
        return {"slope": slope, "slope_se": math.sqrt(1.0 / sxx), "n_sizes": k}
    if k < 3:
        return {"slope": slope, "slope_se": math.nan, "n_sizes": k}
    resid = y - (y.mean() + slope * dx)
    return {"slope": slope, "slope_se": math.sqrt(float((resid ** 2).sum()) / (k - 2) / sxx), "n_sizes": k}


def seed_slope(slopes: Sequence[float]) -> dict[str, float]:
    """Mean of per-run slopes and its standard error over the runs: ``{"slope", "slope_se", "n_runs"}``."""
    b = np.asarray(slopes, dtype=np.float64)
    if b.ndim != 1 or len(b) < 1 or not np.isfinite(b).all():
        raise ValueError(f"slopes must be a non-empty list of finite numbers, got {b.tolist()}")
    se = float(b.std(ddof=1) / math.sqrt(len(b))) if len(b) > 1 else math.nan
    return {"slope": float(b.mean()), "slope_se": se, "n_runs": len(b)}


def flatness_over_runs(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict:
    """Slope ± s.e. over runs of several size curves ``[(sizes, values), ...]`` (one per seed): the
    :func:`seed_slope` of their :func:`log_size_slope` slopes, with the per-run fits under ``"runs"`` and
    ``"within_run_se"``, the root mean square of the per-run standard errors.

    Runs evaluated on the same samples (one ``evaluation.seed``, as a sweep's seeds are) share the scatter
    of the sizes about the line, so the spread over seeds measures the training seed only and can be far
    below the within-run s.e.; quote the larger of the two (docs/size_curve.md)."""
    runs = [log_size_slope(sizes, values) for sizes, values in curves]
    within = [r["slope_se"] for r in runs if math.isfinite(r["slope_se"])]
    return {**seed_slope([r["slope"] for r in runs]), "runs": runs,
            "within_run_se": float(np.sqrt(np.mean(np.square(within)))) if within else math.nan}


def format_flatness(stat: dict, what: str) -> str:
    """One line: ``flatness: d <what> / d ln L = b ± se (…)``."""
    se = stat["slope_se"]
    where = (f"least squares over {stat['n_sizes']} sizes" if "n_sizes" in stat
             else f"mean over {stat['n_runs']} runs, s.e. over runs")
    z = f", |b|/se = {abs(stat['slope']) / se:.2g}" if se > 0 and math.isfinite(se) else ""
    within = f"; within-run s.e. {stat['within_run_se']:.4f}" if "within_run_se" in stat else ""
    return f"flatness: d {what} / d ln L = {stat['slope']:+.4f} ± {se:.4f} ({where}{z}{within})"
