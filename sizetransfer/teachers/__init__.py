"""Exact teachers: FDLF families (exact density, exact score, tunable response range) and a
stationary Gaussian field (closed-form smoothed score).

``make_teacher(key, seed=0, dtype=torch.float64)`` for ``key`` in ``TEACHER_KEYS``; every teacher
follows the ``Teacher`` protocol of ``base.py``.
"""
from __future__ import annotations

import torch

from sizetransfer.teachers.base import Teacher
from sizetransfer.teachers.fdlf import FAMILIES, FDLFConfig, FDLFTeacher, make_fdlf

FDLF_KEYS = tuple(FAMILIES)  # simple_local, complex_local, medium_range, complex_long
TEACHER_KEYS = FDLF_KEYS + ("gaussian",)


def _make_gaussian(*, seed: int, dtype: torch.dtype):
    from sizetransfer.teachers.gaussian import GaussianTeacher

    return GaussianTeacher(seed=seed, dtype=dtype)


def make_teacher(key: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Teacher:
    """The teacher ``key`` (one of ``TEACHER_KEYS``) with parameters fixed by ``seed``."""
    if key == "gaussian":
        return _make_gaussian(seed=seed, dtype=dtype)
    if key not in FAMILIES:
        raise ValueError(f"teacher key must be one of {list(TEACHER_KEYS)}, got {key!r}")
    return make_fdlf(key, seed=seed, dtype=dtype)


__all__ = ["FDLF_KEYS", "TEACHER_KEYS", "FDLFConfig", "FDLFTeacher", "Teacher", "make_teacher"]
