"""FDLF-teacher DataModule: a stream of exact teacher samples at the training size."""
from __future__ import annotations

from typing import Sequence

import torch

from sizetransfer.data.streaming import EVAL_STREAM, Batch
from sizetransfer.data.teacher import TeacherDataModule
from sizetransfer.seeding import batch_seed, torch_generator
from sizetransfer.teachers import PERIODIC_2D_KEYS


class TeacherBatches:
    """Picklable ``seed -> {"x0": float32 (batch_size, 1, L, L)}``: one vectorised teacher draw;
    with ``with_score`` also ``"score"``, the exact clean score ∇ log p_L(x0) (float64 → float32)."""

    def __init__(self, teacher, L: int, batch_size: int, with_score: bool = False):
        self.teacher, self.L, self.batch_size, self.with_score = teacher, L, batch_size, with_score

    def __call__(self, seed: int) -> Batch:
        x0 = self.teacher.sample(self.batch_size, self.L, generator=torch_generator(seed))
        batch = {"x0": x0.to(torch.float32)}
        if self.with_score:
            batch["score"] = self.teacher.score(x0).to(torch.float32)
        return batch


class FDLFDataModule(TeacherDataModule):
    """Streams samples of an FDLF teacher (``make_teacher(teacher, seed=teacher_seed)``, float64,
    handed to training as float32 ``x0`` (b, 1, train_size, train_size)).

    Args:
        teacher: teacher key, one of ``PERIODIC_2D_KEYS`` (3D hard-valid teachers: ``HardValidDataModule``).
        train_size: training lattice side L.
        eval_sizes, batch_size, num_workers, seed, teacher_seed, val_batches: as in
            :class:`~sizetransfer.data.teacher.TeacherDataModule`.
    """

    def __init__(self, teacher: str = "simple_local", train_size: int = 24,
                 eval_sizes: Sequence[int] | None = None, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0, teacher_seed: int = 0, val_batches: int = 4):
        if teacher not in PERIODIC_2D_KEYS:
            hint = " (3D hard-valid teachers: data.class_path sizetransfer.data.HardValidDataModule)" \
                if teacher.startswith("hard_valid") else ""
            raise ValueError(f"teacher must be one of {list(PERIODIC_2D_KEYS)}, got {teacher!r}{hint}")
        super().__init__(teacher, train_size, eval_sizes, batch_size, num_workers, seed, teacher_seed, val_batches)
        self.save_hyperparameters()
        self._check_sizes()

    def make_batch(self, L: int, batch_size: int) -> TeacherBatches:
        return TeacherBatches(self.teacher, L, batch_size, with_score=self._with_score)

    _with_score = False

    def stream_exact_score(self) -> None:
        """Add the exact clean score ``"score"`` to every training/validation batch (the oracle control's
        target, ``model.objective: exact_score``); called by ``ScoreModule.check_fit`` before the
        dataloaders are built."""
        self._with_score = True
        self._val_set = None

    def _eval_samples(self, L: int, n: int, seed: int) -> Batch:
        """``{"x0": float64 (n, 1, L, L)}`` teacher samples, a function of (teacher, L, seed)."""
        return {"x0": self.teacher.sample(n, L, generator=torch_generator(batch_seed(seed, EVAL_STREAM, L)))}
