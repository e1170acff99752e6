"""What a DataModule offers evaluation: eval batches at any evaluation size and an exact target.

Evaluation (``sizetransfer.evaluation``) needs nothing else from a DataModule, so any object with
these members works, Lightning or not:

* ``eval_sizes``: the sizes L evaluated by default;
* ``eval_batch(L, n, *, seed=0)``: n reproducible samples at size L, a dict with ``"x0"``
  (n, C, *lattice) and, for conditional teachers, ``"cond"``, ``"mask"``, ``"ports"``, ``"types"``;
* the exact target, exactly one of
    ``teacher`` — a :class:`~sizetransfer.teachers.Teacher` or
    :class:`~sizetransfer.teachers.ConditionalTeacher`: exact clean score and absolute response
    profile (FDLF metrics: docs/metrics.md), or
    ``beta`` — the Ising prior's coupling β: exact signed response (Eq. 22, ``ising.response_profile``)
    and the MCMC smoothed score (``ising.smoothed_score``).

:func:`evaluation_target` checks an object against this protocol once, with a message naming
what is missing.
"""
from __future__ import annotations

from typing import Literal, Protocol, Sequence, runtime_checkable

import torch

Batch = dict[str, torch.Tensor]


@runtime_checkable
class EvaluationData(Protocol):
    """Eval batches at any evaluation size (the exact target is ``teacher`` or ``beta``, see the module)."""

    eval_sizes: Sequence[int]

    def eval_batch(self, L: int, n: int, *, seed: int = 0) -> Batch:
        """n reproducible evaluation samples at size L (a function of L, n, seed and the target)."""


def evaluation_target(data) -> Literal["fdlf", "ising"]:
    """``"fdlf"`` (``data.teacher``) or ``"ising"`` (``data.beta``); ValueError naming what is missing."""
    if data is None:
        raise ValueError("evaluation needs a datamodule (an FDLF, hard-valid or Ising DataModule)")
    if not isinstance(data, EvaluationData):
        raise ValueError(f"datamodule {type(data).__name__} offers no evaluation: it needs 'eval_sizes' and "
                         "'eval_batch(L, n, *, seed)'")
    if hasattr(data, "teacher"):
        return "fdlf"
    if hasattr(data, "beta"):
        return "ising"
    raise ValueError(f"datamodule {type(data).__name__} has neither 'teacher' (FDLF) nor 'beta' (Ising)")
