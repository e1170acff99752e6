"""Local students (plain torch)."""
from .local_cnn import EDMPrecond, LocalCNN, LocalScoreCNN, ResidualBlock

__all__ = ["LocalScoreCNN", "LocalCNN", "EDMPrecond", "ResidualBlock"]
