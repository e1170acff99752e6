"""The size curve of one trained student: the size-extrapolation metrics at every size up to L = 1024 (FDLF
teachers) or 256 (Ising target), with the CPU seconds and peak memory of each size and the flatness of the
error (docs/size_curve.md).

Each size is one call of the project's evaluation (:func:`~sizetransfer.evaluation.fdlf.evaluate_fdlf`,
:func:`~sizetransfer.evaluation.ising_eval.evaluate_ising`) with sample counts chosen per size from site
budgets (:class:`SizeCurveConfig`), so the number of evaluated sites — and the cost — stays bounded:
many samples at small L, one sample at large L.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from sizetransfer.evaluation.fdlf import FDLFEvalConfig, check_at_least, evaluate_fdlf, per_size, sigma_name
from sizetransfer.evaluation.flatness import format_flatness, log_size_slope
from sizetransfer.evaluation.ising_eval import IsingEvalConfig, evaluate_ising, shell_response_error
from sizetransfer.size_curve.cost import measured

#: Largest L of a size curve per target kind: the range whose cost and memory were measured (docs/size_curve.md).
MAX_SIZE = {"fdlf": 1024, "ising": 256}
#: Sizes of a size curve when none are given (those at or above the training size are kept).
DEFAULT_SIZES = {"fdlf": (24, 32, 64, 128, 256, 512, 1024), "ising": (32, 64, 128, 256)}


@dataclass
class SizeCurveConfig:
    """Per-size sample counts of a size curve, as site budgets (the evaluation options themselves — σ_eval,
    near/far shells, probes, ε, seed, Ising r_max — are the run's, :class:`FDLFEvalConfig` /
    :class:`IsingEvalConfig`).

    FDLF teachers (d = 2):
        sites: clean-score RMSE on n_samples(L) = ceil(sites / L^d) samples (≥ 1): about ``sites`` sites per size.
        response_sites: finite-difference responses and response profiles on
            response_samples(L) = ceil(response_sites / L^d) samples, clipped to [1, the run's response_samples].
        pairs: (sample, probe) pairs of the finite-difference responses per size (``None``: the run's
            response_samples × n_probes, 16 by default); each pair costs 4 full-lattice student and teacher
            scores, so at most ``pair_sites`` // L^d pairs (≥ 1) are used; the pairs are spread as
            n_probes(L) = ceil(pairs(L) / response_samples(L)) probes on each response sample.
        pair_sites: the cost cap of the responses (pairs × L^d); 2^23 gives 16 pairs up to L = 512, 8 at 1024.
        chunk_sites: memory bound: scores computed on chunks of max(1, chunk_sites // L^d) samples
            (:attr:`FDLFEvalConfig.chunk_sites`).
    Ising target (posterior MCMC), at the one probe σ ``probe_sigma``:
        exact_sites: observations of the exact response (Eq. 22) ceil(exact_sites / L²), clipped to
            [4, the run's exact_observations] (each averages over all L² probe sites).
        learned_sites: observations of the learned response ceil(learned_sites / L²), clipped to
            [4, the run's learned_observations] (one probe site each).
        score_sites: observations of the RMSE against the MCMC smoothed score ceil(score_sites / L²),
            clipped to [1, the run's score_observations].
    """

    sites: int = 65536
    response_sites: int = 16384
    pairs: int | None = None
    pair_sites: int = 2 ** 23
    chunk_sites: int = 2 ** 18
    probe_sigma: float = 4.0
    exact_sites: int = 16384
    learned_sites: int = 65536
    score_sites: int = 4096

    def __post_init__(self) -> None:
        check_at_least(sites=(self.sites, 1), response_sites=(self.response_sites, 1),
                       chunk_sites=(self.chunk_sites, 1), pair_sites=(self.pair_sites, 1),
                       pairs=(1 if self.pairs is None else self.pairs, 1), exact_sites=(self.exact_sites, 1),
                       learned_sites=(self.learned_sites, 1), score_sites=(self.score_sites, 1))
        if not float(self.probe_sigma) > 0:
            raise ValueError(f"probe_sigma must be > 0, got {self.probe_sigma}")

    def fdlf(self, base: FDLFEvalConfig, L: int, dim: int = 2) -> FDLFEvalConfig:
        """The evaluation options of size L: ``base`` with this size's sample counts and chunking."""
        n = per_size(self.sites, L, dim, 1)
        r = per_size(self.response_sites, L, dim, 1, min(base.response_samples, n))
        pairs = min(self.pairs or base.response_samples * base.n_probes, max(1, self.pair_sites // L ** dim))
        return replace(base, n_samples=n, sites=None, response_samples=r, n_probes=math.ceil(pairs / r),
                       chunk_sites=self.chunk_sites)

    def ising(self, base: IsingEvalConfig, L: int) -> IsingEvalConfig:
        """The Ising evaluation options of size L: ``base`` at the one probe σ with this size's counts."""
        return replace(base, probe_sigmas=[float(self.probe_sigma)],
                       exact_observations=per_size(self.exact_sites, L, 2, 4, max(base.exact_observations, 4)),
                       learned_observations=per_size(self.learned_sites, L, 2, 4, max(base.learned_observations, 4)),
                       score_observations=per_size(self.score_sites, L, 2, 1, base.score_observations))


def check_curve_sizes(kind: str, data, sizes: Sequence[int], receptive_radius: int | None,
                      evaluation: FDLFEvalConfig | IsingEvalConfig) -> list[int]:
    """The sizes, sorted and unique, or a one-line ValueError naming ``sizes`` for the first size outside
    the range: above :data:`MAX_SIZE`, not above twice the student's receptive radius (on the torus the student
    would see its own periodic image), or not allowed by the target or the response shells."""
    sizes = sorted({int(L) for L in sizes})
    if not sizes:
        raise ValueError("sizes: give at least one size L")
    for L in sizes:
        if L > MAX_SIZE[kind]:
            raise ValueError(f"sizes: L = {L} is above {MAX_SIZE[kind]}, the largest size the size curve supports "
                             f"for the {'Ising' if kind == 'ising' else 'FDLF'} target")
        if receptive_radius is not None and 2 * int(receptive_radius) >= L:
            raise ValueError(f"sizes: L = {L} must be > 2R = {2 * int(receptive_radius)} (receptive radius "
                             f"R = {receptive_radius}: on the torus the student must not see its own periodic image)")
        try:
            if kind == "fdlf":
                evaluation.check_size(data.teacher, L)
            else:
                data.check_size(L)
                evaluation.check_size(L)
        except ValueError as err:
            raise ValueError(f"sizes: L = {L}: {err}") from None
    return sizes


def _fdlf_size(score, data, L: int, evaluation: FDLFEvalConfig, config: SizeCurveConfig, radius: int,
               sigma_min: float | None) -> tuple[dict, dict]:
    econf = config.fdlf(evaluation, L, dim=int(getattr(data.teacher, "dim", 2)))
    with measured() as cost:
        res = evaluate_fdlf(score, data, econf, receptive_radius=radius, sigma_min=sigma_min, sizes=[L])
    row = {"L": L, "n_samples": econf.n_samples, "n_sites": econf.n_samples * L ** int(getattr(data.teacher, "dim", 2)),
           "response_samples": econf.response_samples, "n_probes": econf.n_probes,
           **{k: v for k, v in res["rows"][0].items() if k != "L"}}
    return {**row, **cost}, {"rmse_keys": res["rmse_keys"], "target_name": res["target_name"],
                             "profile": res["profiles"][0]}


def _ising_size(score, data, L: int, evaluation: IsingEvalConfig, config: SizeCurveConfig, radius: int,
                near: Sequence[int], far: Sequence[int]) -> tuple[dict, dict]:
    iconf = config.ising(evaluation, L)
    with measured() as cost:
        res = evaluate_ising(score, data, iconf, receptive_radius=radius, sizes=[L])
    profile = res["profiles"][0]
    row = {"L": L, "n_sites": iconf.score_observations * L * L, "exact_observations": iconf.exact_observations,
           "learned_observations": iconf.learned_observations, "score_observations": iconf.score_observations,
           **{k: v for k, v in res["rows"][0].items() if k != "L"}}
    for name, (r_in, r_out) in (("near", near), ("far", far)):
        row[f"{name}_response_error"] = shell_response_error(profile["student"], profile["exact"], r_in, r_out)
    return {**row, **cost}, {"rmse_keys": ["score_rmse"], "target_name": f"Ising β = {res['beta']:.6g}",
                             "profile": profile}


def size_curve(score, data, *, kind: str, sizes: Sequence[int], receptive_radius: int,
               evaluation: FDLFEvalConfig | IsingEvalConfig, config: SizeCurveConfig | None = None,
               sigma_min: float | None = None, near: Sequence[int] = (1, 2), far: Sequence[int] = (5, 8),
               progress: bool = False, on_size: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """The size curve of ``score`` (a model score ``(x, sigma, cond)``, e.g.
    :func:`~sizetransfer.evaluation.score.model_score`) on ``data`` (:mod:`sizetransfer.data.protocol`).

    Args:
        kind: ``"fdlf"`` (``data.teacher``, exact score) or ``"ising"`` (``data.beta``, posterior MCMC).
        sizes: sizes L (checked first, :func:`check_curve_sizes`).
        receptive_radius: the student's R.
        evaluation: the run's evaluation options; the sample counts are replaced per size (``config``).
        sigma_min: FDLF: the student's σ_min (its RMSE is a second column).
        near, far: Ising: the shells of the near / far response errors (r_max ≥ far[1]).
        progress: a progress bar over the sizes.
        on_size: called after each size with the results so far (``"complete": False`` until the last size),
            e.g. to write the table as it grows: an interrupted curve keeps its finished sizes.
    Returns:
        ``{"target", "target_name", "headline", "columns", "rows", "profiles", "flatness", "flatness_line",
        "total_cpu_s", "peak_rss_MiB", "memory_method", "config"}``; one row per L with the metrics, the sample
        counts, ``n_sites`` (sites of the RMSE), ``cpu_s``, ``wall_s``, ``peak_rss_MiB`` and ``rss_start_MiB``.
    """
    config = config or SizeCurveConfig()
    if kind not in MAX_SIZE:
        raise ValueError(f"kind must be one of {sorted(MAX_SIZE)}, got {kind!r}")
    if kind == "ising" and evaluation.r_max < far[1]:
        raise ValueError(f"far = {tuple(far)} must end within ising_r_max = {evaluation.r_max}")
    sizes = check_curve_sizes(kind, data, sizes, receptive_radius, evaluation)
    rows, profiles, meta = [], [], {}
    bar = tqdm(sizes, desc="size curve", unit="size", disable=not progress)
    for L in bar:
        bar.set_postfix_str(f"L = {L}")
        if kind == "fdlf":
            row, meta = _fdlf_size(score, data, L, evaluation, config, receptive_radius, sigma_min)
        else:
            row, meta = _ising_size(score, data, L, evaluation, config, receptive_radius, near, far)
        rows.append(row)
        profiles.append(meta["profile"])
        bar.set_postfix_str(f"L = {L}: {row['cpu_s']:.0f} CPU-s, {row['peak_rss_MiB']:.0f} MiB")
        if on_size is not None and len(rows) < len(sizes):
            on_size(_results(kind, rows, profiles, meta, receptive_radius, evaluation, config, complete=False))
    bar.close()
    return _results(kind, rows, profiles, meta, receptive_radius, evaluation, config, complete=True)


def _results(kind: str, rows: list[dict], profiles: list[dict], meta: dict, receptive_radius: int, evaluation,
             config: SizeCurveConfig, complete: bool) -> dict[str, Any]:
    """The results dict of the sizes so far (see :func:`size_curve`)."""
    headline = meta["rmse_keys"][0] if kind == "fdlf" else "score_rmse"
    fit = log_size_slope([r["L"] for r in rows], [r[headline] for r in rows]) if len(rows) >= 2 else None
    metrics = [k for k in rows[0] if k not in ("L", "method", "cpu_s", "wall_s", "peak_rss_MiB", "rss_start_MiB")]
    return {"target": kind, "target_name": meta["target_name"], "headline": headline, "complete": complete,
            "columns": ["L", *metrics, "cpu_s", "wall_s", "peak_rss_MiB", "rss_start_MiB"],
            "rows": [{k: v for k, v in r.items() if k != "method"} for r in rows], "profiles": list(profiles),
            "flatness": fit, "flatness_line": format_flatness(fit, headline) if fit else
            "flatness: needs at least 2 sizes", "total_cpu_s": sum(r["cpu_s"] for r in rows),
            "peak_rss_MiB": max(r["peak_rss_MiB"] for r in rows), "memory_method": rows[0]["method"],
            "receptive_radius": receptive_radius, "sigma_eval": None if kind == "ising" else evaluation.sigma_eval,
            "sigma_name": sigma_name(config.probe_sigma if kind == "ising" else evaluation.sigma_eval),
            "config": asdict(config), "evaluation": asdict(evaluation)}
