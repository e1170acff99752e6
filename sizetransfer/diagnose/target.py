"""What ``diagnose`` accepts as a model and as a target, turned into what evaluation takes.

* model: ``score_fn(x, sigma)`` (or ``(x, sigma, cond)``) on ``(n, C, *lattice)`` tensors — a student
  of this project (``ScoreModule``, ``LocalScoreCNN``) or any callable / torch module;
* target: a periodic teacher key (``"complex_long"``), a :class:`~sizetransfer.teachers.Teacher`, or
  a DataModule offering :mod:`sizetransfer.data.protocol` (a ``teacher``, or the Ising ``beta``).
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch

from sizetransfer.data.protocol import evaluation_target
from sizetransfer.evaluation.score import ScoreFn
from sizetransfer.seeding import batch_seed, torch_generator

#: Seed-stream tag of evaluation samples (the DataModules' ``EVAL_STREAM``): the same samples as a run's evaluation.
_EVAL_STREAM = 2


class TeacherData:
    """Evaluation data of a periodic teacher without Lightning: ``eval_batch(L, n, seed=...)`` draws the same
    samples as :class:`~sizetransfer.data.FDLFDataModule` (``{"x0": float64 (n, 1, L, L)}``)."""

    def __init__(self, teacher, train_size: int, eval_sizes: Sequence[int] | None = None):
        self.teacher, self.train_size = teacher, int(train_size)
        self.eval_sizes = list(eval_sizes or [self.train_size])
        self._cache: dict = {}

    def eval_batch(self, L: int, n: int, *, seed: int = 0) -> dict:
        self.teacher.check_size(L)
        key = (int(L), int(n), int(seed))
        if key not in self._cache:
            gen = torch_generator(batch_seed(seed, _EVAL_STREAM, L))
            self._cache[key] = {"x0": self.teacher.sample(int(n), int(L), generator=gen)}
        return self._cache[key]


def resolve_target(target, train_size: int | None, *, teacher_seed: int = 0):
    """``(data, train_size)``: evaluation data with a ``teacher`` (or, for the Ising target, a ``beta``) and the
    model's training size.

    ValueError (one line) for an unknown key, an open-box target (not supported by diagnose yet), a
    training size the target does not allow or a missing ``train_size``."""
    from sizetransfer.teachers import PERIODIC_2D_KEYS, make_teacher

    if isinstance(target, str):
        if target not in PERIODIC_2D_KEYS:
            raise ValueError(f"target must be one of {list(PERIODIC_2D_KEYS)} (a periodic teacher with an exact "
                             f"score), got {target!r}")
        data = None
        teacher = make_teacher(target, seed=teacher_seed)
    elif hasattr(target, "eval_batch"):
        train_size = train_size if train_size is not None else getattr(target, "train_size", None)
        if evaluation_target(target) == "ising":
            return target, _checked_train_size(target, train_size)
        data, teacher = target, target.teacher
    elif hasattr(target, "score") and hasattr(target, "response_profile"):
        data, teacher = None, target
    else:
        raise ValueError(f"target must be a teacher key, a Teacher or a DataModule with a teacher, got "
                         f"{type(target).__name__}")
    if not getattr(teacher, "periodic", True):
        raise ValueError(f"target: open-box teacher {getattr(teacher, 'key', teacher)!r} is not supported by "
                         "diagnose yet (periodic teachers only)")
    train_size = _checked_train_size(teacher, train_size)
    if data is None:
        data = TeacherData(teacher, train_size)
    return data, train_size


def _checked_train_size(target, train_size) -> int:
    """``int(train_size)``, or a one-line ValueError if it is missing or ``target.check_size`` refuses it."""
    if train_size is None:
        raise ValueError("train_size: give the lattice size L the model was trained at")
    try:
        target.check_size(int(train_size))
    except ValueError as err:
        raise ValueError(f"train_size = {train_size}: {err}") from None
    return int(train_size)


def _takes_cond(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 3


def as_model_score(score_fn) -> ScoreFn:
    """The evaluation's ``score(x, sigma, cond)`` of a user's model, float64 CPU in and out.

    A torch module runs on its own device and dtype (its ``score`` method if it has one, else the module
    itself); ``sigma`` is passed as a float. A 2-argument callable ``(x, sigma)`` is called without cond."""
    if not callable(score_fn) and not hasattr(score_fn, "score"):
        raise ValueError(f"score_fn must be a callable score_fn(x, sigma), got {type(score_fn).__name__}")
    call = getattr(score_fn, "score", score_fn)
    device, dtype = torch.device("cpu"), torch.float64
    if isinstance(score_fn, torch.nn.Module):
        param = next(iter(score_fn.parameters()), None)
        if param is not None:
            device, dtype = param.device, (param.dtype if param.is_floating_point() else torch.float32)
    with_cond = _takes_cond(call.forward if isinstance(call, torch.nn.Module) else call)

    def score(x: torch.Tensor, sigma: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        xs = x.to(device, dtype)
        if cond is not None or with_cond:
            out = call(xs, float(sigma), None if cond is None else cond.to(device, dtype))
        else:
            out = call(xs, float(sigma))
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"score_fn must return a tensor of the shape of x {tuple(x.shape)}, got "
                             f"{type(out).__name__}")
        return out.to("cpu", torch.float64)

    return score


def declared_radius(score_fn) -> int | None:
    """The receptive radius a model declares (``receptive_radius``), or None — also for a model that declares
    itself non-local (``is_local`` False, e.g. a student with global features: its convolutions' radius is
    not its range, so the verdict uses its measured support)."""
    r = getattr(score_fn, "receptive_radius", None)
    return None if r is None or not getattr(score_fn, "is_local", True) else int(r)
