"""Size extrapolation against an exact teacher (FDLF, Gaussian, hard-valid 3D), as a plain function.

:func:`evaluate_fdlf` compares a model score with the exact score of ``data.teacher`` at every size
L (definitions and equation numbers: docs/metrics.md):

* clean-score relative RMSE (Eq. 16) at σ_eval and σ_min;
* near/far finite-difference response errors (Eq. 17);
* the student's normalised absolute response profile beside the teacher's, with both response
  ranges R_q (Eq. 5).

2D periodic teachers have the exact score ``teacher.score(x)``; the 3D open-box hard-valid
teachers bind theirs to each batch's discrete state, ``teacher.score(x, ports, types)``, and the
student gets ``batch["cond"]`` (:func:`bind_teacher`).

Open boxes (``teacher.periodic`` False; the batch carries ``mask`` = occupied sites):

* RMSE: occupied sites farther than ``bulk_margin`` from the outside of the box
  (:func:`~sizetransfer.evaluation.metrics.open_box_bulk`); ``bulk_margin=None`` is the bulk of
  margin R (the sites whose receptive field lies inside the box), which is empty for R = 4 at L ≤ 8.
  When ``bulk_margin`` is set (≠ R) the margin-R bulk is reported too, as ``rmse_bulk_sigma<σ>``
  (NaN where it holds no occupied site).
* Responses: per-sample probe sites (:func:`probe_sites`); perturbations act on occupied sites
  only; (sample, probe) pairs without an occupied site are left out of the error.
* Profiles: per sample the occupied site nearest to the box centre (:func:`profile_sites`), Jacobian
  columns of occupied sites only; samples with no occupied site are left out of the average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from sizetransfer.evaluation.far_share import far_share
from sizetransfer.evaluation.metrics import (
    absolute_response_profile,
    clean_score_sums,
    finite_difference_response,
    open_box_bulk,
    response_relative_error,
)
from sizetransfer.evaluation.score import ScoreFn, bind_score
from sizetransfer.lattice import response_range


def sigma_name(value: float) -> str:
    """σ in metric names: 0.05 → '0.05', 4.0 → '4'."""
    return f"{value:g}"


def _check_range(name: str, pair: Sequence[int]) -> tuple[int, int]:
    if len(pair) != 2 or not 1 <= int(pair[0]) <= int(pair[1]):
        raise ValueError(f"{name} must be a pair (r_in, r_out) with 1 <= r_in <= r_out, got {tuple(pair)}")
    return int(pair[0]), int(pair[1])


def per_size(budget: int, L: int, dim: int, low: int, high: int | None = None) -> int:
    """ceil(budget / L^dim), clipped to [low, high] (no upper bound when ``high`` is None): the samples that
    hold about ``budget`` sites of a d-dimensional lattice of side L."""
    n = max(int(low), math.ceil(int(budget) / int(L) ** dim))
    return n if high is None else min(n, int(high))


def check_at_least(**values_and_minimums: tuple[Any, int]) -> None:
    """ValueError ``<name> must be an integer >= <low>`` for the first ``name=(value, low)`` below its minimum."""
    for name, (value, low) in values_and_minimums.items():
        if int(value) < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")


@dataclass
class FDLFEvalConfig:
    """Options of :func:`evaluate_fdlf` (the ``evaluation.*`` config keys of the same names).

    Args:
        n_samples: evaluation samples per L (``data.eval_batch(L, n, seed=seed)``); with ``sites``, at least this many.
        sites: ``None``: n_samples at every size. Else the clean-score RMSE of size L is computed on
            :meth:`samples_at` = max(n_samples, ceil(sites / L^d)) samples, about ``sites`` lattice sites at
            every size, so its sampling error does not grow as L shrinks (16 samples at L = 24 hold 1/16 of
            the sites of 16 at L = 96). The responses and profiles stay on the first ``response_samples``.
        seed: seed of the evaluation samples and probe sites.
        sigma_eval: σ of the headline clean-score RMSE and of the responses; also reported at σ_min.
        near, far: Chebyshev shells ``(r_in, r_out)`` of the response regions A (Eq. 17); keep ``far``
            fixed across a radius sweep. Each size needs ``far[1] <= L // 2`` on a torus; on an open
            box ``far[0] <= L // 2`` (the far shell, clipped to the box, is not empty at the centre).
        n_probes: probe sites of the finite-difference responses (torus: the same in every sample;
            open box: per sample, occupied sites).
        fd_epsilon: finite-difference perturbation ε on region A.
        response_samples: the first samples on which the responses and the response profiles
            (torus: centre site, r = 0..L//2; open box: see the module; averaged) are evaluated.
        q: tail level of the response range R_q.
        bulk_margin: open boxes: the RMSE counts occupied sites farther than this from the outside of
            the box; ``None``: the receptive radius R. Torus: ignored.
        chunk_sites: memory bound: scores, responses and profiles are computed on chunks of
            max(1, chunk_sites // L^d) samples at a time (at least one whole sample); the results equal
            the unchunked ones up to round-off. Not an ``evaluation.*`` key.
    """

    n_samples: int = 16
    sites: int | None = None
    seed: int = 12345
    sigma_eval: float = 0.05
    near: tuple[int, int] = (1, 2)
    far: tuple[int, int] = (5, 8)
    n_probes: int = 4
    fd_epsilon: float = 1e-2
    response_samples: int = 4
    q: float = 0.05
    bulk_margin: int | None = None
    chunk_sites: int = 2 ** 18

    def __post_init__(self) -> None:
        check_at_least(n_samples=(self.n_samples, 1), seed=(self.seed, 0), n_probes=(self.n_probes, 1),
                       response_samples=(self.response_samples, 1), chunk_sites=(self.chunk_sites, 1))
        if self.sites is not None:
            if not isinstance(self.sites, (int, float)) or isinstance(self.sites, bool) \
                    or int(self.sites) != self.sites or self.sites < 1:
                raise ValueError(f"sites must be an integer >= 1 or None (n_samples at every size), got {self.sites!r}")
            self.sites = int(self.sites)
        if self.response_samples > self.n_samples:
            raise ValueError(f"response_samples must be in [1, n_samples={self.n_samples}], got {self.response_samples}")
        if not self.sigma_eval > 0:
            raise ValueError(f"sigma_eval must be > 0, got {self.sigma_eval}")
        if not self.fd_epsilon > 0:
            raise ValueError(f"fd_epsilon must be > 0, got {self.fd_epsilon}")
        if not 0 < self.q < 1:
            raise ValueError(f"q must be in (0, 1), got {self.q}")
        m = self.bulk_margin
        if m is not None and (isinstance(m, bool) or int(m) != m or m < 0):
            raise ValueError(f"bulk_margin must be an integer >= 0 or None (the receptive radius), got {m!r}")
        self.near, self.far = _check_range("near", self.near), _check_range("far", self.far)
        if self.near[1] >= self.far[0]:
            raise ValueError(f"near (r_in, r_out) must end before far begins: near={self.near}, far={self.far}")
        self.n_samples, self.seed, self.n_probes = int(self.n_samples), int(self.seed), int(self.n_probes)
        self.response_samples, self.sigma_eval = int(self.response_samples), float(self.sigma_eval)
        self.fd_epsilon, self.q = float(self.fd_epsilon), float(self.q)
        self.bulk_margin = None if m is None else int(m)
        self.chunk_sites = int(self.chunk_sites)

    def samples_at(self, L: int, dim: int = 2) -> int:
        """Evaluation samples of size L on a d-dimensional lattice: n_samples, or max(n_samples, ceil(sites / L^d))."""
        return self.n_samples if self.sites is None else per_size(self.sites, L, int(dim), self.n_samples)

    def chunks(self, n: int, lattice: Sequence[int]) -> list[slice]:
        """Slices of the n samples, each of at most max(1, chunk_sites // sites per sample) samples."""
        per = max(1, self.chunk_sites // math.prod(int(k) for k in lattice))
        return [slice(a, min(a + per, n)) for a in range(0, n, per)]

    def check_size(self, teacher, L: int) -> None:
        """ValueError unless the teacher and the response regions are defined at size L."""
        teacher.check_size(L)
        if teacher.periodic and self.far[1] > L // 2:
            raise ValueError(f"far = {self.far} must satisfy far[1] <= L // 2 = {L // 2} at eval size L = {L}")
        if not teacher.periodic and self.far[0] > L // 2:
            raise ValueError(f"far = {self.far} must satisfy far[0] <= L // 2 = {L // 2} at eval size L = {L} "
                             "(open box: the far shell around a central probe must meet the box)")


def bind_teacher(teacher, batch: dict, n: int | None = None):
    """Exact score and absolute response profile of ``teacher`` bound to the first ``n`` samples of
    ``batch`` (all when ``None``): ``(score_fn, profile_fn)`` with ``score_fn(x) -> (n, C, *lattice)``
    and ``profile_fn(x, site, r_max) -> (n, r_max + 1)``.

    A batch with ``"ports"`` and ``"types"`` (hard-valid 3D) binds them, ``teacher.score(x, ports,
    types)``, and x must hold the same n samples (ValueError otherwise); 2D teachers are used as they
    are. ``site`` is one site shared by the samples, or per-sample sites (n, d) (one teacher call per sample).
    """
    discrete = "ports" in batch
    ports, types = (batch["ports"][:n], batch["types"][:n]) if discrete else (None, None)

    def extra(b: slice | None = None) -> tuple:
        if not discrete:
            return ()
        return (ports, types) if b is None else (ports[b], types[b])

    def aligned(x):
        if discrete and x.shape[0] != ports.shape[0]:
            raise ValueError(f"the teacher's ports/types are bound to {ports.shape[0]} samples, got x of {x.shape[0]}")

    def score(x):
        aligned(x)
        return teacher.score(x, *extra())

    def profile(x, site, r_max):
        aligned(x)
        site = torch.as_tensor(site)
        if site.dim() == 1:
            return teacher.response_profile(x, tuple(site.tolist()), r_max, *extra())
        return torch.cat([teacher.response_profile(x[b:b + 1], tuple(site[b].tolist()), r_max,
                                                   *extra(slice(b, b + 1))) for b in range(len(x))])

    return score, profile


def bulk_mask(batch: dict, periodic: bool, margin: int) -> torch.Tensor | None:
    """Sites entering the RMSE: the batch's ``mask`` (occupied sites) and, on open boxes, the sites
    farther than ``margin`` from the outside of the box (:func:`open_box_bulk`); ``None`` when
    every site counts. Shape (n, 1, L, ...)."""
    mask = batch.get("mask")
    if periodic:
        return None if mask is None else mask.bool()
    shape = batch["x0"].shape
    bulk = open_box_bulk(shape[2:], margin).expand(shape[0], 1, *shape[2:])
    return bulk if mask is None else bulk & mask.bool()


def probe_sites(config: FDLFEvalConfig, lattice, periodic: bool, L: int, occupied: torch.Tensor | None = None,
                n: int = 1):
    """Probe sites of the finite-difference responses and their weights.

    Torus: ``n_probes`` distinct uniform sites shared by all samples, weights ``None``. Open box:
    per-sample sites (n, P, d) from the sites whose whole far shell lies inside the box
    (min_k min(i_k, L−1−i_k) ≥ far[1]; where there is none, the central 2×2×2 cube), occupied ones
    first in a seeded random order, and weights (n, P) = occupied (``occupied`` (n, 1, *lattice);
    ``None``: every site, n samples).
    """
    gen = torch.Generator().manual_seed(config.seed + 7919 * L)
    if periodic:
        sites = torch.ones(lattice, dtype=torch.bool).nonzero()
        pick = torch.randperm(len(sites), generator=gen)[: config.n_probes]
        return [tuple(int(c) for c in sites[i]) for i in pick], None
    allowed = open_box_bulk(lattice, config.far[1])
    if not allowed.any():
        allowed = open_box_bulk(lattice, max(min(lattice) // 2 - 1, 0))
    sites = allowed.nonzero()                                            # (A, d)
    n = n if occupied is None else occupied.shape[0]
    occ = (torch.ones(n, len(sites), dtype=torch.bool) if occupied is None else
           occupied[(slice(None), 0) + tuple(sites.T)].bool())          # (n, A)
    P = min(config.n_probes, len(sites))
    order = torch.stack([torch.randperm(len(sites), generator=gen) for _ in range(n)])   # (n, A)
    # occupied first, each group in the random order (stable sort on "unoccupied")
    rank = torch.argsort((~occ.gather(1, order)).to(torch.int8), dim=1, stable=True)
    chosen = order.gather(1, rank)[:, :P]                                # (n, P)
    return sites[chosen], occ.gather(1, chosen).to(torch.float64)


def profile_sites(config: FDLFEvalConfig, shape, periodic: bool, L: int, occupied: torch.Tensor | None):
    """Probe site(s) of the response profiles, r_max and the samples kept in the average.

    Torus: the centre for all samples, r_max = L // 2 (the whole torus). Open box: per sample the
    occupied site nearest to the box centre (ties: seeded random order), r_max = the largest
    distance from any chosen probe to a site of the box; samples without occupied sites dropped."""
    n, lattice = shape[0], tuple(shape[2:])
    if periodic or occupied is None:
        centre = tuple(k // 2 for k in lattice)
        return centre, min(lattice) // 2, torch.ones(n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(config.seed + 7919 * L + 1)
    coords = torch.ones(lattice, dtype=torch.bool).nonzero()            # (N, d)
    centre = (torch.tensor(lattice, dtype=torch.float64) - 1) / 2
    dist = (coords - centre).abs().amax(1)                               # Chebyshev distance to the centre
    tie = torch.rand(len(coords), generator=gen)
    occ = occupied[:, 0].reshape(n, -1).bool()                           # (n, N)
    score = torch.where(occ, dist + 0.5 * tie, torch.inf)                # nearest occupied, ties random
    sites = coords[score.argmin(1)]                                      # (n, d)
    keep = occ.any(1)
    extent = torch.maximum(sites, torch.tensor(lattice) - 1 - sites).amax(1)
    r_max = int(extent[keep].max()) if keep.any() else max(lattice) // 2
    return sites, r_max, keep


def _samples(batch: dict, part: slice) -> dict:
    """The samples ``part`` of every tensor of ``batch`` (x0, cond, mask, ports, types)."""
    return {k: v[part] for k, v in batch.items()}


def _rmses(score: ScoreFn, teacher, batch: dict, config: FDLFEvalConfig, sigmas: list[float],
           masks: dict[str, int], keys: dict) -> dict[str, float]:
    """Clean-score RMSE (Eq. 16) per key, the sums accumulated in float64 over chunks of samples (the exact
    teacher score is computed chunk by chunk); NaN where the mask holds no site."""
    periodic = bool(teacher.periodic)
    sums = {key: [0.0, 0.0, False] for key in keys.values()}      # Σ err, Σ ref, any site
    for part in config.chunks(batch["x0"].shape[0], batch["x0"].shape[2:]):
        sub = _samples(batch, part)
        x = sub["x0"].to(torch.float64)
        target = bind_teacher(teacher, sub)[0](x)
        for sigma in sigmas:
            learned = bind_score(score, sigma, sub.get("cond"))(x)
            for name, m in masks.items():
                mask = bulk_mask(sub, periodic, m)
                acc = sums[keys[name, sigma]]
                if mask is None or bool(mask.any()):
                    err, ref = clean_score_sums(learned, target, mask=mask)
                    acc[0], acc[1], acc[2] = acc[0] + float(err), acc[1] + float(ref), True
    return {key: math.sqrt(err / ref) if seen else math.nan for key, (err, ref, seen) in sums.items()}


def _fdlf_row(score: ScoreFn, teacher, batch: dict, L: int, config: FDLFEvalConfig, sigmas: list[float],
              masks: dict[str, int], keys: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics row and the profile entry of one size; every score is computed on chunks of samples
    (:meth:`FDLFEvalConfig.chunks`)."""
    periodic = bool(teacher.periodic)
    row: dict[str, Any] = {"L": L, **_rmses(score, teacher, batch, config, sigmas, masks, keys)}
    # responses (Eq. 17) and profiles on the first response_samples samples
    head = _samples(batch, slice(0, config.response_samples))
    shape = head["x0"].shape
    occ_r = head.get("mask")
    probes, valid = probe_sites(config, shape[2:], periodic, L, occ_r, n=shape[0])
    sites, r_max, keep = profile_sites(config, shape, periodic, L, occ_r)
    regions = {"near": config.near, "far": config.far}
    responses: dict[str, tuple[list, list]] = {name: ([], []) for name in regions}
    profiles: tuple[list, list] = ([], [])
    for part in config.chunks(shape[0], shape[2:]):
        sub = _samples(head, part)
        x, occ = sub["x0"].to(torch.float64), sub.get("mask")
        student = bind_score(score, config.sigma_eval, sub.get("cond"))
        teacher_score, teacher_profile = bind_teacher(teacher, sub)
        chunk_probes = probes if valid is None else probes[part]
        for name, (r_in, r_out) in regions.items():
            kw = dict(r_in=r_in, r_out=r_out, eps=config.fd_epsilon, periodic=periodic, mask=occ)
            responses[name][0].append(finite_difference_response(student, x, chunk_probes, **kw))
            responses[name][1].append(finite_difference_response(teacher_score, x, chunk_probes, **kw))
        chunk_sites = sites[part] if isinstance(sites, torch.Tensor) else sites
        profiles[0].append(absolute_response_profile(student, x, chunk_sites, r_max, periodic=periodic,
                                                     mask=None if periodic else occ).detach())
        profiles[1].append(teacher_profile(x, chunk_sites, r_max).detach())
    for name, (parts_s, parts_t) in responses.items():
        resp_s, resp_t = torch.cat(parts_s), torch.cat(parts_t)
        if valid is not None:
            resp_s, resp_t = resp_s * valid[..., None], resp_t * valid[..., None]
        row[f"{name}_response_error"] = float(response_relative_error(resp_s, resp_t))
    prof_s, prof_t = (torch.cat(p).to("cpu", torch.float64)[keep].mean(0) for p in profiles)
    row["response_range_student"] = int(response_range(prof_s, config.q))
    row["response_range_teacher"] = int(response_range(prof_t, config.q))
    row["teacher_far_share"] = far_share(prof_t, config.far)
    profile = {"L": L, "r": list(range(r_max + 1)), "student": (prof_s / prof_s[1:].sum()).tolist(),
               "teacher": (prof_t / prof_t[1:].sum()).tolist()}
    return row, profile


def evaluate_fdlf(score: ScoreFn, data, config: FDLFEvalConfig | None = None, *, receptive_radius: int,
                  sigma_min: float | None = None, sizes: Sequence[int] | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Size-extrapolation metrics of ``score`` against the exact teacher ``data.teacher``.

    Args:
        score: model score ``(x, sigma, cond) -> score`` on float64 CPU tensors
            (:func:`~sizetransfer.evaluation.score.model_score` of a student).
        data: anything with ``teacher``, ``eval_sizes`` and ``eval_batch(L, n, *, seed)``
            (:mod:`sizetransfer.data.protocol`).
        receptive_radius: the student's R (default open-box bulk margin, figure marks).
        sigma_min: the student's smallest training σ: the RMSE is reported there too.
        sizes: sizes L (default ``data.eval_sizes``).
    Returns:
        ``{"target": "fdlf", "target_name", "rmse_keys", "metric_keys", "rows", "profiles"}``: one row
        per L (``L``, ``rmse_sigma<σ>`` [``rmse_bulk_sigma<σ>``], ``near_response_error``,
        ``far_response_error``, ``response_range_student``, ``response_range_teacher``, ``teacher_far_share``:
        the fraction of the teacher's off-diagonal response in the far shells, :func:`~sizetransfer.evaluation.far_share.far_share`;
        the far error is meaningful only where it is ≥ :data:`~sizetransfer.evaluation.far_share.FAR_SHARE_MIN`) and one
        normalised profile pair per L.
    """
    config = config or FDLFEvalConfig()
    teacher = data.teacher
    periodic = bool(teacher.periodic)
    sigmas = [config.sigma_eval]
    if sigma_min is not None and not math.isclose(sigma_min, config.sigma_eval):
        sigmas.append(float(sigma_min))
    radius = int(receptive_radius)
    margin = radius if config.bulk_margin is None else config.bulk_margin
    masks = {"rmse": margin}
    if not periodic and margin != radius:  # open boxes with a chosen margin: also the margin-R bulk
        masks["rmse_bulk"] = radius
    keys = {(name, sigma): f"{name}_sigma{sigma_name(sigma)}" for name in masks for sigma in sigmas}
    rmse_keys = list(keys.values())
    rows, profiles = [], []
    with torch.inference_mode(False), torch.no_grad():  # the Jacobians enable grad locally
        for L in tqdm(list(sizes or data.eval_sizes), desc="size extrapolation", disable=not progress):
            batch = data.eval_batch(L, config.samples_at(L, int(getattr(teacher, "dim", 2))), seed=config.seed)
            row, profile = _fdlf_row(score, teacher, batch, L, config, sigmas, masks, keys)
            rows.append(row)
            profiles.append(profile)
    name = f"FDLF {teacher.key}" if periodic else f"FDLF {teacher.key} (open box, occupied sites, margin {margin})"
    return {"target": "fdlf", "target_name": name, "rmse_keys": rmse_keys,
            "metric_keys": rmse_keys + ["near_response_error", "far_response_error",
                                        "response_range_student", "response_range_teacher", "teacher_far_share"],
            "rows": rows, "profiles": profiles}

