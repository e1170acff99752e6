"""Lattice geometry shared by teachers, metrics and the Ising target.

Sites are tuples of ints; lattices are periodic tori ``(Z/LZ)^d`` or open boxes
``{0..L-1}^d``. Distances are Chebyshev (d∞, minimum image on a torus).
"""
from __future__ import annotations

from typing import Sequence

import torch


def chebyshev_distance(shape: Sequence[int], site: Sequence[int], *, periodic: bool = True,
                       device=None) -> torch.Tensor:
    """d∞ from ``site`` to every site of a lattice of ``shape`` (e.g. (L, L)); int64 tensor of ``shape``."""
    if len(shape) != len(site):
        raise ValueError(f"site must have {len(shape)} coordinates, got {tuple(site)}")
    dist = None
    for axis, (n, i) in enumerate(zip(shape, site)):
        if not 0 <= int(i) < n:
            raise ValueError(f"site coordinate {axis} must be in [0, {n - 1}], got {i}")
        d = (torch.arange(n, device=device) - int(i)).abs()
        if periodic:
            d = torch.minimum(d, n - d)
        view = [1] * len(shape)
        view[axis] = n
        d = d.view(view)
        dist = d if dist is None else torch.maximum(dist, d)
    return dist.expand(*shape)


def shell_sums(field: torch.Tensor, site: Sequence[int], r_max: int, *, periodic: bool = True,
               absolute: bool = True) -> torch.Tensor:
    """Chebyshev-shell sums ρ(r) = Σ_{j: d∞(site, j) = r} f_j for r = 0..r_max.

    field: (n, *lattice) (channels already reduced); returns (n, r_max + 1) in field's dtype.
    ``absolute=True`` sums |f_j| (response profile of a general score), else the signed sum.
    """
    lattice = field.shape[1:]
    dist = chebyshev_distance(lattice, site, periodic=periodic, device=field.device).reshape(-1)
    vals = field.reshape(field.shape[0], -1)
    if absolute:
        vals = vals.abs()
    out = torch.zeros(field.shape[0], r_max + 1, dtype=field.dtype, device=field.device)
    keep = dist <= r_max
    out.index_add_(1, dist[keep], vals[:, keep])
    return out


def normalised_tail(profile: torch.Tensor) -> torch.Tensor:
    """Normalised tail beyond r: T(r) = Σ_{r' > r} ρ(r') / Σ_{r' ≥ 1} ρ(r'), shape like ``profile``.

    ``profile`` (..., r_max + 1) must cover the whole lattice for the normalisation to be exact.
    """
    off = profile[..., 1:].sum(-1, keepdim=True)
    beyond = profile.flip(-1).cumsum(-1).flip(-1) - profile  # Σ_{r' > r}
    return beyond / off


def response_range(profile: torch.Tensor, q: float = 0.05) -> torch.Tensor:
    """R_q: smallest r ≥ 0 whose normalised tail beyond r is ≤ q; int64 of shape profile.shape[:-1]."""
    tail = normalised_tail(profile)
    ok = tail <= q
    return ok.float().argmax(-1)
