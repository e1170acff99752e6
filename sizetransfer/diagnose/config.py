"""Options of :func:`~sizetransfer.diagnose.diagnose`: what is measured and the verdict's thresholds
(docs/diagnose.md)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from sizetransfer.evaluation.far_share import FAR_SHARE_MIN


@dataclass
class DiagnoseConfig:
    """Measurement options and verdict thresholds (all documented in docs/diagnose.md).

    Measurement (the evaluation options of :class:`~sizetransfer.evaluation.fdlf.FDLFEvalConfig`):
        sigma_eval: σ at which the model's score is compared with the exact clean score.
        n_samples: evaluation samples per size L (the RMSE and its per-sample spread).
        response_samples: the first samples on which responses and response profiles are measured.
        n_probes: probe sites of the finite-difference responses (Eq. 17).
        near, far: Chebyshev shells (r_in, r_out) of the near and far response regions.
        fd_epsilon: finite-difference step ε.
        seed: seed of the evaluation samples and probe sites.
        max_size: largest L of the size-extrapolation curve (default sizes: train L × 1, 4/3, 2, 8/3, 4, ...
            up to this).
    Ising target (no exact score; docs/diagnose.md):
        ising_sigma: the probe σ of the responses and of the RMSE against the MCMC smoothed score.
        ising_exact_observations: observations of the exact response (Eq. 22; cached on disk).
        ising_noise_z: shells of the exact profile within this many standard errors of 0 count as 0 in R_q.
        ising_max_size: largest L of the Ising size curve (the exact response costs grow with L).
    Verdict:
        q: tail level of the response range R_q (Eq. 5).
        support_tol: the model's measured support is the largest r whose shell carries more than this
            fraction of its off-diagonal absolute response (the range of a model that declares none).
        rmse_max: without an oracle floor, a clean-score relative RMSE above this at the training size is
            "training" (the model has the range but not the accuracy).
        training_ratio, training_excess: with an oracle floor, the error is "training" when it exceeds
            ``training_ratio`` × floor and exceeds the floor by more than ``training_excess``.
        flat_tolerance: the error curve is flat when its fitted relative change from the training size to
            the largest size is within ± this, or the slope is not significant.
        trend_z: a slope is significant when |slope| > trend_z × its standard error.
        far_share_min: the far-response error is meaningful only when the target's far shells carry at least
            this fraction of its off-diagonal response.
    """

    sigma_eval: float = 0.05
    n_samples: int = 16
    response_samples: int = 4
    n_probes: int = 4
    near: tuple[int, int] = (1, 2)
    far: tuple[int, int] = (5, 8)
    fd_epsilon: float = 1e-2
    seed: int = 12345
    max_size: int = 128
    ising_sigma: float = 4.0
    ising_exact_observations: int = 16
    ising_noise_z: float = 2.0
    ising_max_size: int = 64
    q: float = 0.05
    support_tol: float = 1e-4
    rmse_max: float = 0.2
    training_ratio: float = 2.0
    training_excess: float = 0.05
    flat_tolerance: float = 0.05
    trend_z: float = 2.0
    far_share_min: float = FAR_SHARE_MIN

    def __post_init__(self) -> None:
        for name in ("n_samples", "response_samples", "n_probes", "max_size", "ising_max_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("sigma_eval", "fd_epsilon", "rmse_max", "training_ratio", "trend_z", "ising_sigma",
                     "ising_noise_z"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("q", "support_tol", "far_share_min"):
            if not 0 < float(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("training_excess", "flat_tolerance"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if int(self.ising_exact_observations) < 2:
            raise ValueError(f"ising_exact_observations must be an integer >= 2, got {self.ising_exact_observations}")
        self.near, self.far = tuple(int(v) for v in self.near), tuple(int(v) for v in self.far)

    @classmethod
    def quick(cls, **overrides) -> "DiagnoseConfig":
        """A cheaper, noisier pass (``--quick``): 8 samples, 2 response samples, 2 probes, L ≤ 64."""
        return replace(cls(n_samples=8, response_samples=2, n_probes=2, max_size=64), **overrides)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
