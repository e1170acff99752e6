"""Numba Monte Carlo for the 2D Ising model and its noisy posterior.

numpy + numba only: importing this package never imports torch.

Prior (zero field) on an L x L torus, ``p(s) ∝ exp(β Σ_<ij> s_i s_j)``:
    sample, energy, magnetization, BETA_C
Noisy posterior ``π^y(s) ∝ exp(β Σ_<ij> s_i s_j + Σ_i h_i s_i)``, ``h = y / σ²``:
    posterior_samples, posterior_mean, smoothed_score, posterior_covariance,
    score_response, response_profile
Submodules: ``ising.stats`` (autocorrelation, errors), ``ising.exact`` (exact
references), ``python -m ising.bench`` (benchmarks).

Public names are loaded lazily so ``import ising`` is cheap and compiles nothing.
"""
from __future__ import annotations

import importlib
import math

__all__ = [
    "BETA_C",
    "sample",
    "energy",
    "magnetization",
    "posterior_samples",
    "posterior_mean",
    "smoothed_score",
    "posterior_covariance",
    "score_response",
    "response_profile",
    "stats",
    "exact",
]

#: Critical coupling of the square-lattice Ising model, ½ ln(1 + √2).
BETA_C: float = 0.5 * math.log1p(math.sqrt(2.0))

_LAZY = {
    "sample": "ising.samplers",
    "energy": "ising.lattice",
    "magnetization": "ising.lattice",
    "posterior_samples": "ising.posterior",
    "posterior_mean": "ising.posterior",
    "smoothed_score": "ising.posterior",
    "posterior_covariance": "ising.posterior",
    "score_response": "ising.posterior",
    "response_profile": "ising.posterior",
}


def __getattr__(name: str):
    if name in ("stats", "exact", "samplers", "posterior", "lattice"):
        return importlib.import_module(f"ising.{name}")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ising' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
