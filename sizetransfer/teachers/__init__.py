"""Exact teachers: FDLF families (exact density, exact score, tunable response range), a
stationary Gaussian field (closed-form smoothed score), and the 3D hard-valid mixed
discrete-continuous teachers (open boxes; ``hard_valid.py``).

``make_teacher(key, seed=0, dtype=torch.float64)`` for ``key`` in ``TEACHER_KEYS``; the 2D periodic
teachers (``PERIODIC_2D_KEYS``) follow the ``Teacher`` protocol of ``base.py``, the hard-valid ones
(``HARD_VALID_KEYS``) its ``ConditionalTeacher`` protocol (the discrete state (ports, types) is an
extra argument of ``score`` / ``response_profile``). See docs/teachers.md.
"""
from __future__ import annotations

import torch

from sizetransfer.teachers.base import ConditionalTeacher, Teacher
from sizetransfer.teachers.fdlf import FAMILIES, FDLFConfig, FDLFTeacher, make_fdlf

FDLF_KEYS = tuple(FAMILIES)  # simple_local, complex_local, medium_range, complex_long
HARD_VALID_KEYS = ("hard_valid_short", "hard_valid_long")  # 3D open-box mixed teachers (hard_valid.py)
#: Teachers of one-channel fields on the periodic square lattice (FDLFDataModule, Teacher protocol).
PERIODIC_2D_KEYS = FDLF_KEYS + ("gaussian",)
TEACHER_KEYS = PERIODIC_2D_KEYS + HARD_VALID_KEYS


def _make_gaussian(*, seed: int, dtype: torch.dtype):
    from sizetransfer.teachers.gaussian import GaussianTeacher

    return GaussianTeacher(seed=seed, dtype=dtype)


def make_teacher(key: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Teacher | ConditionalTeacher:
    """The teacher ``key`` (one of ``TEACHER_KEYS``) with parameters fixed by ``seed``: a ``Teacher``
    for ``PERIODIC_2D_KEYS``, a ``ConditionalTeacher`` for ``HARD_VALID_KEYS``."""
    if key == "gaussian":
        return _make_gaussian(seed=seed, dtype=dtype)
    if key in HARD_VALID_KEYS:
        from sizetransfer.teachers.hard_valid import make_hard_valid

        return make_hard_valid(key, seed=seed, dtype=dtype)
    if key not in FAMILIES:
        raise ValueError(f"teacher key must be one of {list(TEACHER_KEYS)}, got {key!r}")
    return make_fdlf(key, seed=seed, dtype=dtype)


__all__ = ["FDLF_KEYS", "HARD_VALID_KEYS", "PERIODIC_2D_KEYS", "TEACHER_KEYS", "ConditionalTeacher", "FDLFConfig", "FDLFTeacher", "Teacher",
           "make_teacher"]
