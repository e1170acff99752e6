"""Generation-level local observables (paper Appendix C.2, Table 5; docs/metrics.md).

Samples of the learned reverse process are compared with teacher samples through the pooled local
observables of :func:`~sizetransfer.evaluation.metrics.local_observables` (per-site mean, variance,
skewness, excess kurtosis, nearest-neighbour correlation per axis); the headline number is their
mean absolute error (MAE, :func:`~sizetransfer.evaluation.metrics.observables_mae`).

Plain torch functions:

* :func:`generation_sigmas` — the reverse schedule σ_max → σ_min (geometric) → 0.
* :func:`generate` — x_{σ_max} = σ_max · N(0, I), then one of the samplers of
  :mod:`sizetransfer.diffusion.sampling` down the schedule; its last step σ_min → 0 is the
  noise-free Tweedie step x + σ_min² s(x, σ_min).
* :func:`generation_errors` — per-observable absolute errors and their MAE.
* :func:`teacher_floor` — the MAE that sampling error alone gives: independent teacher sample sets
  of the same size and count scored against the same reference set, so a perfect sampler's MAE
  has this expectation.

:func:`evaluate_generation` runs them at every size of a :class:`GenerationConfig` against the
eval batches of a data object; ``GenerationCallback`` (``sizetransfer.evaluation.callback``) runs it at
the end of training for the EMA student and writes ``generation.csv|json|png`` to
``<run dir>/eval/step=<k>/`` beside the size-extrapolation metrics.

Note on σ_max: the reverse process starts from N(0, σ_max² I), not from the smoothed teacher
p_{L,σ_max} = p_L * N(0, σ_max² I). With the FDLF training range σ_max = 1 and teacher variances of
1.3 (short range) to 2.3 (complex_long, site mean −0.85), the start is off and even the exact score
leaves a bias that is part of the reported MAE (measured with the Gaussian teacher in
tests/test_generation.py); the student is not trained above σ_max, so the schedule cannot simply
start higher. The predictor–corrector sampler's Langevin corrector repairs the start; run it only
at the higher noise levels (``corrector_sigma_min``, default 0.1 in the callback), because at low σ
it amplifies a student's low-σ score errors into runaway sites whose kurtosis dominates the MAE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from sizetransfer.diffusion.noise import geometric_sigmas
from sizetransfer.diffusion.sampling import (
    sample_euler_maruyama,
    sample_predictor_corrector,
    sample_probability_flow,
)
from sizetransfer.evaluation.metrics import local_observables, observables_mae

#: Reverse-process samplers by name: predictor–corrector (one Langevin corrector per step, so two
#: score evaluations per step), Euler–Maruyama on the reverse SDE (one), Heun on the
#: probability-flow ODE (two).
SAMPLERS: dict[str, Callable] = {"pc": sample_predictor_corrector, "em": sample_euler_maruyama,
                                 "pf": sample_probability_flow}
#: Score evaluations per reverse step of each sampler (cost model).
EVALS_PER_STEP = {"pc": 2, "em": 1, "pf": 2}

ScoreFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def generation_sigmas(sigma_max: float, sigma_min: float, steps: int, *,
                      dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Reverse schedule of ``steps`` steps: ``steps`` geometric levels σ_max → σ_min, then 0.

    Shape (steps + 1,); the last step σ_min → 0 is the denoising Tweedie step.
    """
    return geometric_sigmas(sigma_max, sigma_min, steps, append_zero=True, dtype=dtype, device=device)


def generate(score_fn: ScoreFn, shape: Sequence[int], sigmas: torch.Tensor | Sequence[float], *,
             sampler: str = "pc", generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, progress: bool = False, dtype: torch.dtype | None = None,
             device=None, corrector_sigma_min: float | None = None) -> torch.Tensor:
    """Samples of the reverse process of the score ``score_fn``.

    Args:
        score_fn: ``score_fn(x, sigma, cond) -> score`` with x (n, C, *lattice), sigma (n,)
            (e.g. ``ScoreModule.score`` or ``lambda x, s, c: teacher.smoothed_score(x, s)``).
        shape: (n, C, *lattice) of the samples.
        sigmas: decreasing schedule starting at σ_max (e.g. :func:`generation_sigmas`); a 0 is
            appended when it does not end in 0, so the last step is always the Tweedie step to σ = 0.
        sampler: ``"pc"`` (predictor–corrector), ``"em"`` (Euler–Maruyama) or ``"pf"``
            (probability-flow ODE, Heun), the samplers of :mod:`sizetransfer.diffusion.sampling`.
        generator: source of the initial state σ_max · N(0, I) and of the sampler's noise.
        cond: optional conditioning channels (n, C_cond, *lattice), passed to ``score_fn``.
        mask: optional (n, 1, *lattice) 0/1 site mask: only masked coordinates move; the others
            start and stay at 0 (3D: empty sites).
        dtype, device: of the samples (default: the schedule's floating dtype, else float32; the
            generator's device).
        corrector_sigma_min: ``"pc"`` only: the Langevin corrector runs at the levels σ ≥ this value;
            below them the predictor (Euler–Maruyama) alone (``None``: the corrector at every level).
            The corrector is what repairs the N(0, σ_max² I) start (module docstring), a high-σ
            error; at low σ it mostly amplifies errors of a student's low-σ score into rare runaway
            sites whose kurtosis dominates the MAE (measured on simple_local students at L = 24:
            300 steps MAE 9.0 with the corrector everywhere, 0.024 with it above σ = 0.1; 1500
            steps 1.04 and 0.040).
    Returns:
        Samples (n, C, *lattice) at σ = 0.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    sigmas = torch.as_tensor(sigmas)
    if dtype is None:
        dtype = sigmas.dtype if sigmas.is_floating_point() else torch.float32
    if device is None:
        device = generator.device if generator is not None else sigmas.device
    sigmas = sigmas.to(device=device, dtype=dtype)
    if sigmas.dim() != 1 or len(sigmas) < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D schedule, got shape {tuple(sigmas.shape)}")
    if sigmas[-1] > 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    x = sigmas[0] * torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    if mask is not None:
        mask = mask.to(device=device, dtype=dtype)
        x = x * mask
    if cond is not None:
        cond = cond.to(device=device, dtype=dtype)
    kw = dict(cond=cond, mask=mask, generator=generator, progress=progress)
    if corrector_sigma_min is not None:
        if sampler != "pc":
            raise ValueError(f"corrector_sigma_min applies to sampler 'pc' only, got sampler {sampler!r}")
        if not corrector_sigma_min > 0:
            raise ValueError(f"corrector_sigma_min must be > 0 (or None), got {corrector_sigma_min}")
        k = int((sigmas >= corrector_sigma_min).sum())  # the levels sigmas[:k] get the corrector
        if k == 0:
            return sample_euler_maruyama(score_fn, x, sigmas, **kw)
        if k < len(sigmas) - 1:
            x = sample_predictor_corrector(score_fn, x, sigmas[: k + 1], **kw)  # corrector at sigmas[:k]
            return sample_euler_maruyama(score_fn, x, sigmas[k:], **kw)
    return SAMPLERS[sampler](score_fn, x, sigmas, **kw)


def observables(x: torch.Tensor, *, periodic: bool = True, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """:func:`local_observables` of x (n, C, *lattice) computed in float64 on the CPU; values (C,)."""
    x = x.detach().to("cpu", torch.float64)
    mask = None if mask is None else mask.detach().to("cpu", torch.float64)
    return local_observables(x, periodic=periodic, mask=mask)


def generation_errors(generated: torch.Tensor, reference: torch.Tensor, *, periodic: bool = True,
                      mask: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Absolute errors of the local observables of ``generated`` against ``reference``.

    Args:
        generated, reference: samples (n, C, *lattice) and (m, C, *lattice) (any n, m).
        periodic: lattice boundary (nearest-neighbour pairs wrap around).
        mask, reference_mask: optional (n, 1, *lattice) site masks of the two sets
            (``reference_mask`` defaults to ``mask``: generation conditioned on the reference's sites).
    Returns:
        ``{observable: |obs(generated) − obs(reference)|}`` (mean over channels) for every key of
        :func:`local_observables`, and ``"mae"``, their mean (:func:`observables_mae`).
    """
    if generated.shape[1:] != reference.shape[1:]:
        raise ValueError(f"generated and reference must share (C, *lattice), got {tuple(generated.shape)} "
                         f"and {tuple(reference.shape)}")
    reference_mask = mask if reference_mask is None else reference_mask
    a = observables(generated, periodic=periodic, mask=mask)
    b = observables(reference, periodic=periodic, mask=reference_mask)
    errors = {k: float((a[k] - b[k]).abs().mean()) for k in a}
    errors["mae"] = float(observables_mae(a, b))
    return errors


def teacher_floor(reference: torch.Tensor, independent: Sequence[torch.Tensor], *, periodic: bool = True,
                  mask: torch.Tensor | None = None,
                  independent_masks: Sequence[torch.Tensor | None] | None = None) -> tuple[float, float]:
    """Noise floor of the MAE: independent teacher sets of the same size and count vs ``reference``.

    Each set of ``independent`` (same shape as ``reference``) stands for a perfect sampler; its MAE
    against ``reference`` is the MAE that sampling error alone gives. Returns (mean, standard error
    of the mean) over the sets (standard error NaN for a single set).
    """
    if len(independent) == 0:
        raise ValueError("independent must hold at least one teacher sample set")
    masks = list(independent_masks) if independent_masks is not None else [None] * len(independent)
    maes = []
    for other, other_mask in zip(independent, masks):
        if other.shape != reference.shape:
            raise ValueError(f"independent sets must have the reference's shape {tuple(reference.shape)} "
                             f"(same size and count), got {tuple(other.shape)}")
        maes.append(generation_errors(other, reference, periodic=periodic, mask=other_mask,
                                      reference_mask=mask)["mae"])
    values = torch.tensor(maes, dtype=torch.float64)
    sem = float(values.std() / math.sqrt(len(maes))) if len(maes) > 1 else float("nan")
    return float(values.mean()), sem


@dataclass
class GenerationConfig:
    """Options of :func:`evaluate_generation` (the ``generation.*`` config keys of the same names).

    Args:
        sizes: lattice sizes L; empty: generation is off.
        n_samples: samples per L, generated and reference alike, one count for all sizes or a list with one
            per size. The observables pool over samples and sites, so their noise falls with n · L^d:
            measured MAE floors (8 repeats) at L = 24 are 0.02-0.03 with 64 samples but 0.05-0.18 with 16
            (rare large values drive the kurtosis), at L = 64 0.017-0.026 with 16 samples.
        steps: reverse steps (geometric noise levels σ_max → σ_min; plus the final Tweedie step). Cost:
            steps × (2 for pc/pf, 1 for em) student evaluations of n samples at L; a B = 1, width-64
            student on one CPU thread takes ≈ 0.14 s (n 64, L 24), 0.25 s (n 16, L 64), 1.3 s (n 64,
            L 64) per evaluation, so the configs' [64, 16] samples at 256 pc steps add ≈ 4 CPU-minutes.
            Fewer steps leave the corrector too few Langevin moves to repair the start: a 3000-step
            simple_local student (L = 24, pc, corrector at σ ≥ 0.1) generates variance 1.15 at 64 steps
            and 1.20 at 256 (teacher 1.29), MAE 0.098 and 0.038 (floor 0.025).
        sampler: ``"pc"``, ``"em"`` or ``"pf"`` (see :data:`SAMPLERS`; pc and pf cost two score
            evaluations per step, em one).
        corrector_sigma_min: ``pc`` only (ignored by em and pf): run the Langevin corrector only at
            levels σ ≥ this, the predictor alone below (see :func:`generate`; ``None``: at every level).
            Measured on a 1500-step simple_local student (B = 1, L = 24 / 64, 64 steps): MAE 0.040 / 0.032
            with 0.1 (floor 0.021 / 0.019), 1.04 / 2.11 with the corrector everywhere (runaway sites,
            kurtosis error 5.6 / 11.8), 0.25 / 0.24 with em (no corrector: the N(0, σ_max²) start bias).
        sigma_max, sigma_min: ends of the reverse schedule (``None``: the student's training noise range,
            :meth:`schedule_range`).
        seed: seed of the reference samples (the size-extrapolation default 12345 shares its cache)
            and, with L, of the reverse process's noise.
        floor_repeats: independent teacher sets of the noise floor.
    """

    sizes: Sequence[int] = ()
    n_samples: int | Sequence[int] = 64
    steps: int = 256
    sampler: str = "pc"
    corrector_sigma_min: float | None = 0.1
    sigma_max: float | None = None
    sigma_min: float | None = None
    seed: int = 12345
    floor_repeats: int = 8

    def __post_init__(self) -> None:
        sizes = list(self.sizes or [])
        if any(int(L) != L or L < 2 for L in sizes):
            raise ValueError(f"generation.sizes must be a list of integer sizes L >= 2 (or null/[]: off), got {sizes}")
        if len(set(int(L) for L in sizes)) != len(sizes):
            raise ValueError(f"generation.sizes must not repeat a size, got {sizes}")
        n_samples = self.n_samples
        single = isinstance(n_samples, int)
        counts = [n_samples] if single else list(n_samples)
        if (not single and sizes and len(counts) != len(sizes)) or any(int(n) != n or n < 2 for n in counts):
            raise ValueError(f"generation.n_samples must be an integer >= 2 or a list of them, one per size "
                             f"(sizes={sizes}), got {n_samples!r}")
        counts = counts * len(sizes) if single else counts
        for name, value, low in [("steps", self.steps, 2), ("seed", self.seed, 0),
                                 ("floor_repeats", self.floor_repeats, 1)]:
            if int(value) != value or value < low:
                raise ValueError(f"generation.{name} must be an integer >= {low}, got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"generation.sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if self.corrector_sigma_min is not None and not self.corrector_sigma_min > 0:
            raise ValueError(f"generation.corrector_sigma_min must be > 0 (or null: corrector at every level), "
                             f"got {self.corrector_sigma_min}")
        for name, value in (("sigma_max", self.sigma_max), ("sigma_min", self.sigma_min)):
            if value is not None and not value > 0:
                raise ValueError(f"generation.{name} must be > 0 (or null: the model's noise range), got {value}")
        if self.sigma_max is not None and self.sigma_min is not None and not self.sigma_min < self.sigma_max:
            raise ValueError(f"generation.sigma_min must be < generation.sigma_max, got {self.sigma_min} "
                             f"and {self.sigma_max}")
        self.sizes = [int(L) for L in sizes]
        self.n_samples = n_samples if single else [int(n) for n in n_samples]
        self.counts = {L: int(n) for L, n in zip(self.sizes, counts)}
        self.steps, self.seed, self.floor_repeats = int(self.steps), int(self.seed), int(self.floor_repeats)
        if self.corrector_sigma_min is not None:
            self.corrector_sigma_min = float(self.corrector_sigma_min)

    def schedule_range(self, noise=None) -> tuple[float, float]:
        """(σ_max, σ_min) of the reverse schedule: the options, else ``noise.sigma_max`` / ``noise.sigma_min``
        (a student's training noise process); ValueError naming the options when neither gives them."""
        sigma_max = self.sigma_max if self.sigma_max is not None else getattr(noise, "sigma_max", None)
        sigma_min = self.sigma_min if self.sigma_min is not None else getattr(noise, "sigma_min", None)
        if sigma_max is None or sigma_min is None:
            raise ValueError("generation.sigma_max/sigma_min: the model has no noise range (pl_module.noise); set both")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"generation.sigma_min/sigma_max: need 0 < sigma_min < sigma_max, got "
                             f"sigma_min={sigma_min}, sigma_max={sigma_max}")
        return float(sigma_max), float(sigma_min)

    def as_dict(self) -> dict[str, Any]:
        """The options as written to ``generation.json`` (without the derived per-size counts)."""
        return {"sizes": self.sizes, "n_samples": self.n_samples, "steps": self.steps, "sampler": self.sampler,
                "corrector_sigma_min": self.corrector_sigma_min, "sigma_max": self.sigma_max,
                "sigma_min": self.sigma_min, "seed": self.seed, "floor_repeats": self.floor_repeats}


def _metric_keys(observable_keys: Sequence[str]) -> list[str]:
    return ["mae", "teacher_floor"] + [f"{k}_error" for k in observable_keys]


def evaluate_generation(score: ScoreFn, data, config: GenerationConfig, *, sigma_max: float, sigma_min: float,
                        dtype: torch.dtype = torch.float32, device=None, progress: bool = False) -> dict[str, Any]:
    """Table 5 at every size of ``config``: local observables of generated samples vs teacher samples.

    At every L: ``n`` teacher samples ``data.eval_batch(L, n, seed=seed)`` are the reference; ``n``
    samples of the reverse process of ``score`` (``steps`` steps of ``sampler`` from σ_max to σ_min,
    then the Tweedie step to 0; conditioned on the reference's ``cond``/``mask`` if any) are scored
    against them (:func:`generation_errors`), and ``floor_repeats`` further teacher sets (seeds
    ``seed + 1, ...``) give the noise floor (:func:`teacher_floor`).

    Args:
        score: ``score(x, sigma, cond)`` on ``device`` / ``dtype`` (e.g. ``ScoreModule.score``).
        data: anything with ``teacher`` and ``eval_batch(L, n, *, seed)`` (:mod:`sizetransfer.data.protocol`).
        sigma_max, sigma_min: ends of the reverse schedule (:meth:`GenerationConfig.schedule_range`).
    Returns:
        ``{"target": "fdlf", "target_name", "metric_keys", "columns", "rows", "observables", "config"}``:
        one row per L (``L, n_samples, steps, sampler, mae, teacher_floor, <observable>_error``) and the
        observables of both sample sets per L.
    """
    teacher = data.teacher
    sigmas = generation_sigmas(sigma_max, sigma_min, config.steps, dtype=dtype, device=device)
    cut = config.corrector_sigma_min if config.sampler == "pc" else None
    rows, observed, obs_keys = [], [], []
    for L in tqdm(config.sizes, desc="generation", disable=not progress):
        n = config.counts[L]
        ref = data.eval_batch(L, n, seed=config.seed)
        x_ref, cond, mask = ref["x0"], ref.get("cond"), ref.get("mask")
        gen = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + 1009 * L)
        with torch.no_grad():
            x_gen = generate(score, x_ref.shape, sigmas, sampler=config.sampler, generator=gen, cond=cond, mask=mask,
                             progress=progress, dtype=dtype, device=device, corrector_sigma_min=cut)
        errors = generation_errors(x_gen, x_ref, periodic=teacher.periodic, mask=mask)
        others = [data.eval_batch(L, n, seed=config.seed + k) for k in range(1, config.floor_repeats + 1)]
        floor, floor_sem = teacher_floor(x_ref, [o["x0"] for o in others], periodic=teacher.periodic,
                                         mask=mask, independent_masks=[o.get("mask") for o in others])
        obs_keys = [k for k in errors if k != "mae"]
        row: dict[str, Any] = {"L": L, "n_samples": n, "steps": config.steps, "sampler": config.sampler,
                               "mae": errors["mae"], "teacher_floor": floor}
        row.update({f"{k}_error": errors[k] for k in obs_keys})
        rows.append(row)
        obs_t = observables(x_ref, periodic=teacher.periodic, mask=mask)
        obs_g = observables(x_gen, periodic=teacher.periodic, mask=mask)
        observed.append({"L": L, "teacher_floor_sem": floor_sem,
                         "teacher": {k: v.tolist() for k, v in obs_t.items()},
                         "generated": {k: v.tolist() for k, v in obs_g.items()},
                         "generated_finite": bool(torch.isfinite(x_gen).all())})
    return {"target": "fdlf", "target_name": f"teacher {teacher.key}", "metric_keys": _metric_keys(obs_keys),
            "columns": list(rows[0]), "rows": rows, "observables": observed,
            "config": {**config.as_dict(), "sigma_max": sigma_max, "sigma_min": sigma_min}}

