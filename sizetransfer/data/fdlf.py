"""FDLF-teacher DataModule: a stream of exact teacher samples at the training size."""
from __future__ import annotations

from typing import Sequence

import torch

from sizetransfer.data.streaming import EVAL_STREAM, Batch, StreamingDataModule, batch_seed, torch_generator
from sizetransfer.teachers import PERIODIC_2D_KEYS, make_teacher


class TeacherBatches:
    """Picklable ``seed -> {"x0": float32 (batch_size, 1, L, L)}``: one vectorised teacher draw."""

    def __init__(self, teacher, L: int, batch_size: int):
        self.teacher, self.L, self.batch_size = teacher, L, batch_size

    def __call__(self, seed: int) -> Batch:
        x0 = self.teacher.sample(self.batch_size, self.L, generator=torch_generator(seed))
        return {"x0": x0.to(torch.float32)}


class FDLFDataModule(StreamingDataModule):
    """Streams samples of an FDLF teacher (``make_teacher(teacher, seed=teacher_seed)``, float64,
    handed to training as float32 ``x0`` (b, 1, train_size, train_size)).

    Args:
        teacher: teacher key, one of ``PERIODIC_2D_KEYS`` (3D hard-valid teachers: ``HardValidDataModule``).
        train_size: training lattice side L.
        eval_sizes: sizes the evaluation runs at (default ``[train_size]``); each checked with
            ``teacher.check_size`` here, before any training.
        batch_size: samples per batch (one vectorised teacher call).
        num_workers: DataLoader worker processes (0: generate in the training process).
        seed: data seed; batch k of rank r is a pure function of (seed, r, k).
        teacher_seed: seed of the teacher's parameters (the target distribution itself).
        val_batches: size of the fixed validation set, in batches.
    """

    def __init__(self, teacher: str = "simple_local", train_size: int = 24,
                 eval_sizes: Sequence[int] | None = None, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0, teacher_seed: int = 0, val_batches: int = 4):
        if teacher not in PERIODIC_2D_KEYS:
            hint = " (3D hard-valid teachers: data.class_path sizetransfer.data.HardValidDataModule)" \
                if teacher.startswith("hard_valid") else ""
            raise ValueError(f"teacher must be one of {list(PERIODIC_2D_KEYS)}, got {teacher!r}{hint}")
        super().__init__(train_size=train_size, eval_sizes=eval_sizes, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, val_batches=val_batches)
        self.save_hyperparameters()
        self.teacher = make_teacher(teacher, seed=teacher_seed)
        self._check_sizes()

    def check_size(self, L: int) -> None:
        self.teacher.check_size(L)

    def make_batch(self, L: int, batch_size: int) -> TeacherBatches:
        return TeacherBatches(self.teacher, L, batch_size)

    def _eval_samples(self, L: int, n: int, seed: int) -> Batch:
        """``{"x0": float64 (n, 1, L, L)}`` teacher samples, a function of (teacher, L, seed)."""
        return {"x0": self.teacher.sample(n, L, generator=torch_generator(batch_seed(seed, EVAL_STREAM, L)))}
