"""The Teacher protocol: a target distribution on a lattice with exact samples, density and score.

Conventions (DESIGN.md section 3): fields are ``(n, channels, L, L)`` tensors on the periodic
torus (Z/LZ)²; a teacher's parameters are fixed by its seed and identical at every L; the score
is the clean score ∇_x log p_L(x). Implemented by ``FDLFTeacher`` (``fdlf.py``) and
``GaussianTeacher`` (``gaussian.py``); obtain them from ``sizetransfer.teachers.make_teacher``.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Teacher(Protocol):
    """What data modules, metrics and benchmarks may rely on."""

    key: str        # registry key, e.g. "complex_long"
    dim: int        # lattice dimension (2)
    channels: int   # field channels (1)
    periodic: bool  # torus (True) or open box

    def check_size(self, L: int) -> None:
        """Raise ValueError naming L and the allowed values when the teacher is undefined at size L."""

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent exact samples, (n, channels, L, L) in the teacher's dtype."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density log p_L(x), shape (n,)."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact clean score ∇_x log p_L(x), shape of x."""

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int) -> torch.Tensor:
        """Chebyshev-shell sums ρ(r) = Σ_{d∞(i,j)=r} |∂s_i/∂x_j| at probe site i, (n, r_max + 1)."""


def probe_sites(L: int, n_sites: int, *, seed: int = 0) -> list[tuple[int, int]]:
    """``n_sites`` distinct probe sites of (Z/LZ)² drawn from ``seed`` (the same list for every teacher)."""
    if not 1 <= n_sites <= L * L:
        raise ValueError(f"n_sites must be in [1, {L * L}], got {n_sites}")
    flat = torch.randperm(L * L, generator=torch.Generator().manual_seed(seed))[:n_sites]
    return [(int(k) // L, int(k) % L) for k in flat]


def mean_response_profile(teacher: Teacher, L: int, *, n_samples: int = 4, n_sites: int = 4,
                          seed: int = 0) -> torch.Tensor:
    """Response profile ρ(r), r = 0..L/2 (the whole torus), averaged over ``n_samples`` teacher
    samples and ``n_sites`` probe sites (both drawn from ``seed``); float64 (L // 2 + 1,).

    Feed it to ``sizetransfer.lattice.normalised_tail`` / ``response_range``.
    """
    x = teacher.sample(n_samples, L, generator=torch.Generator().manual_seed(seed))
    rows = [teacher.response_profile(x, site, L // 2) for site in probe_sites(L, n_sites, seed=seed)]
    return torch.cat(rows).double().mean(0)
