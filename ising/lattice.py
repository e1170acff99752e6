"""Observables of spin configurations on the periodic L×L torus, and input checks.

Convention (shared with :mod:`ising.exact`): bonds are the 2N pairs (i, i+x̂) and (i, i+ŷ)
over all N = L² sites, ``H(s) = −Σ_<ij> s_i s_j = −Σ s·(roll(s, 1, 0) + roll(s, 1, 1))``
(for L = 2 the torus wraps, so each neighbouring pair is coupled twice).

The ``check_*`` helpers validate public arguments and raise ``ValueError`` naming the
parameter and the allowed values; other modules reuse them.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["energy", "magnetization", "check_size", "check_beta", "check_int", "check_positive_int", "check_choice"]


# --------------------------------------------------------------------------- input checks
def check_int(v, name: str, minimum: int) -> int:
    """``v`` as a Python int if it is an integer ≥ ``minimum`` (bools, floats such as 8.0 or 8.5
    and strings such as "8" are rejected); else ``ValueError``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {v!r}")
    return int(v)


def check_positive_int(v, name: str) -> int:
    """``v`` as an int if it is an integer ≥ 1; else ``ValueError``."""
    return check_int(v, name, 1)


def check_size(L, name: str = "L", minimum: int = 2) -> int:
    """Linear lattice size: an integer ≥ ``minimum`` (default 2); else ``ValueError``."""
    return check_int(L, name, minimum)


def check_beta(beta, name: str = "beta") -> float:
    """Inverse temperature: a finite real number ≥ 0 (not a bool); else ``ValueError``."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not (0.0 <= beta < math.inf):
        raise ValueError(f"{name} must be a finite real number ≥ 0; got {beta!r}")
    return float(beta)


def check_choice(v, name: str, allowed) -> str:
    """``v`` if it is one of ``allowed`` (strings); else ``ValueError`` listing them."""
    if not isinstance(v, str) or v not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {v!r}")
    return v


def _spins(spins) -> np.ndarray:
    s = np.asarray(spins)
    if s.ndim < 2 or min(s.shape[-2:]) < 2:
        raise ValueError(f"spins must have shape (..., L, L') with L, L' ≥ 2; got {s.shape}")
    if not np.all(np.abs(s) == 1):
        raise ValueError("spins must hold only the values +1 and -1")
    return s


# --------------------------------------------------------------------------- observables
def energy(spins) -> np.ndarray | float:
    """Energy per site ``H(s)/N = −Σ_<ij> s_i s_j / N``.

    spins: ±1 array (L, L') or a batch (..., L, L'), any numeric dtype. Returns float64 of
    the batch shape (a float for a single configuration).
    """
    s = _spins(spins).astype(np.int8, copy=False)
    bonds = (s * (np.roll(s, 1, axis=-1) + np.roll(s, 1, axis=-2))).sum(axis=(-2, -1), dtype=np.int64)
    e = -bonds / (s.shape[-1] * s.shape[-2])
    return float(e) if e.ndim == 0 else e


def magnetization(spins) -> np.ndarray | float:
    """Signed magnetisation per site ``Σ_i s_i / N``.

    spins: ±1 array (L, L') or a batch (..., L, L'). Returns float64 of the batch shape
    (a float for a single configuration).
    """
    s = _spins(spins)
    m = s.sum(axis=(-2, -1), dtype=np.int64) / (s.shape[-1] * s.shape[-2])
    return float(m) if m.ndim == 0 else m
