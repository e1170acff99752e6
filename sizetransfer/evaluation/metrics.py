"""Size-extrapolation metrics, plain torch (definitions and equation numbers: docs/metrics.md).

Score functions are callables ``score_fn(x) -> score`` with x, score (n, C, *lattice) — bind σ
(and conditioning) beforehand, e.g. ``lambda x: student(x, sigma.expand(len(x)))`` or
:func:`~sizetransfer.evaluation.score.bind_score`. Every score function must treat the samples of a
batch independently (all students and teachers here do).

Response profiles come in two kinds, each with its own name: :func:`absolute_response_profile`
(Σ |∂s_i/∂x_j| over a shell, the FDLF diagnostic of Eq. 5) and :func:`signed_response_profile`
(Σ ∂s_i/∂x_j, the Ising boundary response of Eq. 22).
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
    err, ref = clean_score_sums(student_score, teacher_score, mask)
    return (err / ref).sqrt()


def clean_score_sums(student_score: torch.Tensor, teacher_score: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sums of Eq. 16, ``(Σ ‖s_θ − s‖², Σ ‖s‖²)`` (0-d, the student's dtype): summed over chunks of
    samples they give the RMSE of all samples, sqrt(Σ err / Σ ref). Arguments as :func:`clean_score_rmse`."""
    if student_score.shape != teacher_score.shape:
        raise ValueError(f"student_score {tuple(student_score.shape)} and teacher_score "
                         f"{tuple(teacher_score.shape)} must have the same shape")
    teacher_score = teacher_score.to(student_score.dtype)
    err = (student_score - teacher_score).square()
    ref = teacher_score.square()
    if mask is not None:
        mask = mask.to(student_score.dtype)
        err, ref = err * mask, ref * mask
    return err.sum(), ref.sum()


def region_mask(shape: Sequence[int], site: Sequence[int], r_in: int, r_out: int, *,
                periodic: bool = True, device=None) -> torch.Tensor:
    """Boolean indicator 1_A of the Chebyshev annulus A = {j : r_in ≤ d∞(site, j) ≤ r_out}."""
    if not 0 <= r_in <= r_out:
        raise ValueError(f"need 0 <= r_in <= r_out, got r_in={r_in}, r_out={r_out}")
    d = chebyshev_distance(shape, site, periodic=periodic, device=device)
    return (d >= r_in) & (d <= r_out)


def _per_sample_sites(sites, n: int, d: int, name: str) -> torch.Tensor:
    """``sites`` as an int64 tensor (n, P, d): a sequence of P sites shared by the n samples, or
    per-sample sites given as a tensor/nested sequence of shape (n, P, d)."""
    t = torch.as_tensor(sites, dtype=torch.int64)
    if t.dim() == 2 and t.shape[1] == d:
        t = t.unsqueeze(0).expand(n, *t.shape)
    if t.dim() != 3 or t.shape[0] != n or t.shape[2] != d:
        raise ValueError(f"{name} must be P sites of {d} coordinates shared by all samples, or per-sample "
                         f"sites of shape (n={n}, P, {d}); got shape {tuple(t.shape)}")
    return t


def finite_difference_response(score_fn: ScoreFn, x: torch.Tensor, probes, *, r_in: int, r_out: int,
                               eps: float = 1e-2, periodic: bool = True,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Finite-difference response (Eq. 17) of the score at each probe site to its region A.

    Δ_A s_i = (s(x + ε 1_A)_i − s(x − ε 1_A)_i) / 2ε with A = {j : r_in ≤ d∞(i, j) ≤ r_out}
    (near: r_in = 1, r_out = r_near; far: r_far_in, r_far_out); on an open box (``periodic=False``)
    A is clipped to the box. ε is added to every channel of the region's sites (restricted to
    ``mask`` (n, 1, *lattice) when given, e.g. occupied sites).

    x: (n, C, *lattice). probes: P sites shared by all samples (a sequence of coordinate tuples),
    or per-sample sites, an integer tensor (n, P, d) (probe k of sample b at ``probes[b, k]``).
    ``score_fn`` is called 2·P times, each time on one whole perturbed copy (n, C, *lattice) of x
    whose sample b is x[b] perturbed — so a score function with per-sample conditioning bound to
    the n samples (a student's cond, a teacher's ports/types) always sees aligned inputs.
    Returns (n, P, C).
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if not 0 <= r_in <= r_out:
        raise ValueError(f"need 0 <= r_in <= r_out, got r_in={r_in}, r_out={r_out}")
    n, lattice = x.shape[0], tuple(x.shape[2:])
    sites = _per_sample_sites(probes, n, len(lattice), "probes")              # (n, P, d)
    keep = None if mask is None else mask.to(x.dtype)
    rows = []
    for k in range(sites.shape[1]):
        region = torch.stack([region_mask(lattice, sites[b, k].tolist(), r_in, r_out, periodic=periodic,
                                          device=x.device) for b in range(n)])   # (n, *lattice)
        delta = eps * region.unsqueeze(1).to(x.dtype)                            # (n, 1, *lattice)
        if keep is not None:
            delta = delta * keep
        plus, minus = score_fn(x + delta).detach(), score_fn(x - delta).detach()
        if plus.shape != x.shape:
            raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {tuple(plus.shape)}")
        idx = (torch.arange(n),) + tuple(sites[:, k, a] for a in range(len(lattice)))
        diff = (plus - minus).movedim(1, -1)                                     # (n, *lattice, C)
        rows.append(diff[idx] / (2 * eps))                                       # (n, C)
    return torch.stack(rows, dim=1)                                              # (n, P, C)


def response_relative_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """‖Δ_A s^θ − Δ_A s^teacher‖ / ‖Δ_A s^teacher‖ as a ratio of norms over all probes (0-d)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         f"responses must have the same shape")
    teacher = teacher.to(student.dtype)
    return (student - teacher).norm() / teacher.norm()


def _response_profile(score_fn: ScoreFn, x: torch.Tensor, site, r_max: int, *, periodic: bool,
                      absolute: bool, mask: torch.Tensor | None) -> torch.Tensor:
    """Shell sums of the Jacobian row of ``score_fn`` at ``site``, |entries| if ``absolute``.

    The Jacobian row of site i comes from one backward pass per channel of s_i summed over the
    batch (samples are independent; ``score_fn`` is called once, on the whole batch x); with C
    channels the entries Σ_{c,c'} ∂s_{i,c}/∂x_{j,c'} (absolute: of their moduli) are shell-summed.
    """
    n, d = x.shape[0], x.dim() - 2
    sites = torch.as_tensor(site, dtype=torch.int64)
    sites = sites.expand(n, d) if sites.dim() == 1 else sites                    # (n, d)
    if sites.shape != (n, d):
        raise ValueError(f"site must be one site of {d} coordinates or per-sample sites of shape (n={n}, {d}), "
                         f"got shape {tuple(sites.shape)}")
    idx = (torch.arange(n),) + tuple(sites[:, a] for a in range(d))
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score_fn(x)
        if s.shape != x.shape:
            raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {tuple(s.shape)}")
        rows = []
        for c in range(s.shape[1]):
            (g,) = torch.autograd.grad(s[:, c][idx].sum(), x, retain_graph=c + 1 < s.shape[1])
            rows.append(g.abs() if absolute else g)
    jac = torch.stack(rows).sum(0).sum(1)                                # (n, *lattice)
    if mask is not None:
        jac = jac * mask.to(jac.dtype)[:, 0]
    if bool((sites == sites[:1]).all()):
        return shell_sums(jac, tuple(sites[0].tolist()), r_max, periodic=periodic, absolute=absolute)
    return torch.cat([shell_sums(jac[b:b + 1], tuple(sites[b].tolist()), r_max, periodic=periodic,
                                 absolute=absolute) for b in range(n)])


def absolute_response_profile(score_fn: ScoreFn, x: torch.Tensor, site, r_max: int, *, periodic: bool = True,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Absolute response profile ρ(r) = Σ_{j: d∞(i,j)=r} |∂s_i/∂x_j| of any score function (Eq. 5's terms).

    x: (n, C, *lattice); site: one site (a coordinate tuple) shared by all samples, or per-sample
    sites (n, d) (an integer tensor or nested sequence); ``mask`` (n, 1, *lattice): only the
    columns j with mask 1 count (open boxes: occupied sites — the score is a function of the
    occupied coordinates only). Returns (n, r_max + 1), r = 0 being the diagonal.
    """
    return _response_profile(score_fn, x, site, r_max, periodic=periodic, absolute=True, mask=mask)


def signed_response_profile(score_fn: ScoreFn, x: torch.Tensor, site, r_max: int, *, periodic: bool = True,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Signed response profile ρ(r) = Σ_{j: d∞(i,j)=r} ∂s_i/∂x_j (the learned side of Eq. 22).

    Arguments and shapes as :func:`absolute_response_profile`; r = 0 is the signed diagonal."""
    return _response_profile(score_fn, x, site, r_max, periodic=periodic, absolute=False, mask=mask)


def open_box_bulk(shape: Sequence[int], margin: int, *, device=None) -> torch.Tensor:
    """Boolean (*shape) indicator of the open-box sites farther than ``margin`` from the outside of
    the box: d∞(i, outside) = min_k min(i_k + 1, L_k − i_k) > margin, i.e. ``margin`` boundary layers
    dropped (``margin`` 0: every site). The open-box bulk of the RMSE (Eq. 16, "distance > R from the
    boundary") is ``margin = R``: the sites whose radius-R receptive field lies inside the box (a local student
    there sees no zero padding). May be empty (all False) on small boxes."""
    if int(margin) < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    bulk = torch.ones(tuple(shape), dtype=torch.bool, device=device)
    for axis, n in enumerate(shape):
        idx = torch.arange(n, device=device)
        inner = torch.minimum(idx, n - 1 - idx) >= int(margin)
        view = [1] * len(shape)
        view[axis] = n
        bulk = bulk & inner.view(view)
    return bulk


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
