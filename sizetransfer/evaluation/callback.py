"""Lightning callbacks that schedule the evaluations and hand their rows to the loggers.

The work is done by plain functions (:func:`~sizetransfer.evaluation.fdlf.evaluate_fdlf`,
:func:`~sizetransfer.evaluation.ising_eval.evaluate_ising`,
:func:`~sizetransfer.evaluation.generation.evaluate_generation`); these callbacks check their options
and the datamodule once in ``setup`` (:func:`sizetransfer.data.protocol.evaluation_target`), run the
functions for the EMA student (``pl_module.score``) at the scheduled steps, write the files of
:mod:`~sizetransfer.evaluation.report` to ``<run dir>/eval/step=<k>/`` and log
``eval/<metric>/L=<size>`` / ``gen/<metric>/L=<size>`` at ``step = trainer.global_step`` (outputs:
docs/outputs.md). Only global rank 0 computes and writes; the evaluations contain no collective
call, so other DDP ranks simply go on (they wait in Lightning's own next barrier — keep an
evaluation shorter than the process-group timeout, 30 min by default).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from sizetransfer.data.protocol import evaluation_target
from sizetransfer.evaluation.fdlf import FDLFEvalConfig, evaluate_fdlf
from sizetransfer.evaluation.generation import GenerationConfig, evaluate_generation
from sizetransfer.evaluation.ising_eval import IsingEvalConfig, evaluate_ising
from sizetransfer.evaluation.plots import plot_fdlf, plot_generation, plot_ising
from sizetransfer.evaluation.report import columns, format_summary, logged_metrics, write_results
from sizetransfer.evaluation.score import model_score
from sizetransfer.tracking import log_evaluation


def run_directory(trainer: pl.Trainer, output_dir: str | None) -> Path:
    """Run directory of an evaluation, resolved without any collective call (``trainer.log_dir``
    broadcasts): ``output_dir``, else the first logger's ``save_dir/name/version`` (ModelCheckpoint's
    layout), else ``trainer.default_root_dir``."""
    if output_dir is not None:
        return Path(output_dir)
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


def _sigma_min(pl_module) -> float | None:
    """σ_min of the module's noise process (``pl_module.noise.sigma_min`` or ``hparams.sigma_min``)."""
    noise = getattr(pl_module, "noise", None)
    if noise is not None and hasattr(noise, "sigma_min"):
        return float(noise.sigma_min)
    hparams = getattr(pl_module, "hparams", {})
    return float(hparams["sigma_min"]) if "sigma_min" in hparams else None


class _EvaluationCallback(pl.Callback):
    """Shared tail of the callbacks: run on rank 0 in eval mode, then write, log and remember."""

    prefix = figure_key = stem = figure = ""
    output_dir: str | None
    log_table: bool
    log_image: bool

    def __init__(self) -> None:
        super().__init__()
        self.last_results: dict[str, Any] | None = None
        self.last_output_dir: Path | None = None

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        raise NotImplementedError

    def _plot(self, results: dict[str, Any], path) -> None:
        raise NotImplementedError

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Compute, write and log one evaluation (call on rank 0 only); returns the results dict."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            results = self._compute(trainer, pl_module)
        finally:
            pl_module.train(was_training)
        out = run_directory(trainer, self.output_dir) / "eval" / f"step={results['step']}"
        write_results(results, out, self.stem, self.figure, self._plot)
        log_evaluation(trainer.loggers, logged_metrics(results, self.prefix, skip_nan=self.prefix == "eval"),
                       step=results["step"],
                       table=(f"{self.prefix}/table", columns(results), results["rows"]) if self.log_table else None,
                       image=(self.figure_key, out / f"{self.figure}.png") if self.log_image else None)
        self.last_results, self.last_output_dir = results, out
        return results


class SizeExtrapolationCallback(_EvaluationCallback):
    """Evaluate size extrapolation at the end of training and, optionally, every ``every_n_steps``.

    FDLF targets (the datamodule has ``teacher``): :func:`~sizetransfer.evaluation.fdlf.evaluate_fdlf`;
    Ising targets (``beta``): :func:`~sizetransfer.evaluation.ising_eval.evaluate_ising`. Files:
    ``metrics.csv``, ``metrics.json``, ``response_profiles.png``.

    Args:
        eval_sizes: lattice sizes L; ``None`` takes ``trainer.datamodule.eval_sizes``.
        every_n_steps: also evaluate when ``global_step`` is a multiple of this (0/None: only at the end).
        n_samples: FDLF: evaluation samples per size (with ``sites``: at least this many).
        sites: FDLF: the clean-score RMSE on about this many sites per size, max(n_samples, ceil(sites / L^d))
            samples (None: n_samples at every size).
        seed: seed of the evaluation samples, probe sites and noise (FDLF and Ising).
        sigma_eval: FDLF: σ of the headline clean-score RMSE and of the responses.
        near: FDLF: Chebyshev shell (r_in, r_out) of the near response region.
        far: FDLF: Chebyshev shell (r_in, r_out) of the far response region.
        n_probes: FDLF: probe sites of the finite-difference responses.
        fd_epsilon: FDLF: finite-difference perturbation ε.
        response_samples: FDLF: samples on which responses and profiles are evaluated.
        q: FDLF: tail level of the response range R_q.
        bulk_margin: FDLF open boxes: boundary layers left out of the RMSE (None: the receptive radius).
        probe_sigmas: Ising: probe noise levels σ.
        ising_r_max: Ising: largest Chebyshev distance of the response profile (<= L // 2).
        response_distances: Ising: distances r of the headline metrics (None: 1 and R).
        exact_observations: Ising: observations of the exact response (cached on disk).
        learned_observations: Ising: observations of the learned response.
        sites_per_observation: Ising: random probe sites per observation.
        score_observations: Ising: observations of the score RMSE against MCMC.
        response_kwargs: Ising: extra arguments of ``ising.response_profile``.
        smoothed_score_kwargs: Ising: extra arguments of ``ising.smoothed_score``.
        cache_dir: Ising: cache root of exact responses (None: ``$SIZETRANSFER_CACHE`` or ``~/.cache/sizetransfer``).
            The full meaning of every option: :class:`~sizetransfer.evaluation.fdlf.FDLFEvalConfig`,
            :class:`~sizetransfer.evaluation.ising_eval.IsingEvalConfig` (``ising_r_max`` is its ``r_max``).
        output_dir: run directory for ``eval/step=<k>/`` (``None``: :func:`run_directory`).
        log_table, log_image: send the table / figure to a ``WandbLogger`` (other loggers: skipped).
        progress: tqdm bars over sizes.
    """

    prefix, figure_key, stem, figure = "eval", "eval/response_profiles", "metrics", "response_profiles"

    def __init__(
        self,
        eval_sizes: Sequence[int] | None = None,
        every_n_steps: int | None = 0,
        n_samples: int = 16,
        sites: int | None = None,
        seed: int = 12345,
        sigma_eval: float = 0.05,
        near: Sequence[int] = (1, 2),
        far: Sequence[int] = (5, 8),
        n_probes: int = 4,
        fd_epsilon: float = 1e-2,
        response_samples: int = 4,
        q: float = 0.05,
        bulk_margin: int | None = None,
        probe_sigmas: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
        ising_r_max: int = 8,
        response_distances: Sequence[int] | None = None,
        exact_observations: int = 16,
        learned_observations: int = 16,
        sites_per_observation: int = 1,
        score_observations: int = 4,
        response_kwargs: dict[str, Any] | None = None,
        smoothed_score_kwargs: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        output_dir: str | None = None,
        log_table: bool = True,
        log_image: bool = True,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if eval_sizes is not None and (len(eval_sizes) == 0 or any(int(L) < 2 for L in eval_sizes)):
            raise ValueError(f"eval_sizes must be a non-empty list of sizes L >= 2 (or None), got {eval_sizes}")
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0/None: only at the end of training), got {every_n_steps}")
        self.fdlf = FDLFEvalConfig(n_samples=n_samples, sites=sites, seed=seed, sigma_eval=sigma_eval, near=near, far=far,
                                   n_probes=n_probes, fd_epsilon=fd_epsilon, response_samples=response_samples,
                                   q=q, bulk_margin=bulk_margin)
        self.ising = IsingEvalConfig(seed=seed, probe_sigmas=probe_sigmas, r_max=ising_r_max,
                                     response_distances=response_distances, exact_observations=exact_observations,
                                     learned_observations=learned_observations,
                                     sites_per_observation=sites_per_observation,
                                     score_observations=score_observations, response_kwargs=response_kwargs or {},
                                     smoothed_score_kwargs=smoothed_score_kwargs or {}, cache_dir=cache_dir)
        self.eval_sizes = None if eval_sizes is None else [int(L) for L in eval_sizes]
        self.every_n_steps, self.seed = int(every_n_steps or 0), int(seed)
        self.output_dir, self.log_table, self.log_image, self.progress = output_dir, log_table, log_image, progress
        self._last_step: int | None = None

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the datamodule and every eval size before training starts (ValueError naming the option)."""
        dm = trainer.datamodule
        target = evaluation_target(dm)
        if hasattr(dm, "check_model"):  # e.g. HardValidDataModule: model.dim/periodic/channels fit the data
            dm.check_model(pl_module)
        radius = getattr(pl_module, "receptive_radius", None)
        if target == "fdlf" and radius is not None and self.fdlf.far[0] > radius:
            exact = getattr(pl_module, "is_local", True)  # global features: an O(1/N) response at every distance
            rank_zero_warn(f"far region {self.fdlf.far} lies beyond the student's receptive radius R = {radius}: "
                           f"its far response is {'exactly 0' if exact else 'only its global features O(1/N) one'}, "
                           f"so far_response_error = 1 {'by construction' if exact else 'or close to it'}")
        for L in self._sizes(dm):
            if target == "fdlf":
                self.fdlf.check_size(dm.teacher, L)
            else:
                self.ising.check_size(L)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._run(trainer, pl_module)
        if trainer.is_global_zero and self.last_results is not None:
            print(format_summary(self.last_results))

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        if trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    def _sizes(self, dm) -> list[int]:
        return list(self.eval_sizes if self.eval_sizes is not None else dm.eval_sizes)

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        dm = trainer.datamodule
        kw = dict(receptive_radius=int(pl_module.receptive_radius), sizes=self._sizes(dm), progress=self.progress)
        if evaluation_target(dm) == "fdlf":
            results = evaluate_fdlf(model_score(pl_module), dm, self.fdlf, sigma_min=_sigma_min(pl_module), **kw)
        else:
            results = evaluate_ising(model_score(pl_module), dm, self.ising, **kw)
        ising = {("ising_r_max" if k == "r_max" else k): v for k, v in vars(self.ising).items()
                 if k not in ("seed", "cache_dir")}
        results["config"] = {"eval_sizes": self.eval_sizes, **vars(self.fdlf), **ising}
        results["step"] = int(trainer.global_step)
        results["receptive_radius"] = int(pl_module.receptive_radius)
        return results

    def _plot(self, results: dict[str, Any], path) -> None:
        (plot_fdlf if results["target"] == "fdlf" else plot_ising)(results, path)


class GenerationCallback(_EvaluationCallback):
    """Table 5 at the end of training: local observables of EMA-student samples vs teacher samples
    (:func:`~sizetransfer.evaluation.generation.evaluate_generation`). Files: ``generation.csv``,
    ``generation.json``, ``generation.png``; off unless ``sizes`` is set.

    Args:
        sizes: lattice sizes L (None or []: off).
        n_samples: samples per size, generated and reference alike (one count, or one per size).
        steps: reverse steps from σ_max to σ_min (then the Tweedie step to 0).
        sampler: reverse sampler, "pc", "em" or "pf".
        corrector_sigma_min: pc: Langevin corrector only at σ >= this (None: at every level).
        sigma_max: start of the reverse schedule (None: the model's training σ_max).
        sigma_min: end of the reverse schedule before σ = 0 (None: the model's training σ_min).
        seed: seed of the reference samples and of the reverse process.
        floor_repeats: independent teacher sets of the noise floor.
            The full meaning of every option: :class:`~sizetransfer.evaluation.generation.GenerationConfig`.
        output_dir: run directory for ``eval/step=<k>/`` (``None``: :func:`run_directory`).
        log_table, log_image: send the table / figure to a ``WandbLogger``.
        progress: tqdm bars over sizes and reverse steps.
    """

    prefix, figure_key, stem, figure = "gen", "gen/observables", "generation", "generation"

    # The defaults are GenerationConfig's (one place), spelled in the signature for LightningCLI.
    def __init__(self, sizes: Sequence[int] | None = None, n_samples: int | Sequence[int] = GenerationConfig.n_samples,
                 steps: int = GenerationConfig.steps, sampler: str = GenerationConfig.sampler,
                 corrector_sigma_min: float | None = GenerationConfig.corrector_sigma_min,
                 sigma_max: float | None = GenerationConfig.sigma_max, sigma_min: float | None = GenerationConfig.sigma_min,
                 seed: int = GenerationConfig.seed, floor_repeats: int = GenerationConfig.floor_repeats,
                 output_dir: str | None = None,
                 log_table: bool = True, log_image: bool = True, progress: bool = True) -> None:
        super().__init__()
        self.config = GenerationConfig(sizes=sizes or (), n_samples=n_samples, steps=steps, sampler=sampler,
                                       corrector_sigma_min=corrector_sigma_min, sigma_max=sigma_max,
                                       sigma_min=sigma_min, seed=seed, floor_repeats=floor_repeats)
        self.output_dir, self.log_table, self.log_image, self.progress = output_dir, log_table, log_image, progress

    @property
    def enabled(self) -> bool:
        return bool(self.config.sizes)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check datamodule, sizes and schedule before training starts (ValueError naming the option)."""
        if not self.enabled:
            return
        dm = trainer.datamodule
        try:
            fdlf = evaluation_target(dm) == "fdlf"
        except ValueError:
            fdlf = False
        if not fdlf:
            raise ValueError("generation.sizes is set, but generation-level observables need an FDLF datamodule "
                             f"(one with a 'teacher' and 'eval_batch'), got {type(dm).__name__}; "
                             "set generation.sizes to null for this data")
        for L in self.config.sizes:
            try:
                dm.teacher.check_size(L)
            except ValueError as err:
                raise ValueError(f"generation.sizes: size {L} is invalid for teacher {dm.teacher.key!r}: {err}") from None
        self.config.schedule_range(getattr(pl_module, "noise", None))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        print(format_summary(self.evaluate(trainer, pl_module)))

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        sigma_max, sigma_min = self.config.schedule_range(getattr(pl_module, "noise", None))
        results = evaluate_generation(pl_module.score, trainer.datamodule, self.config, sigma_max=sigma_max,
                                      sigma_min=sigma_min, dtype=pl_module.dtype, device=pl_module.device,
                                      progress=self.progress)
        results["step"] = int(trainer.global_step)
        results["receptive_radius"] = int(getattr(pl_module, "receptive_radius", -1))
        return results

    def _plot(self, results: dict[str, Any], path) -> None:
        plot_generation(results, path)
