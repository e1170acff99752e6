"""Size-extrapolation metrics (plain torch, ``metrics``) and the Lightning callback.

``SizeExtrapolationCallback`` is loaded lazily so importing the metrics pulls in
neither Lightning nor matplotlib.
"""
import importlib

__all__ = ["metrics", "SizeExtrapolationCallback"]


def __getattr__(name):
    if name == "SizeExtrapolationCallback":
        return importlib.import_module("sizetransfer.evaluation.callback").SizeExtrapolationCallback
    if name in ("metrics", "callback", "ising_eval", "plots"):
        return importlib.import_module(f"sizetransfer.evaluation.{name}")
    raise AttributeError(f"module 'sizetransfer.evaluation' has no attribute {name!r}")
