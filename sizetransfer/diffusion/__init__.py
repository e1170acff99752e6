"""Plain-torch diffusion parts: VE noise process, DSM loss (Eq. 3), Tweedie's formula (Eq. 7), reverse samplers."""
from .losses import dsm_loss, exact_score_loss
from .noise import VENoise, expand_sigma, geometric_sigmas
from .sampling import sample_euler_maruyama, sample_predictor_corrector, sample_probability_flow
from .tweedie import tweedie_denoise

__all__ = ["VENoise", "geometric_sigmas", "expand_sigma", "dsm_loss", "exact_score_loss", "sample_euler_maruyama",
           "sample_predictor_corrector", "sample_probability_flow", "tweedie_denoise"]
