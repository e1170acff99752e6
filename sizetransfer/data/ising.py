"""Ising DataModule: a stream of ±1 spin configurations of the 2D Ising prior at β."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

import ising
from ising.lattice import check_beta, check_choice, check_size
from ising.samplers import ALGORITHMS
from sizetransfer.data.streaming import EVAL_STREAM, Batch, StreamingDataModule
from sizetransfer.seeding import batch_seed


class IsingBatches:
    """Picklable ``seed -> {"x0": float32 ±1 (batch_size, 1, L, L)}``: ``batch_size`` independent
    chains of ``ising.sample`` (its default burn-in), one sample each."""

    def __init__(self, L: int, beta: float, batch_size: int, algorithm: str):
        self.L, self.beta, self.batch_size, self.algorithm = L, beta, batch_size, algorithm

    def __call__(self, seed: int) -> Batch:
        s = ising.sample(self.L, self.beta, self.batch_size, algorithm=self.algorithm,
                         n_chains=self.batch_size, seed=seed)
        return {"x0": torch.from_numpy(s.astype(np.float32)).unsqueeze(1)}


def one_numba_thread(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one numba thread per worker (torch already uses one)."""
    import numba

    numba.set_num_threads(1)


class IsingDataModule(StreamingDataModule):
    """Streams equilibrium spins of the periodic L×L Ising prior ``p(s) ∝ exp(β Σ_<ij> s_i s_j)``.

    Args:
        beta: absolute coupling β ≥ 0, or
        beta_over_beta_c: β / β_c (exactly one of the two); ``self.beta`` is always absolute.
        L: training lattice side (``train_size``).
        eval_sizes: sizes the evaluation runs at (default ``[L]``).
        algorithm: ``ising.sample`` algorithm, one of ``ALGORITHMS``.
        batch_size, num_workers, seed, val_batches: as in ``FDLFDataModule``.
    """

    size_option = "L"

    def __init__(self, beta: float | None = None, beta_over_beta_c: float | None = None, L: int = 32,
                 eval_sizes: Sequence[int] | None = None, algorithm: str = "wolff", batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, val_batches: int = 4):
        if (beta is None) == (beta_over_beta_c is None):
            raise ValueError(f"give exactly one of beta and beta_over_beta_c, got beta={beta!r}, "
                             f"beta_over_beta_c={beta_over_beta_c!r}")
        name, value = ("beta", beta) if beta is not None else ("beta_over_beta_c", beta_over_beta_c)
        check_beta(value, name)
        check_choice(algorithm, "algorithm", ALGORITHMS)
        super().__init__(train_size=L, eval_sizes=eval_sizes, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, val_batches=val_batches)
        self.save_hyperparameters()
        self.beta = float(beta) if beta is not None else float(beta_over_beta_c) * ising.BETA_C
        self.algorithm = algorithm
        self._check_sizes()

    def check_size(self, L: int) -> None:
        check_size(L)

    def worker_options(self) -> dict:
        """Spawned workers: numba's OpenMP layer aborts a process forked after the parent ran parallel
        numba code (the validation set, the evaluation callback), so workers must not be forked."""
        return {"multiprocessing_context": "spawn", "worker_init_fn": one_numba_thread}

    def make_batch(self, L: int, batch_size: int) -> IsingBatches:
        return IsingBatches(L, self.beta, batch_size, self.algorithm)

    def _eval_samples(self, L: int, n: int, seed: int) -> Batch:
        """``{"x0": float32 ±1 (n, 1, L, L)}`` from n independent chains, a function of (β, L, seed)."""
        return self.make_batch(L, n)(batch_seed(seed, EVAL_STREAM, L))
