"""Evaluation of a score model against an exact target, usable without Lightning.

Plain functions (docs/metrics.md; a model score is ``score(x, sigma, cond)``, e.g.
``model_score(ScoreModule.load_from_checkpoint(path))``; ``data`` is anything offering
:mod:`sizetransfer.data.protocol`, e.g. a DataModule):

    evaluate_fdlf(score, data, FDLFEvalConfig(...), receptive_radius=R, sigma_min=...)   -> results
    evaluate_ising(score, data, IsingEvalConfig(...), receptive_radius=R)                 -> results
    evaluate_generation(score, data, GenerationConfig(...), sigma_max=..., sigma_min=...) -> results

``results["rows"]`` holds one flat metrics dict per size (per (size, σ) for Ising); the metrics
themselves are in ``metrics``. ``SizeExtrapolationCallback`` and ``GenerationCallback`` (module
``callback``) schedule these during training and write ``eval/step=<k>/``; they are loaded lazily so
importing the functions pulls in neither Lightning nor matplotlib.
"""
import importlib

_LAZY = {
    "FDLFEvalConfig": "fdlf", "evaluate_fdlf": "fdlf",
    "IsingEvalConfig": "ising_eval", "evaluate_ising": "ising_eval",
    "GenerationConfig": "generation", "evaluate_generation": "generation",
    "model_score": "score",
    "SizeExtrapolationCallback": "callback", "GenerationCallback": "callback",
}
_MODULES = ("metrics", "far_share", "score", "fdlf", "ising_eval", "generation", "report", "plots", "callback")

__all__ = ["metrics", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"sizetransfer.evaluation.{_LAZY[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"sizetransfer.evaluation.{name}")
    raise AttributeError(f"module 'sizetransfer.evaluation' has no attribute {name!r}")
