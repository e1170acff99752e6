"""Size-extrapolation metrics (DESIGN.md section 7), plain torch.

Score functions are callables ``score_fn(x) -> score`` with x, score (n, C, *lattice) — bind σ
(and conditioning) beforehand, e.g. ``lambda x: student(x, sigma.expand(len(x)))``. Every score
function must treat the samples of a batch independently (all students and teachers here do).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from sizetransfer.lattice import chebyshev_distance, shell_sums

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def clean_score_rmse(student_score: torch.Tensor, teacher_score: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Relative RMSE (Eq. 16): sqrt(Σ ‖s_θ − s‖² / Σ ‖s‖²) over samples, sites and channels.

    Scores (n, C, *lattice); ``mask`` (broadcastable, e.g. (n, 1, *lattice)) selects the sites
    that count (open boxes: bulk and occupied sites). Returns a 0-d tensor.
    """
    if student_score.shape != teacher_score.shape:
        raise ValueError(f"student_score {tuple(student_score.shape)} and teacher_score "
                         f"{tuple(teacher_score.shape)} must have the same shape")
    teacher_score = teacher_score.to(student_score.dtype)
    err = (student_score - teacher_score).square()
    ref = teacher_score.square()
    if mask is not None:
        mask = mask.to(student_score.dtype)
        err, ref = err * mask, ref * mask
    return (err.sum() / ref.sum()).sqrt()


def region_mask(shape: Sequence[int], site: Sequence[int], r_in: int, r_out: int, *,
                periodic: bool = True, device=None) -> torch.Tensor:
    """Boolean indicator 1_A of the Chebyshev annulus A = {j : r_in ≤ d∞(site, j) ≤ r_out}."""
    if not 0 <= r_in <= r_out:
        raise ValueError(f"need 0 <= r_in <= r_out, got r_in={r_in}, r_out={r_out}")
    d = chebyshev_distance(shape, site, periodic=periodic, device=device)
    return (d >= r_in) & (d <= r_out)


def finite_difference_response(score_fn: ScoreFn, x: torch.Tensor, probes: Sequence[Sequence[int]],
                               *, r_in: int, r_out: int, eps: float = 1e-2, periodic: bool = True,
                               mask: torch.Tensor | None = None, chunk: int = 64) -> torch.Tensor:
    """Finite-difference response (Eq. 17) of the score at each probe site to its region A.

    Δ_A s_i = (s(x + ε 1_A)_i − s(x − ε 1_A)_i) / 2ε with A = {j : r_in ≤ d∞(i, j) ≤ r_out}
    (near: r_in = 1, r_out = r_near; far: r_far_in, r_far_out); ε is added to every channel of
    the region's sites (restricted to ``mask`` (n, 1, *lattice) when given, e.g. occupied sites).
    x: (n, C, *lattice); probes: P sites. All 2·P·n perturbed fields go through ``score_fn`` in
    batches of at most ``chunk`` fields. Returns (n, P, C).
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n, lattice = x.shape[0], x.shape[2:]
    probes = [tuple(int(c) for c in p) for p in probes]
    regions = torch.stack([region_mask(lattice, p, r_in, r_out, periodic=periodic, device=x.device)
                           for p in probes]).to(x.dtype)                 # (P, *lattice)
    delta = eps * regions[:, None, None] if mask is None else eps * regions[:, None, None] * mask.to(x.dtype)
    fields = torch.stack([x + delta.expand(len(probes), *x.shape), x - delta.expand(len(probes), *x.shape)])
    fields = fields.reshape(-1, *x.shape[1:])                           # (2·P·n, C, *lattice), order (±, P, n)
    out = torch.cat([score_fn(fields[k:k + chunk]).detach() for k in range(0, len(fields), chunk)])
    out = out.reshape(2, len(probes), n, *x.shape[1:])
    all_ = slice(None)
    at_probe = torch.stack([out[(all_, k, all_, all_) + p] for k, p in enumerate(probes)], dim=2)
    return (at_probe[0] - at_probe[1]) / (2 * eps)                     # (n, P, C)


def response_relative_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """‖Δ_A s^θ − Δ_A s^teacher‖ / ‖Δ_A s^teacher‖ as a ratio of norms over all probes (0-d)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         f"responses must have the same shape")
    teacher = teacher.to(student.dtype)
    return (student - teacher).norm() / teacher.norm()


def score_response_profile(score_fn: ScoreFn, x: torch.Tensor, site: Sequence[int], r_max: int, *,
                           periodic: bool = True, absolute: bool = True) -> torch.Tensor:
    """Response profile ρ(r) = Σ_{j: d∞(i,j)=r} ∂s_i/∂x_j (|·| if ``absolute``) of any score function.

    The Jacobian row of site i comes from one backward pass per channel of s_i summed over the
    batch (samples are independent); with C channels the entries Σ_{c,c'} |∂s_{i,c}/∂x_{j,c'}|
    (signed: the plain sum) are shell-summed. x: (n, C, *lattice); returns (n, r_max + 1),
    r = 0 being the diagonal.
    """
    site = tuple(int(c) for c in site)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score_fn(x)
        if s.shape != x.shape:
            raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {tuple(s.shape)}")
        rows = []
        for c in range(s.shape[1]):
            (g,) = torch.autograd.grad(s[(slice(None), c) + site].sum(), x, retain_graph=c + 1 < s.shape[1])
            rows.append(g.abs() if absolute else g)
    jac = torch.stack(rows).sum(0).sum(1)                                # (n, *lattice)
    return shell_sums(jac, site, r_max, periodic=periodic, absolute=absolute)


def local_observables(x: torch.Tensor, *, periodic: bool = True,
                      mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Generation-level local observables (Table 5) of samples x (n, C, *lattice).

    The fields are translation invariant, so every statistic is pooled over samples and sites
    (over masked sites only when ``mask`` (n, 1, *lattice) is given): per-site mean, variance,
    skewness, excess kurtosis, and the nearest-neighbour correlation
    Cov(x_i, x_{i+e_k}) / Var(x) along each lattice axis k (periodic: wrap-around pairs; open
    box / mask: pairs with both sites inside). Each value has shape (C,); keys ``mean``,
    ``variance``, ``skewness``, ``kurtosis``, ``nn_corr_0``, ``nn_corr_1`` (, ``nn_corr_2``).
    """
    w = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype)
    dims = [0] + list(range(2, x.dim()))

    def avg(f, weight):
        return (f * weight).sum(dims) / weight.sum(dims)

    mean = avg(x, w)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dev = x - mean.view(shape)
    var = avg(dev ** 2, w)
    std = var.sqrt()
    obs = {"mean": mean, "variance": var, "skewness": avg(dev ** 3, w) / std ** 3,
           "kurtosis": avg(dev ** 4, w) / var ** 2 - 3}
    for k in range(x.dim() - 2):
        axis = k + 2
        if periodic:
            nxt, w_pair = dev.roll(-1, axis), w * w.roll(-1, axis)
            cur = dev
        else:
            n_ax = x.shape[axis]
            cur, nxt = dev.narrow(axis, 0, n_ax - 1), dev.narrow(axis, 1, n_ax - 1)
            w_pair = w.narrow(axis, 0, n_ax - 1) * w.narrow(axis, 1, n_ax - 1)
        obs[f"nn_corr_{k}"] = avg(cur * nxt, w_pair) / var
    return obs


def observables_mae(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean absolute error over all observables (and channels) of two :func:`local_observables` dicts."""
    if a.keys() != b.keys():
        raise ValueError(f"observable sets differ: {sorted(a)} vs {sorted(b)}")
    diffs = torch.cat([(a[k] - b[k].to(a[k].dtype)).abs().reshape(-1) for k in a])
    return diffs.mean()
