"""Score functions as the evaluation sees them.

A *model score* is ``score(x, sigma, cond) -> (n, C, *lattice)`` with x (n, C, *lattice), sigma a
float and cond (n, C_cond, *lattice) or None — ``ScoreModule.score`` or any student's; evaluation
passes float64 CPU tensors and reads float64 CPU results. The metrics of
:mod:`~sizetransfer.evaluation.metrics` take a *bound* score ``x -> score`` with σ and cond fixed
(:func:`bind_score`).
"""
from __future__ import annotations

from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor, float, "torch.Tensor | None"], torch.Tensor]
BoundScore = Callable[[torch.Tensor], torch.Tensor]


def _placement(model) -> tuple[torch.device, torch.dtype]:
    device, dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    if not isinstance(device, torch.device):
        device = param.device if param is not None else torch.device("cpu")
    if not isinstance(dtype, torch.dtype):
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return device, dtype


def model_score(model) -> ScoreFn:
    """``model.score`` (a ``ScoreModule``; a plain student such as ``LocalScoreCNN``: the model itself)
    on the model's device and dtype (float32 for a float32 student), float64 CPU out.

    Autograd flows through x (the response profiles differentiate it)."""
    device, dtype = _placement(model)
    call = getattr(model, "score", model)

    def score(x: torch.Tensor, sigma: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = None if cond is None else cond.to(device, dtype)
        return call(x.to(device, dtype), float(sigma), c).to("cpu", torch.float64)

    return score


def bind_score(score: ScoreFn, sigma: float, cond: torch.Tensor | None) -> BoundScore:
    """``x -> score(x, sigma, cond)``. ``cond`` (n, C_cond, ...) is bound sample by sample: x must hold
    the same n samples (as every metric guarantees; a ValueError otherwise)."""

    def bound(x: torch.Tensor) -> torch.Tensor:
        if cond is not None and x.shape[0] != cond.shape[0]:
            raise ValueError(f"the student's conditioning is bound to {cond.shape[0]} samples, got x of {x.shape[0]}")
        return score(x, sigma, cond)

    return bound
