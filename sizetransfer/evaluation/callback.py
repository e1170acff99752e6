"""Size-extrapolation evaluation as a Lightning callback (issue 5 item 4; DESIGN.md §7).

At every size in ``eval_sizes`` the student ``pl_module.score(x, σ, cond=None)`` (EMA weights) is
compared with the exact target of ``trainer.datamodule``:

* FDLF (the datamodule has ``teacher``): clean-score relative RMSE (Eq. 16) at σ_eval and σ_min,
  near/far finite-difference response errors (Eq. 17), and the student's normalised response
  profile beside the teacher's with both response ranges R_q. 2D periodic teachers (exact score
  ``teacher.score(x)``) and the 3D open-box hard-valid teachers (exact score bound to each batch's
  discrete state, ``teacher.score(x, ports, types)``; the student gets ``batch["cond"]``): see
  :func:`bind_teacher` and "Open boxes" below.
* Ising (the datamodule has ``beta``): per probe σ, the learned boundary response (signed shell
  sums of the autograd Jacobian, averaged over y = s + σz) against the exact Eq. 22 response of
  ``ising.response_profile`` (cached on disk), and the score RMSE against the MCMC smoothed score.

Scalars go to every logger as ``eval/<metric>/L=<size>`` at ``step = trainer.global_step``; a table
and the figure go to a ``WandbLogger``; ``metrics.csv``, ``metrics.json`` and ``response_profiles.png``
are written atomically to ``<run dir>/eval/step=<k>/``. Only global rank 0 computes and writes; the
evaluation contains no collective call, so other DDP ranks simply go on (they wait in Lightning's
own next barrier — keep an evaluation shorter than the process-group timeout, 30 min by default).

Open boxes (hard-valid 3D, ``teacher.periodic`` False; the batch carries ``mask`` = occupied sites):

* RMSE: occupied sites farther than ``bulk_margin`` from the outside of the box
  (:func:`~sizetransfer.evaluation.metrics.open_box_bulk`); ``bulk_margin=None`` is DESIGN §7's bulk,
  margin R (the sites whose receptive field lies inside the box), which is empty for R = 4 at L ≤ 8.
  When ``bulk_margin`` is set (≠ R) the DESIGN bulk is reported too, as ``rmse_bulk_sigma<σ>``
  (NaN where it holds no occupied site; NaN scalars are not sent to loggers).
* Responses: per-sample probe sites. Each sample gets ``n_probes`` distinct *occupied* sites drawn
  (seeded) from the sites whose whole far shell lies inside the box (min_k min(i_k, L−1−i_k) ≥
  far[1]); where there is none (L < 2·far[1] + 1) from the central 2×2×2 cube, and the far region is
  clipped to the box there. Perturbations act on occupied sites only; (sample, probe) pairs without
  an occupied site are left out of the error.
* Profiles: per sample the occupied site nearest to the box centre (ties broken by the seed), shells
  r = 0..r_max covering the whole box from every probe, Jacobian columns of occupied sites only;
  samples with no occupied site are left out of the average.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from tqdm.auto import tqdm

from sizetransfer.evaluation import ising_eval
from sizetransfer.evaluation.ising_eval import atomic_output
from sizetransfer.evaluation.metrics import (
    clean_score_rmse,
    finite_difference_response,
    open_box_bulk,
    response_relative_error,
    score_response_profile,
)
from sizetransfer.evaluation.plots import plot_fdlf, plot_ising
from sizetransfer.lattice import response_range


def _fmt(value: float) -> str:
    """σ in metric names: 0.05 → '0.05', 4.0 → '4'."""
    return f"{value:g}"


def _check_range(name: str, pair: Sequence[int]) -> tuple[int, int]:
    if len(pair) != 2 or not 1 <= int(pair[0]) <= int(pair[1]):
        raise ValueError(f"{name} must be a pair (r_in, r_out) with 1 <= r_in <= r_out, got {tuple(pair)}")
    return int(pair[0]), int(pair[1])


def _columns(results: dict[str, Any]) -> list[str]:
    """Table columns of one evaluation: L (and σ for the Ising target), then its metrics."""
    return ["L"] + (["sigma"] if results["target"] == "ising" else []) + results["metric_keys"]


class SizeExtrapolationCallback(pl.Callback):
    """Evaluate size extrapolation at the end of training and, optionally, every ``every_n_steps``.

    Args:
        eval_sizes: lattice sizes L; ``None`` takes ``trainer.datamodule.eval_sizes``.
        every_n_steps: also evaluate when ``global_step`` is a multiple of this (0/None: only at the end).
        n_samples: FDLF evaluation samples per L (``datamodule.eval_batch(L, n, seed=seed)``).
        seed: seed of evaluation samples, probe sites, noise and the exact Ising response.
        sigma_eval: σ of the headline clean-score RMSE and of the responses (FDLF); also reported at σ_min.
        near, far: Chebyshev shells ``(r_in, r_out)`` of the response regions A (Eq. 17); keep ``far``
            fixed across a radius sweep. Each eval size needs ``far[1] <= L // 2`` on a torus; on an
            open box ``far[0] <= L // 2`` (the far shell, clipped to the box, is not empty at the centre).
        n_probes: probe sites of the finite-difference responses (torus: the same in every sample;
            open box: per sample, occupied sites).
        fd_epsilon: finite-difference perturbation ε on region A.
        response_samples: the first samples on which the finite-difference responses and the response
            profiles (torus: centre site, r = 0..L//2; open box: see below; averaged) are evaluated
            (the costly part).
        q: tail level of the response range R_q.
        bulk_margin: open boxes: the RMSE counts occupied sites farther than this from the outside of
            the box (boundary layers dropped); ``None``: the receptive radius R (DESIGN §7's bulk).
            Torus: ignored.
        probe_sigmas: Ising probe noise levels σ.
        ising_r_max: largest Chebyshev distance of the Ising response profile (≤ L // 2).
        response_distances: distances r of the Ising headline metrics; ``None``: (1, receptive radius).
        exact_observations: observations y of the exact Ising response (the expensive part; cached).
        learned_observations: observations y of the learned Ising response (one autograd pass over
            all of them per probe site: the Ising evaluation's main cost at L = 64).
        sites_per_observation: random probe sites per observation of the learned Ising response.
        score_observations: observations y of the score RMSE against the MCMC smoothed score.
        response_kwargs, smoothed_score_kwargs: extra arguments of ``ising.response_profile`` /
            ``ising.smoothed_score`` (sampler settings).
        cache_dir: cache root of exact Ising responses (``None``: ``$SIZETRANSFER_CACHE`` or ``~/.cache/sizetransfer``).
        output_dir: run directory for ``eval/step=<k>/`` (``None``: the first logger's run directory,
            ``save_dir/name/version`` as ModelCheckpoint resolves it, or ``trainer.default_root_dir``).
        log_table, log_image: send the table / figure to a ``WandbLogger`` (other loggers: skipped).
        progress: tqdm bars over sizes.
    """

    def __init__(
        self,
        eval_sizes: Sequence[int] | None = None,
        every_n_steps: int | None = 0,
        n_samples: int = 16,
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
        for name, value, low in [("n_samples", n_samples, 1), ("seed", seed, 0), ("n_probes", n_probes, 1),
                                 ("response_samples", response_samples, 1), ("ising_r_max", ising_r_max, 1),
                                 ("exact_observations", exact_observations, 2),
                                 ("learned_observations", learned_observations, 2),
                                 ("sites_per_observation", sites_per_observation, 1),
                                 ("score_observations", score_observations, 1)]:
            if int(value) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if response_samples > n_samples:
            raise ValueError(f"response_samples must be in [1, n_samples={n_samples}], got {response_samples}")
        if not sigma_eval > 0:
            raise ValueError(f"sigma_eval must be > 0, got {sigma_eval}")
        if not fd_epsilon > 0:
            raise ValueError(f"fd_epsilon must be > 0, got {fd_epsilon}")
        if not 0 < q < 1:
            raise ValueError(f"q must be in (0, 1), got {q}")
        if bulk_margin is not None and (isinstance(bulk_margin, bool) or int(bulk_margin) != bulk_margin
                                        or bulk_margin < 0):
            raise ValueError(f"bulk_margin must be an integer >= 0 or None (the receptive radius), got {bulk_margin!r}")
        if len(probe_sigmas) == 0 or any(not s > 0 for s in probe_sigmas):
            raise ValueError(f"probe_sigmas must be a non-empty list of σ > 0, got {probe_sigmas}")
        self.near = _check_range("near", near)
        self.far = _check_range("far", far)
        if self.near[1] >= self.far[0]:
            raise ValueError(f"near (r_in, r_out) must end before far begins: near={self.near}, far={self.far}")
        if response_distances is not None and any(not 0 <= int(r) <= ising_r_max for r in response_distances):
            raise ValueError(f"response_distances must lie in [0, ising_r_max={ising_r_max}], got {response_distances}")
        self.eval_sizes = None if eval_sizes is None else [int(L) for L in eval_sizes]
        self.every_n_steps = int(every_n_steps or 0)
        self.n_samples, self.seed, self.sigma_eval = int(n_samples), int(seed), float(sigma_eval)
        self.n_probes, self.fd_epsilon = int(n_probes), float(fd_epsilon)
        self.response_samples, self.q = int(response_samples), float(q)
        self.bulk_margin = None if bulk_margin is None else int(bulk_margin)
        self.probe_sigmas = [float(s) for s in probe_sigmas]
        self.ising_r_max = int(ising_r_max)
        self.response_distances = None if response_distances is None else [int(r) for r in response_distances]
        self.exact_observations = int(exact_observations)
        self.learned_observations = int(learned_observations)
        self.sites_per_observation = int(sites_per_observation)
        self.score_observations = int(score_observations)
        self.response_kwargs = dict(response_kwargs or {})
        self.smoothed_score_kwargs = dict(smoothed_score_kwargs or {})
        self.cache_dir, self.output_dir = cache_dir, output_dir
        self.log_table, self.log_image, self.progress = log_table, log_image, progress
        self.last_results: dict[str, Any] | None = None
        self.last_output_dir: Path | None = None
        self._last_step: int | None = None

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the datamodule and every eval size before training starts (ValueError naming the option)."""
        dm = trainer.datamodule
        target = self._target(dm)
        if hasattr(dm, "check_model"):  # e.g. HardValidDataModule: model.dim/periodic/channels fit the data
            dm.check_model(pl_module)
        radius = getattr(pl_module, "receptive_radius", None)
        if target == "fdlf" and radius is not None and self.far[0] > radius:
            rank_zero_warn(f"far region {self.far} lies beyond the student's receptive radius R = {radius}: "
                           "its far response is exactly 0, so far_response_error = 1 by construction")
        for L in self._sizes(dm):
            if target == "fdlf":
                dm.teacher.check_size(L)
                if dm.teacher.periodic and self.far[1] > L // 2:
                    raise ValueError(f"far = {self.far} must satisfy far[1] <= L // 2 = {L // 2} at eval size L = {L}")
                if not dm.teacher.periodic and self.far[0] > L // 2:
                    raise ValueError(f"far = {self.far} must satisfy far[0] <= L // 2 = {L // 2} at eval size L = {L} "
                                     "(open box: the far shell around a central probe must meet the box)")
            elif self.ising_r_max > L // 2:
                raise ValueError(f"ising_r_max = {self.ising_r_max} must be <= L // 2 = {L // 2} at eval size L = {L}")

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
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Compute, log and write one evaluation (call on rank 0 only); returns the results dict."""
        dm = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.inference_mode(False), torch.no_grad():  # Jacobians enable grad locally
                if self._target(dm) == "fdlf":
                    results = self._evaluate_fdlf(dm, pl_module)
                else:
                    results = self._evaluate_ising(dm, pl_module)
        finally:
            pl_module.train(was_training)
        results["step"] = int(trainer.global_step)
        results["receptive_radius"] = int(pl_module.receptive_radius)
        out = self._output_dir(trainer) / "eval" / f"step={results['step']}"
        self._write(results, out)
        self._log(trainer, results, out)
        self.last_results, self.last_output_dir = results, out
        return results

    def _evaluate_fdlf(self, dm, pl_module) -> dict[str, Any]:
        teacher = dm.teacher
        periodic = bool(teacher.periodic)
        radius = int(pl_module.receptive_radius)
        sigmas = [self.sigma_eval]
        sigma_min = _sigma_min(pl_module)
        if sigma_min is not None and not math.isclose(sigma_min, self.sigma_eval):
            sigmas.append(sigma_min)
        margin = radius if self.bulk_margin is None else self.bulk_margin
        # open boxes with a chosen margin: also DESIGN's bulk (margin R), where it has sites
        masks = {"rmse": margin}
        if not periodic and margin != radius:
            masks["rmse_bulk"] = radius
        keys = {(name, sigma): f"{name}_sigma{_fmt(sigma)}" for name in masks for sigma in sigmas}
        rmse_keys = list(keys.values())
        rows, profiles = [], []
        for L in tqdm(self._sizes(dm), desc="size extrapolation", disable=not self.progress):
            batch = dm.eval_batch(L, self.n_samples, seed=self.seed)
            x = batch["x0"].to(torch.float64)
            cond = batch.get("cond")
            target = bind_teacher(teacher, batch)[0](x)
            row: dict[str, Any] = {"L": L}
            for sigma in sigmas:
                learned = _student(pl_module, sigma, cond)(x)
                for name, m in masks.items():
                    mask = self._bulk_mask(batch, periodic, m)
                    empty = mask is not None and not bool(mask.any())
                    row[keys[name, sigma]] = math.nan if empty else float(clean_score_rmse(learned, target, mask=mask))
            # responses (Eq. 17 and profiles) on the first response_samples samples
            n_r = self.response_samples
            xr, occ_r = x[:n_r], _head(batch.get("mask"), n_r)
            student = _student(pl_module, self.sigma_eval, _head(cond, n_r))
            teacher_score, teacher_profile = bind_teacher(teacher, batch, n_r)
            probes, valid = self._probe_sites(x.shape[2:], periodic, L, occ_r, n=len(xr))
            for name, (r_in, r_out) in (("near", self.near), ("far", self.far)):
                kw = dict(r_in=r_in, r_out=r_out, eps=self.fd_epsilon, periodic=periodic, mask=occ_r)
                resp_s = finite_difference_response(student, xr, probes, **kw)
                resp_t = finite_difference_response(teacher_score, xr, probes, **kw)
                if valid is not None:
                    resp_s, resp_t = resp_s * valid[..., None], resp_t * valid[..., None]
                row[f"{name}_response_error"] = float(response_relative_error(resp_s, resp_t))
            sites, r_max, keep = self._profile_sites(xr.shape, periodic, L, occ_r)
            prof_s = score_response_profile(student, xr, sites, r_max, periodic=periodic, absolute=True,
                                            mask=None if periodic else occ_r)
            prof_t = teacher_profile(xr, sites, r_max)
            prof_s, prof_t = (p.detach().to("cpu", torch.float64)[keep].mean(0) for p in (prof_s, prof_t))
            row["response_range_student"] = int(response_range(prof_s, self.q))
            row["response_range_teacher"] = int(response_range(prof_t, self.q))
            rows.append(row)
            profiles.append({"L": L, "r": list(range(r_max + 1)),
                             "student": (prof_s / prof_s[1:].sum()).tolist(),
                             "teacher": (prof_t / prof_t[1:].sum()).tolist()})
        name = f"FDLF {teacher.key}" if periodic else f"FDLF {teacher.key} (open box, occupied sites, margin {margin})"
        return {"target": "fdlf", "target_name": name, "rmse_keys": rmse_keys,
                "metric_keys": rmse_keys + ["near_response_error", "far_response_error",
                                            "response_range_student", "response_range_teacher"],
                "rows": rows, "profiles": profiles, "config": self._config()}

    def _evaluate_ising(self, dm, pl_module) -> dict[str, Any]:
        beta = float(dm.beta)
        distances = self.response_distances or sorted({1, min(int(pl_module.receptive_radius), self.ising_r_max)})
        n_y = max(self.learned_observations, self.score_observations)
        rows, profiles = [], []
        sizes = self._sizes(dm)
        bar = tqdm(total=len(sizes) * len(self.probe_sigmas), desc="Ising size extrapolation",
                   disable=not self.progress)
        for L in sizes:
            spins = dm.eval_batch(L, n_y, seed=self.seed)["x0"]
            for k, sigma in enumerate(self.probe_sigmas):
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 1009 * L + k)
                y = ising_eval.noisy_observations(spins, sigma, generator=gen)
                student = _student(pl_module, sigma, None)
                learned, learned_sem = ising_eval.learned_response_profile(
                    student, y[: self.learned_observations], self.ising_r_max,
                    sites_per_observation=self.sites_per_observation, generator=gen)
                exact, exact_err = ising_eval.exact_response_cached(
                    L, beta, sigma, self.ising_r_max, n_observations=self.exact_observations,
                    seed=self.seed, cache_dir=self.cache_dir, progress=self.progress, **self.response_kwargs)
                n_s = self.score_observations
                score = ising_eval.score_rmse_against_mcmc(student, spins[:n_s], y[:n_s], beta, sigma,
                                                           **self.smoothed_score_kwargs)
                row: dict[str, Any] = {"L": L, "sigma": sigma}
                for r in distances:
                    row[f"response_exact_r{r}"] = float(exact[r])
                    row[f"response_exact_stderr_r{r}"] = float(exact_err[r])
                    row[f"response_learned_r{r}"] = float(learned[r])
                    row[f"response_ratio_r{r}"] = float(learned[r] / exact[r])
                row["response_profile_error"] = float(response_relative_error(torch.from_numpy(learned[1:]),
                                                                              torch.from_numpy(exact[1:])))
                row["score_rmse"], row["score_rmse_mc_floor"] = score["rmse"], score["mc_floor"]
                rows.append(row)
                profiles.append({"L": L, "sigma": sigma, "r": list(range(self.ising_r_max + 1)),
                                 "exact": exact.tolist(), "exact_stderr": exact_err.tolist(),
                                 "student": learned.tolist(), "student_sem": learned_sem.tolist()})
                bar.update()
        bar.close()
        keys = [k for k in rows[0] if k not in ("L", "sigma")]
        return {"target": "ising", "target_name": "Ising", "beta": beta, "metric_keys": keys,
                "rows": rows, "profiles": profiles, "config": self._config()}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _target(dm) -> str:
        if dm is None:
            raise ValueError("SizeExtrapolationCallback needs trainer.datamodule (an FDLF or Ising DataModule)")
        if hasattr(dm, "teacher"):
            return "fdlf"
        if hasattr(dm, "beta"):
            return "ising"
        raise ValueError(f"datamodule {type(dm).__name__} has neither 'teacher' (FDLF) nor 'beta' (Ising)")

    def _sizes(self, dm) -> list[int]:
        return list(self.eval_sizes if self.eval_sizes is not None else dm.eval_sizes)

    @staticmethod
    def _bulk_mask(batch: dict, periodic: bool, margin: int) -> torch.Tensor | None:
        """Sites entering the RMSE: the batch's ``mask`` (occupied sites) and, on open boxes, the sites
        farther than ``margin`` from the outside of the box (:func:`open_box_bulk`); ``None`` when
        every site counts. Shape (n, 1, L, ...)."""
        mask = batch.get("mask")
        if periodic:
            return None if mask is None else mask.bool()
        shape = batch["x0"].shape
        bulk = open_box_bulk(shape[2:], margin).expand(shape[0], 1, *shape[2:])
        return bulk if mask is None else bulk & mask.bool()

    def _probe_sites(self, lattice, periodic: bool, L: int, occupied: torch.Tensor | None = None, n: int = 1):
        """Probe sites of the finite-difference responses and their weights.

        Torus: ``n_probes`` distinct uniform sites shared by all samples, weights ``None``. Open box:
        per-sample sites (n, P, d) from the sites whose far shell fits in the box (else the central
        2×2×2 cube), occupied ones first in a seeded random order, and weights (n, P) = occupied
        (``occupied`` (n, 1, *lattice); ``None``: every site, n samples).
        """
        gen = torch.Generator().manual_seed(self.seed + 7919 * L)
        if periodic:
            sites = torch.ones(lattice, dtype=torch.bool).nonzero()
            pick = torch.randperm(len(sites), generator=gen)[: self.n_probes]
            return [tuple(int(c) for c in sites[i]) for i in pick], None
        allowed = open_box_bulk(lattice, self.far[1])
        if not allowed.any():
            allowed = open_box_bulk(lattice, max(min(lattice) // 2 - 1, 0))
        sites = allowed.nonzero()                                            # (A, d)
        n = n if occupied is None else occupied.shape[0]
        occ = (torch.ones(n, len(sites), dtype=torch.bool) if occupied is None else
               occupied[(slice(None), 0) + tuple(sites.T)].bool())          # (n, A)
        P = min(self.n_probes, len(sites))
        order = torch.stack([torch.randperm(len(sites), generator=gen) for _ in range(n)])   # (n, A)
        # occupied first, each group in the random order (stable sort on "unoccupied")
        rank = torch.argsort((~occ.gather(1, order)).to(torch.int8), dim=1, stable=True)
        chosen = order.gather(1, rank)[:, :P]                                # (n, P)
        return sites[chosen], occ.gather(1, chosen).to(torch.float64)

    def _profile_sites(self, shape, periodic: bool, L: int, occupied: torch.Tensor | None):
        """Probe site(s) of the response profiles, r_max and the samples kept in the average.

        Torus: the centre for all samples, r_max = L // 2 (the whole torus). Open box: per sample the
        occupied site nearest to the box centre (ties: seeded random order), r_max = the largest
        distance from any chosen probe to a site of the box; samples without occupied sites dropped."""
        n, lattice = shape[0], tuple(shape[2:])
        if periodic or occupied is None:
            centre = tuple(k // 2 for k in lattice)
            return centre, min(lattice) // 2, torch.ones(n, dtype=torch.bool)
        gen = torch.Generator().manual_seed(self.seed + 7919 * L + 1)
        coords = torch.ones(lattice, dtype=torch.bool).nonzero()            # (N, d)
        centre = (torch.tensor(lattice, dtype=torch.float64) - 1) / 2
        dist = (coords - centre).abs().amax(1)                               # Chebyshev distance to the centre
        tie = torch.rand(len(coords), generator=gen)
        occ = occupied[:, 0].reshape(n, -1).bool()                           # (n, N)
        score = torch.where(occ, dist + 0.5 * tie, torch.inf)                # nearest occupied, ties random
        best = score.argmin(1)
        sites = coords[best]                                                 # (n, d)
        keep = occ.any(1)
        extent = torch.maximum(sites, torch.tensor(lattice) - 1 - sites).amax(1)
        r_max = int(extent[keep].max()) if keep.any() else max(lattice) // 2
        return sites, r_max, keep

    def _config(self) -> dict[str, Any]:
        keys = ["eval_sizes", "n_samples", "seed", "sigma_eval", "near", "far", "n_probes", "fd_epsilon",
                "response_samples", "q", "bulk_margin", "probe_sigmas", "ising_r_max", "response_distances",
                "exact_observations", "learned_observations", "sites_per_observation", "score_observations",
                "response_kwargs", "smoothed_score_kwargs"]
        return {k: getattr(self, k) for k in keys}

    def _output_dir(self, trainer: pl.Trainer) -> Path:
        return run_directory(trainer, self.output_dir)

    def _write(self, results: dict[str, Any], out: Path) -> None:
        with atomic_output(out / "metrics.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=_columns(results))
                writer.writeheader()
                writer.writerows(results["rows"])
        with atomic_output(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(results, indent=1, default=str))
        with atomic_output(out / "response_profiles.png") as tmp:
            (plot_fdlf if results["target"] == "fdlf" else plot_ising)(results, tmp)

    def _log(self, trainer: pl.Trainer, results: dict[str, Any], out: Path) -> None:
        metrics = {}
        for row in results["rows"]:
            suffix = f"_sigma{_fmt(row['sigma'])}" if "sigma" in row else ""
            for key in results["metric_keys"]:
                if not math.isnan(float(row[key])):  # e.g. rmse_bulk where the bulk is empty
                    metrics[f"eval/{key}{suffix}/L={row['L']}"] = float(row[key])
        columns = _columns(results)
        log_evaluation(trainer, metrics, step=results["step"],
                       table=("eval/table", columns, results["rows"]) if self.log_table else None,
                       image=("eval/response_profiles", out / "response_profiles.png") if self.log_image else None)


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


def log_evaluation(trainer: pl.Trainer, metrics: dict[str, float], *, step: int,
                   table: tuple[str, list[str], list[dict]] | None = None,
                   image: tuple[str, Path] | None = None) -> None:
    """Scalars to every logger at ``step``; ``table = (key, columns, rows)`` and ``image = (key, png)``
    to a ``WandbLogger`` only (other loggers have no tables or images)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()
        if isinstance(logger, WandbLogger):
            if table is not None:
                key, columns, rows = table
                logger.log_table(key, columns=columns, data=[[row[c] for c in columns] for row in rows], step=step)
            if image is not None:
                logger.log_image(image[0], images=[str(image[1])], step=step)


def _sigma_min(pl_module) -> float | None:
    """σ_min of the module's noise process (``pl_module.noise.sigma_min`` or ``hparams.sigma_min``)."""
    noise = getattr(pl_module, "noise", None)
    if noise is not None and hasattr(noise, "sigma_min"):
        return float(noise.sigma_min)
    hparams = getattr(pl_module, "hparams", {})
    return float(hparams["sigma_min"]) if "sigma_min" in hparams else None


def _head(cond, n: int):
    return None if cond is None else cond[:n]


def _student(pl_module, sigma: float, cond):
    """Score function x (any dtype/device) ↦ student score at σ, float64 on CPU; autograd flows through.

    ``cond`` (n, Cc, ...) or None is bound sample by sample: x must hold the same n samples (as
    every metric here guarantees; a ValueError otherwise). Inputs are cast to the module's device
    and dtype (float32 for a float32 student)."""
    device, dtype = pl_module.device, pl_module.dtype
    c = None if cond is None else cond.to(device, dtype)

    def score(x: torch.Tensor) -> torch.Tensor:
        if c is not None and x.shape[0] != c.shape[0]:
            raise ValueError(f"the student's conditioning is bound to {c.shape[0]} samples, got x of {x.shape[0]}")
        return pl_module.score(x.to(device, dtype), sigma, c).to("cpu", torch.float64)

    return score


def bind_teacher(teacher, batch: dict, n: int | None = None):
    """Exact score and response profile of ``teacher`` bound to the first ``n`` samples of ``batch``
    (all when ``None``): ``(score_fn, profile_fn)`` with ``score_fn(x) -> (n, C, *lattice)`` and
    ``profile_fn(x, site, r_max) -> (n, r_max + 1)``.

    A batch with ``"ports"`` and ``"types"`` (hard-valid 3D) binds them, ``teacher.score(x, ports,
    types)``, and x must hold the same n samples (ValueError otherwise); 2D teachers are used as they
    are. ``site`` is one site shared by the samples, or per-sample sites (n, d) (one teacher call per sample).
    """
    if "ports" not in batch:
        def profile_2d(x, site, r_max):
            site = torch.as_tensor(site)
            if site.dim() == 1:
                return teacher.response_profile(x, tuple(site.tolist()), r_max)
            return torch.cat([teacher.response_profile(x[b:b + 1], tuple(site[b].tolist()), r_max)
                              for b in range(len(x))])
        return teacher.score, profile_2d
    ports, types = batch["ports"][:n], batch["types"][:n]

    def aligned(x):
        if x.shape[0] != ports.shape[0]:
            raise ValueError(f"the teacher's ports/types are bound to {ports.shape[0]} samples, got x of {x.shape[0]}")

    def score(x):
        aligned(x)
        return teacher.score(x, ports, types)

    def profile(x, site, r_max):
        aligned(x)
        site = torch.as_tensor(site)
        if site.dim() == 1:
            return teacher.response_profile(x, tuple(site.tolist()), r_max, ports, types)
        return torch.cat([teacher.response_profile(x[b:b + 1], tuple(site[b].tolist()), r_max,
                                                   ports[b:b + 1], types[b:b + 1]) for b in range(len(x))])

    return score, profile


def format_summary(results: dict[str, Any]) -> str:
    """Fixed-width text table of one evaluation's rows (printed at the end of training)."""
    columns = _columns(results)
    cells = [list(columns)] + [[_cell(row[c]) for c in columns] for row in results["rows"]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    title = f"size extrapolation ({results['target_name']}), step {results['step']}"
    return "\n".join([title] + lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
