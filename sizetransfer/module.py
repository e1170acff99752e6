"""``ScoreModule``: denoising-score-matching training of a local student (thin LightningModule).

The maths lives in plain torch: :class:`~sizetransfer.models.LocalScoreCNN` (the student),
:class:`~sizetransfer.diffusion.VENoise` and :func:`~sizetransfer.diffusion.dsm_loss` (Eq. 3).
This module adds the optimiser (Adam, linear warm-up, cosine decay to ``trainer.max_steps``), an
EMA of the weights (used by validation, :meth:`ScoreModule.score` and therefore every evaluation,
and saved in checkpoints) and validation losses per σ band.

Randomness of the training noise: σ and ε of step k on global rank r come from a generator seeded
with ``batch_seed(noise_seed, r, k)``, so they are a pure function of (seed, rank, step): DDP ranks
draw different noise, and a run resumed from a checkpoint draws exactly the noise the uninterrupted
run would have drawn (the data stream resumes through the DataModule's own state).
"""
from __future__ import annotations

import math
from typing import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.optim.swa_utils import AveragedModel

from sizetransfer.seeding import batch_seed
from sizetransfer.diffusion import VENoise, dsm_loss, exact_score_loss
from sizetransfer.models import LocalScoreCNN

#: Training objectives: denoising score matching (Eq. 3), or the oracle control that regresses the student
#: on the teacher's exact clean score (docs/training.md, "Oracle control").
OBJECTIVES = ("dsm", "exact_score")

#: Seed-stream tag of the validation noise (fixed: validation losses compare across runs and seeds).
_VAL_NOISE_SEED = 7


def ema_multi_avg_fn(decay: float, warmup: bool = True):
    """EMA update for ``AveragedModel(multi_avg_fn=...)``: ema ← d·ema + (1 − d)·θ with
    d = min(decay, (1 + n) / (10 + n)) after n previous updates when ``warmup`` (the warm-up of
    diffusers' ``EMAModel``), else d = decay. Without warm-up the average keeps a weight
    decay^steps of the initial weights (5% after 1500 steps at 0.998), which measurably worsens a
    short run's student; with it the early weights are forgotten at the rate they change."""

    @torch.no_grad()
    def update(ema_params, current_params, num_averaged):
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged))) if warmup else decay
        torch._foreach_lerp_(list(ema_params), list(current_params), 1.0 - d)

    return update


def warmup_cosine(warmup_steps: int, max_steps: int):
    """Learning-rate factor of step k: linear warm-up (k + 1) / warmup_steps, then cosine decay from 1
    to 0 at ``max_steps`` (a ``LambdaLR`` lambda)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(step - warmup_steps, max_steps - warmup_steps) / (max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * done))

    return factor


class ScoreModule(pl.LightningModule):
    """DSM training of ``LocalScoreCNN`` on dict batches ``{"x0": (b, C, L, ...), "cond"?, "mask"?}``.

    Args:
        blocks, width, dim, periodic, in_channels, cond_channels, sigma_data: the student
            (:class:`~sizetransfer.models.LocalScoreCNN`; receptive radius ``2 * blocks + 2``).
        sigma_min, sigma_max: training noise range.
        sigma_distribution, sigma_center, sigma_log_std: σ ~ log-uniform[sigma_min, sigma_max]
            (``"log_uniform"``) or log σ ~ N(log sigma_center, sigma_log_std²) truncated to that range
            (``"log_normal"``; :class:`~sizetransfer.diffusion.VENoise`).
        sigma_stratified: draw a batch's σ one per equal-probability stratum (same law, lower variance
            of the loss over σ; ``VENoise(stratified=True)``).
        lr: peak Adam learning rate; weight_decay: Adam's L2 penalty.
        warmup_steps: linear warm-up from 0 to ``lr``; then cosine decay to 0 at ``trainer.max_steps``
            (a run shorter than the warm-up warms up over ``max_steps // 10`` steps, with a notice).
        ema_decay: decay of the exponential moving average of the weights (0: no averaging).
        ema_warmup: ramp the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) over the first
            updates n (:func:`ema_multi_avg_fn`), so the average does not keep the initial weights.
        val_sigma_bands: edges of the σ bands of the validation loss ``val/loss/sigma=[a,b)``
            (increasing, inside [sigma_min, sigma_max]); ``None``: three log-equal bands.
        noise_seed: seed of the training noise; ``None``: ``torch.initial_seed()`` at the start of
            fit (i.e. ``seed_everything``), saved in checkpoints.
        radius: receptive radius apart from ``blocks`` (``None``: 2 * blocks + 2); the first ``radius``
            convs are 3^d, the others 1^d (:class:`~sizetransfer.models.LocalCNN`).
        antithetic: DSM with antithetic noise pairs (ε, −ε) per sample (:func:`~sizetransfer.diffusion.dsm_loss`).
        lambda_power: p of the DSM weight λ(σ) = σ^p of the training loss (2: Eq. 3's σ²; the validation
            loss stays at p = 2, comparable across runs).
        mlp_ratio: per-site MLP of width ``mlp_ratio * width`` after each block (0: none; radius unchanged).
        mlp_depth: number of such MLPs (residual, each two 1^d units) after each block, when ``mlp_ratio`` > 0.
        global_features: k intensive lattice-mean features broadcast back as a FiLM after the input conv
            and every block (0: the local student; k > 0: the remedy student of docs/method.md, not local,
            ``receptive_radius`` is then its convolutions' radius; periodic lattices only).
        dilations: one dilation per conv (2 * blocks + 2 of them; 0 makes that conv 1^d, the others are 3^d;
            ``radius`` unset): receptive radius their sum, e.g. [1, 2, 4, 4] gives R = 11 at B = 1 (``None``:
            undilated).
        stem_radius: radius s of the input conv, a (2s + 1)^d wide linear stem (1: the usual 3^d conv);
            the receptive radius is then s + 2 * blocks + 1, or ``radius`` in [s, s + 2 * blocks + 1].
        skip_radius: radius of a σ-modulated wide linear skip from the input to the output (0: none;
            :class:`~sizetransfer.models.linear_skip.LinearSkip`); receptive radius max(conv radius, skip_radius).
        film, norm, emb_width: student layout: ``film="conv"`` (FiLM before every conv, zero-initialised
            output) or ``"block"`` (the first recipe's student); ``norm="site"`` (per-site channel norm)
            or ``"none"``; width of the noise embedding (``None``: ``width``).
        objective: ``"dsm"`` (Eq. 3) or ``"exact_score"``, the oracle control: the student regressed on
            the teacher's exact clean score at clean samples (:func:`~sizetransfer.diffusion.exact_score_loss`;
            needs a DataModule with ``stream_exact_score``, i.e. an FDLF or Gaussian teacher).
        compile: the training step runs the student through ``torch.compile`` (inductor; the same function,
            fused element-wise work: on one CPU thread a B = 1 step is 1.2-1.6x faster, after a cold
            compile of ~40 CPU-s; docs/training.md). Validation, the EMA, evaluation and checkpoints use the
            plain modules, so checkpoints are the same with or without it.
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, cond_channels: int = 0, sigma_min: float = 0.01,
                 sigma_max: float = 1.0, sigma_data: float = 1.0, lr: float = 1e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 0, ema_decay: float = 0.998, ema_warmup: bool = True,
                 val_sigma_bands: Sequence[float] | None = None, noise_seed: int | None = None,
                 radius: int | None = None, film: str = "conv", norm: str = "site", emb_width: int | None = None,
                 objective: str = "dsm", sigma_distribution: str = "log_uniform",
                 sigma_center: float | None = None, sigma_log_std: float = 1.0, antithetic: bool = False,
                 mlp_ratio: int = 0, global_features: int = 0, dilations: list[int] | None = None,
                 stem_radius: int = 1, skip_radius: int = 0, mlp_depth: int = 1, sigma_stratified: bool = False,
                 lambda_power: float = 2.0, compile: bool = False):
        super().__init__()
        self.save_hyperparameters()
        if objective not in OBJECTIVES:
            raise ValueError(f"model.objective must be one of {OBJECTIVES}, got {objective!r}")
        try:
            self.noise = VENoise(sigma_min, sigma_max, sigma_distribution, sigma_center, sigma_log_std,
                                 stratified=sigma_stratified)
        except ValueError as err:
            raise ValueError(f"model.{err}" if str(err).startswith("sigma_") else f"model: {err}") from None
        for name, value, ok in (("lr", lr, lr > 0), ("weight_decay", weight_decay, weight_decay >= 0),
                                ("warmup_steps", warmup_steps, int(warmup_steps) == warmup_steps >= 0),
                                ("ema_decay", ema_decay, 0 <= ema_decay < 1),
                                ("lambda_power", lambda_power, math.isfinite(lambda_power))):
            if not ok:
                raise ValueError(f"model.{name} is out of range: {value!r} (lr > 0, weight_decay >= 0, "
                                 "integer warmup_steps >= 0, 0 <= ema_decay < 1, finite lambda_power)")
        try:
            self.student = LocalScoreCNN(blocks, width, dim, periodic, in_channels, in_channels, cond_channels,
                                         sigma_data, radius=radius, film=film, norm=norm, emb_width=emb_width,
                                         mlp_ratio=mlp_ratio, global_features=global_features,
                                         dilations=dilations, stem_radius=stem_radius,
                                         skip_radius=skip_radius, mlp_depth=mlp_depth)
        except ValueError as err:
            raise ValueError(f"model.{err}") from None
        # EMA inside the module (not Lightning's WeightAveraging callback, which swaps weights only around
        # validation and at the end): score() must be the EMA student at any hook, e.g. mid-run evaluation.
        self.ema = AveragedModel(self.student, multi_avg_fn=ema_multi_avg_fn(ema_decay, ema_warmup), use_buffers=True)
        self.ema.requires_grad_(False)
        self.val_sigma_bands = self._bands(val_sigma_bands)
        self.noise_seed = noise_seed
        self._generator: torch.Generator | None = None
        # the student as the training step calls it: compiled at fit start when ``compile`` (kept out of the
        # module tree, so the state dict has no second copy of the weights)
        self.__dict__["_train_student"] = self.student

    def _bands(self, edges: Sequence[float] | None) -> list[float]:
        lo, hi = self.noise.sigma_min, self.noise.sigma_max
        if edges is None:
            return [lo * (hi / lo) ** (k / 3) for k in range(4)]
        edges = [float(e) for e in edges]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < lo or edges[-1] > hi:
            raise ValueError(f"model.val_sigma_bands must be >= 2 increasing edges inside [sigma_min, sigma_max] = "
                             f"[{lo}, {hi}], got {edges}")
        return edges

    # ------------------------------------------------------------------ public API
    @property
    def receptive_radius(self) -> int:
        """Chebyshev receptive radius R (2 * blocks + 2, or ``radius``) of the student's convolutions."""
        return self.student.receptive_radius

    @property
    def is_local(self) -> bool:
        """False for the remedy student (``global_features`` > 0): it also sees lattice means."""
        return self.student.is_local

    @property
    def geometry(self) -> dict:
        """The student's ``dim``, ``periodic``, ``in_channels``, ``cond_channels`` (checked by DataModules)."""
        return self.student.geometry

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """EMA student's score s_θ(x, σ): x (n, C, L, ...) float32, sigma a float or (n,) → (n, C, L, ...).

        Autograd flows through x (no ``no_grad`` here); the EMA weights themselves need no grad."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.ema.module(x, sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma, cond)

    def effective_warmup_steps(self, max_steps: int) -> int:
        """``warmup_steps``, or ``max_steps // 10`` when that is not below ``max_steps`` (a short run, e.g.
        ``--trainer.max_steps 10`` or ``--trainer.fast_dev_run true``), so the cosine decay still has steps."""
        warmup = int(self.hparams.warmup_steps)
        return warmup if warmup < max_steps else max_steps // 10

    def check_fit(self, datamodule=None, max_steps: int | None = None) -> None:
        """ValueError naming the option unless training can run: on a torus the receptive radius must stay
        below half the training size (no student sees its own periodic image; open boxes have none), and
        ``trainer.max_steps`` must be positive (the data stream is infinite; a ``warmup_steps`` not below
        it is shortened, :meth:`effective_warmup_steps`)."""
        if hasattr(datamodule, "check_model"):  # the data's own requirements first (e.g. dim, channels)
            datamodule.check_model(self)
        if self.hparams.objective == "exact_score" and datamodule is not None:
            stream_scores = getattr(datamodule, "stream_exact_score", None)
            if stream_scores is None:
                raise ValueError(f"model.objective='exact_score' needs a target with an exact clean score "
                                 f"(FDLF or Gaussian teachers); {type(datamodule).__name__} has none: use "
                                 f"model.objective: dsm")
            stream_scores()
        L = getattr(datamodule, "train_size", None)
        if L is not None and self.hparams.periodic and 2 * self.receptive_radius >= L:
            option = f"data.{getattr(datamodule, 'size_option', 'train_size')}"
            source = self.student.net.describe_radius("model.")
            raise ValueError(f"{source}, which must be < {option}/2 = {L / 2:g}: use fewer blocks or a larger {option}")
        if max_steps is None or max_steps <= 0:
            raise ValueError(f"trainer.max_steps must be a positive number of steps (the data stream is "
                             f"infinite and the cosine schedule ends there), got {max_steps}")
        # warmup_steps >= max_steps (a short run, fast_dev_run): shortened, see effective_warmup_steps

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_fit(self.trainer.datamodule, self.trainer.max_steps)

    def on_fit_start(self) -> None:
        if self.noise_seed is None:
            self.noise_seed = torch.initial_seed() % 2**63
        self._generator = torch.Generator(device=self.device)
        if self.hparams.compile:
            self.__dict__["_train_student"] = torch.compile(self.student)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._generator.manual_seed(batch_seed(self.noise_seed, self.global_rank, self.global_step))
        if self.hparams.objective == "exact_score":
            loss, _, _ = exact_score_loss(self._train_student, batch["x0"], batch["score"], self.noise, cond=batch.get("cond"),
                                          mask=batch.get("mask"), generator=self._generator)
        else:
            loss, _, _ = dsm_loss(self._train_student, batch["x0"], self.noise, cond=batch.get("cond"),
                                  mask=batch.get("mask"), generator=self._generator,
                                  antithetic=self.hparams.antithetic, lambda_power=self.hparams.lambda_power)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x0"].shape[0])
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """Optimiser step, then the EMA update (here rather than in ``on_train_batch_end``, which runs
        after the callbacks' one: a checkpoint saved there must already hold this step's EMA)."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.student)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """DSM loss of the EMA student at stratified σ (one per log-σ stratum), fixed ε, per σ band."""
        x0 = batch["x0"]
        n = x0.shape[0]
        log_lo, log_hi = math.log(self.noise.sigma_min), math.log(self.noise.sigma_max)
        sigma = torch.exp(log_lo + (torch.arange(n, dtype=torch.float64) + 0.5) / n * (log_hi - log_lo))
        gen = torch.Generator(device=self.device).manual_seed(batch_seed(_VAL_NOISE_SEED, batch_idx))
        loss, per_sample, sigma = dsm_loss(self.ema.module, x0, self.noise, cond=batch.get("cond"),
                                           mask=batch.get("mask"), generator=gen, sigma=sigma.to(x0))
        self.log("val/loss", loss, batch_size=n, sync_dist=True)
        band = torch.bucketize(sigma.detach().to(self._edges), self._edges, right=True) - 1  # edges[k] <= σ < edges[k+1]
        inside = (band >= 0) & (band < len(self._band_sums))
        self._band_sums.index_add_(0, band[inside], per_sample.detach()[inside].to(self._band_sums))
        self._band_counts.index_add_(0, band[inside], torch.ones_like(self._band_sums[band[inside]]))

    def on_validation_epoch_start(self) -> None:
        self._edges = torch.tensor(self.val_sigma_bands, dtype=torch.float64, device=self.device)
        self._band_sums = torch.zeros(len(self.val_sigma_bands) - 1, dtype=torch.float64, device=self.device)
        self._band_counts = torch.zeros_like(self._band_sums)

    def on_validation_epoch_end(self) -> None:
        """Log the mean loss per σ band, summed over batches and ranks (same keys on every rank)."""
        sums = self.trainer.strategy.reduce(self._band_sums, reduce_op="sum")
        counts = self.trainer.strategy.reduce(self._band_counts, reduce_op="sum")
        edges = self.val_sigma_bands
        for k, (a, b) in enumerate(zip(edges, edges[1:])):
            if counts[k] > 0:
                self.log(f"val/loss/sigma=[{a:.3g},{b:.3g})", (sums[k] / counts[k]).float())

    def configure_optimizers(self):
        max_steps = self.trainer.max_steps  # checked in setup
        warmup = self.effective_warmup_steps(max_steps)
        if warmup != self.hparams.warmup_steps:
            rank_zero_info(f"Short run: model.warmup_steps={self.hparams.warmup_steps} is not below "
                           f"trainer.max_steps={max_steps}; warming up over {warmup} steps (a tenth of the run).")
        optimizer = torch.optim.Adam(self.student.parameters(), lr=self.hparams.lr,
                                     weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noise_seed"] = self.noise_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.noise_seed = checkpoint.get("noise_seed", self.noise_seed)
