"""The teacher protocols: target distributions on a lattice with exact samples, density and score.

Two kinds (docs/teachers.md):

* :class:`Teacher` — one-channel fields ``(n, channels, L, L)`` on the periodic torus (Z/LZ)²
  (the FDLF families, ``fdlf.py``, and the stationary Gaussian field, ``gaussian.py``).
* :class:`ConditionalTeacher` — the 3D hard-valid teachers on the open box {0..L-1}³
  (``hard_valid.py``): a sample is a discrete state (ports, types) and a continuous field x; the
  score is the clean score of x given the discrete state, which every call takes as extra arguments.

A teacher's parameters are fixed by its seed and identical at every L; scores are clean scores
∇_x log p_L(x); the response profile is the *absolute* one, ρ(r) = Σ_{j: d∞(i,j)=r} |∂s_i/∂x_j|
(:func:`sizetransfer.evaluation.metrics.absolute_response_profile` of the exact score). Obtain
teachers from ``sizetransfer.teachers.make_teacher``.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Teacher(Protocol):
    """A periodic 2D teacher: what data modules, metrics and benchmarks may rely on."""

    key: str        # registry key, e.g. "complex_long"
    dim: int        # lattice dimension (2)
    channels: int   # field channels (1)
    periodic: bool  # torus (True)

    def check_size(self, L: int) -> None:
        """Raise ValueError naming L and the allowed values when the teacher is undefined at size L."""

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent exact samples, (n, channels, L, L) in the teacher's dtype."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density log p_L(x), shape (n,)."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact clean score ∇_x log p_L(x), shape of x."""

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int) -> torch.Tensor:
        """Absolute Chebyshev-shell sums ρ(r) = Σ_{d∞(i,j)=r} |∂s_i/∂x_j| at probe site i, (n, r_max + 1)."""


@runtime_checkable
class ConditionalTeacher(Protocol):
    """An open-box teacher of a continuous field x given a discrete state (ports, types).

    ``sample`` returns ``(ports, types, x)``: bool (n, 6, L, L, L), int64 (n, L, L, L), float
    (n, channels, L, L, L) with x exactly 0 on empty sites; the score and the response profile take
    the discrete state of the same n samples; ``conditioning`` turns it into the student's
    ``cond_channels`` input channels and ``occupied`` into the (n, 1, L, L, L) site mask.
    """

    key: str
    dim: int            # 3
    channels: int       # m, continuous channels per site
    cond_channels: int  # 6 port indicators + one-hot type (K + 1)
    periodic: bool      # False: open box

    def check_size(self, L: int) -> None:
        """Raise ValueError naming L and the allowed values when the teacher is undefined at size L."""

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n independent exact samples ``(ports, types, x)``."""

    def score(self, x: torch.Tensor, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Exact clean score ∇_x log p_L(x | ports, types) on occupied coordinates (0 elsewhere), shape of x."""

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int, ports: torch.Tensor,
                         types: torch.Tensor) -> torch.Tensor:
        """Absolute shell sums of the exact score's Jacobian row at ``site`` (open box), (n, r_max + 1)."""

    def conditioning(self, ports: torch.Tensor, types: torch.Tensor, dtype: torch.dtype = torch.float32
                     ) -> torch.Tensor:
        """The student's conditioning channels (n, cond_channels, L, L, L)."""

    def occupied(self, ports: torch.Tensor) -> torch.Tensor:
        """Occupied sites, bool (n, 1, L, L, L)."""


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
