"""Seeds as pure functions of integer keys (no global RNG state).

``batch_seed(seed, stream, rank, k)`` seeds batch k of one data stream; ``ScoreModule`` seeds the
training noise of step k on rank r with ``batch_seed(noise_seed, r, k)``. Hashing the key (NumPy's
``SeedSequence``) keeps streams that share a prefix independent.
"""
from __future__ import annotations

import numpy as np
import torch


def batch_seed(*key: int) -> int:
    """A 63-bit integer seed, a pure (hashed) function of the non-negative integers ``key``."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))
