"""Base of the DataModules that stream samples of an exact teacher (``sizetransfer.teachers``)."""
from __future__ import annotations

from typing import Sequence

from sizetransfer.data.streaming import StreamingDataModule
from sizetransfer.teachers import make_teacher


class TeacherDataModule(StreamingDataModule):
    """Streams samples of ``make_teacher(teacher, seed=teacher_seed)`` (float64, handed to training as
    float32); the teacher's ``check_size`` decides which sizes are allowed.

    Args:
        teacher: teacher key (the subclass says which).
        train_size: training lattice side L.
        eval_sizes: sizes the evaluation runs at (default ``[train_size]``); each checked with
            ``teacher.check_size`` here, before any training.
        batch_size: samples per batch (one vectorised teacher call).
        num_workers: DataLoader worker processes (0: generate in the training process).
        seed: data seed; batch k of rank r is a pure function of (seed, r, k).
        teacher_seed: seed of the teacher's parameters (the target distribution itself).
        val_batches: size of the fixed validation set, in batches.

    Subclasses check the key, call ``super().__init__`` and then ``save_hyperparameters()``.
    """

    def __init__(self, teacher: str, train_size: int, eval_sizes: Sequence[int] | None, batch_size: int,
                 num_workers: int, seed: int, teacher_seed: int, val_batches: int):
        super().__init__(train_size=train_size, eval_sizes=eval_sizes, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, val_batches=val_batches)
        self.teacher = make_teacher(teacher, seed=teacher_seed)

    def check_size(self, L: int) -> None:
        self.teacher.check_size(L)
