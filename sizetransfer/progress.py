"""Progress bars that count the optimiser steps of a whole run (also after a resume)."""
from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar


def step_progress_bar(trainer) -> None:
    """Swap Lightning's default progress bar for one counting optimiser steps of the whole run:
    ``k/max_steps``, also after a resume (the default shows ``k/?`` on an endless data stream)."""
    for i, callback in enumerate(trainer.callbacks):
        if type(callback) is RichProgressBar:
            trainer.callbacks[i] = StepRichProgressBar()
        elif type(callback) is TQDMProgressBar:
            trainer.callbacks[i] = StepTQDMProgressBar()


class _StepTotal:
    @property
    def total_train_batches(self):
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches


class StepRichProgressBar(_StepTotal, RichProgressBar):
    """Rich bar: training steps k/max_steps (see :func:`step_progress_bar`)."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "Training steps"


class StepTQDMProgressBar(_StepTotal, TQDMProgressBar):
    """tqdm bar: training steps k/max_steps (see :func:`step_progress_bar`)."""
