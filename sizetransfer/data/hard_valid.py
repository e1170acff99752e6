"""Hard-valid 3D DataModule: a stream of exact samples of the open-box mixed teacher (docs/teachers.md).

A sample of the hard-valid teacher is (ports, types, x) on the open box {0..L-1}³: the student
learns the score of the continuous channel x (m channels) given the discrete state, so a batch is

    {"x0":   (b, m, L, L, L)            x, exactly 0 on empty sites,
     "cond": (b, 6 + K + 1, L, L, L)    teacher.conditioning(ports, types): 6 port indicators and
                                        the one-hot type (index 0 = empty),
     "mask": (b, 1, L, L, L)            occupied sites (1.0) — DSM noise and loss only there}

float32 for training; evaluation batches (``eval_batch``) are float64 and also carry the discrete
state, ``"ports"`` bool (b, 6, L, L, L) and ``"types"`` int64 (b, L, L, L), so that the exact
score ``teacher.score(x, ports, types)`` can be bound to each batch.

The student must be built for these batches: ``model.dim 3``, ``model.periodic false``,
``model.in_channels m = teacher.channels``, ``model.cond_channels 6 + K + 1 =
teacher.cond_channels``. :meth:`HardValidDataModule.check_model` raises a ValueError naming the
options otherwise; it runs in ``setup`` and in ``SizeExtrapolationCallback.setup`` (so the CLI
reports it before anything is written).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from sizetransfer.data.streaming import EVAL_STREAM, Batch
from sizetransfer.data.teacher import TeacherDataModule
from sizetransfer.seeding import batch_seed, torch_generator
from sizetransfer.teachers import HARD_VALID_KEYS


class HardValidBatches:
    """Picklable ``seed -> batch``: one vectorised hard-valid teacher draw of ``batch_size`` samples at
    size L, as ``{"x0", "cond", "mask"}`` in ``dtype`` (plus ``"ports"``, ``"types"`` if ``discrete``)."""

    def __init__(self, teacher, L: int, batch_size: int, dtype: torch.dtype = torch.float32,
                 discrete: bool = False):
        self.teacher, self.L, self.batch_size = teacher, L, batch_size
        self.dtype, self.discrete = dtype, discrete

    def __call__(self, seed: int) -> Batch:
        return hard_valid_batch(self.teacher, *self.teacher.sample(self.batch_size, self.L,
                                                                  generator=torch_generator(seed)),
                                dtype=self.dtype, discrete=self.discrete)


def hard_valid_batch(teacher, ports: torch.Tensor, types: torch.Tensor, x: torch.Tensor, *,
                     dtype: torch.dtype = torch.float32, discrete: bool = False) -> Batch:
    """The batch dict of teacher samples (ports, types, x): x0 = x, cond = teacher.conditioning, mask =
    occupancy, all in ``dtype``; ``discrete`` adds the ``"ports"`` and ``"types"`` tensors unchanged."""
    batch = {"x0": x.to(dtype), "cond": teacher.conditioning(ports, types, dtype),
             "mask": teacher.occupied(ports).to(dtype)}
    if discrete:
        batch.update(ports=ports, types=types)
    return batch


class HardValidDataModule(TeacherDataModule):
    """Streams exact samples of a hard-valid 3D teacher (``make_teacher(teacher, seed=teacher_seed)``,
    float64), handed to training as float32 ``{"x0", "cond", "mask"}`` batches on the open box
    train_size³ (see the module docstring for shapes).

    Args:
        teacher: teacher key, one of ``HARD_VALID_KEYS`` (``hard_valid_short``, ``hard_valid_long``).
        train_size: training box side L (even, ≥ 2; Fig. 3 trains at 6).
        eval_sizes, batch_size, num_workers, seed, teacher_seed, val_batches: as in
            :class:`~sizetransfer.data.teacher.TeacherDataModule`.

    Attributes: ``teacher``; ``channels`` (m) and ``cond_channels`` (6 + K + 1), the values
    ``model.in_channels`` / ``model.cond_channels`` must take.
    """

    def __init__(self, teacher: str = "hard_valid_short", train_size: int = 6,
                 eval_sizes: Sequence[int] | None = None, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0, teacher_seed: int = 0, val_batches: int = 4):
        if teacher not in HARD_VALID_KEYS:
            raise ValueError(f"teacher must be one of {list(HARD_VALID_KEYS)} (the 3D hard-valid teachers; "
                             f"2D FDLF teachers go with FDLFDataModule), got {teacher!r}")
        super().__init__(teacher, train_size, eval_sizes, batch_size, num_workers, seed, teacher_seed, val_batches)
        self.save_hyperparameters()
        self.channels, self.cond_channels = int(self.teacher.channels), int(self.teacher.cond_channels)
        self._check_sizes()

    def make_batch(self, L: int, batch_size: int) -> HardValidBatches:
        return HardValidBatches(self.teacher, L, batch_size)

    def _eval_samples(self, L: int, n: int, seed: int) -> Batch:
        """float64 ``{"x0", "cond", "mask", "ports", "types"}`` of n teacher samples, a function of
        (teacher, L, seed)."""
        make = HardValidBatches(self.teacher, L, n, dtype=torch.float64, discrete=True)
        return make(batch_seed(seed, EVAL_STREAM, L))

    # -- the student must match the data ------------------------------------------------------
    def expected_model(self) -> dict[str, Any]:
        """The student options these batches need: ``{"dim": 3, "periodic": False, "in_channels": m,
        "cond_channels": 6 + K + 1}``."""
        return {"dim": 3, "periodic": False, "in_channels": self.channels, "cond_channels": self.cond_channels}

    def describe_data(self) -> str:
        return (f"teacher {self.teacher.key} is an open 3D box with m = {self.channels} continuous channels "
                f"and {self.cond_channels} conditioning channels")

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer is not None and self.trainer.lightning_module is not None:
            self.check_model(self.trainer.lightning_module)
