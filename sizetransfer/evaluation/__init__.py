"""Size-extrapolation metrics (plain torch, ``metrics``) and the Lightning callback.

``SizeExtrapolationCallback`` and ``GenerationCallback`` (Table 5 generation-level observables,
module ``generation``) are loaded lazily so importing the metrics pulls in neither Lightning nor
matplotlib.
"""
import importlib

__all__ = ["metrics", "SizeExtrapolationCallback", "GenerationCallback"]


def __getattr__(name):
    if name == "SizeExtrapolationCallback":
        return importlib.import_module("sizetransfer.evaluation.callback").SizeExtrapolationCallback
    if name == "GenerationCallback":
        return importlib.import_module("sizetransfer.evaluation.generation").GenerationCallback
    if name in ("metrics", "callback", "generation", "ising_eval", "plots"):
        return importlib.import_module(f"sizetransfer.evaluation.{name}")
    raise AttributeError(f"module 'sizetransfer.evaluation' has no attribute {name!r}")
