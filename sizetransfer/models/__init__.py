"""Local students (plain torch)."""
from .global_features import GlobalFiLM
from .local_cnn import FiLM, LocalCNN, LocalScoreCNN, PreActConv, ResidualBlock, SiteNorm
from .precond import EDMCoefficients, EDMPrecond, edm_coefficients

__all__ = ["LocalScoreCNN", "LocalCNN", "EDMPrecond", "EDMCoefficients", "edm_coefficients", "ResidualBlock",
           "PreActConv", "SiteNorm", "FiLM", "GlobalFiLM"]
