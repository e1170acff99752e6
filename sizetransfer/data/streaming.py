"""Infinite streams of whole batches, each a pure function of (seed, stream, rank, batch index).

The stream of one rank is a global sequence of batches k = 0, 1, 2, ...; batch k is
``make_batch(batch_seed(seed, stream, rank, k))``. DataLoader worker w of W produces the batches
k ≡ w (mod W) and the DataLoader hands worker batches out round-robin in order, so the sequence a
rank sees is the same for any number of workers, never repeats across ranks or workers, and a
resumed run continues it exactly by starting at k = number of batches already consumed.

``StreamingDataModule`` is the LightningDataModule base of the FDLF and Ising DataModules: it counts
the training batches actually consumed (in ``on_before_batch_transfer``, after DataLoader and
Lightning prefetching), saves that count in checkpoints through ``state_dict``, and its
``StreamLoader`` starts every epoch (and a resumed run) at that count. Batches are dicts ``{"x0": float32 (b, C, L, ...)}`` (optionally ``"cond"``, ``"mask"``).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ising.lattice import check_int
from sizetransfer.seeding import batch_seed

#: Stream tags: independent seed streams of one DataModule seed.
TRAIN_STREAM, VAL_STREAM, EVAL_STREAM = 0, 1, 2

Batch = dict[str, torch.Tensor]


def model_geometry(model) -> dict:
    """``dim``, ``periodic``, ``in_channels``, ``cond_channels`` of a student: its ``geometry`` (a
    ``ScoreModule`` or ``LocalScoreCNN`` declares one), else those of its own attributes that are
    ints/bools. Keys it cannot find are left out."""
    keys = ("dim", "periodic", "in_channels", "cond_channels")
    declared = getattr(model, "geometry", None)
    if isinstance(declared, dict):
        return {k: declared[k] for k in keys if k in declared}
    return {k: getattr(model, k) for k in keys if isinstance(getattr(model, k, None), (bool, int))}


class BatchStream(IterableDataset):
    """Infinite IterableDataset of whole batches: batch k = ``make_batch(batch_seed(seed, stream, rank, k))``.

    ``make_batch(seed: int) -> dict`` builds one whole batch in a vectorised call (use it with
    ``DataLoader(batch_size=None)``); it must be picklable for DataLoader workers. Iteration starts
    at batch ``position``, a shared-memory counter: ``seek`` before an iteration starts and
    persistent workers see it too (``StreamLoader`` does this).
    """

    def __init__(self, make_batch: Callable[[int], Batch], *, seed: int = 0, rank: int = 0,
                 stream: int = TRAIN_STREAM, position: int = 0):
        check_int(seed, "seed", 0)
        check_int(rank, "rank", 0)
        check_int(position, "position", 0)
        self.make_batch, self.seed, self.rank, self.stream = make_batch, int(seed), int(rank), int(stream)
        self._position = torch.full((1,), int(position), dtype=torch.int64).share_memory_()

    @property
    def position(self) -> int:
        """Index of the batch the next iteration starts at."""
        return int(self._position[0])

    def seek(self, position: int) -> None:
        """Start the next iteration (also in persistent workers) at batch ``position``."""
        self._position[0] = int(position)

    def batch(self, k: int) -> Batch:
        """Batch k of this rank's stream."""
        return self.make_batch(batch_seed(self.seed, self.stream, self.rank, k))

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        k = self.position + worker
        while True:
            yield self.batch(k)
            k += n_workers


class StreamLoader(DataLoader):
    """``DataLoader(stream, batch_size=None)`` that seeks ``stream`` to ``position()`` whenever an
    iteration (an epoch) starts, so an epoch continues the stream where the consumer stopped.

    The position is set here, in the consuming process, and never during an epoch: a worker reads
    it when it starts its iteration, which may be after other workers' batches were consumed.
    """

    def __init__(self, dataset: BatchStream, position: Callable[[], int], **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.position = position

    def __iter__(self):
        self.dataset.seek(self.position())
        return super().__iter__()


class StreamingDataModule(pl.LightningDataModule):
    """Base DataModule: an infinite training stream at ``train_size``, a fixed validation set, cached
    evaluation batches at any size in ``eval_sizes``.

    Subclasses call ``super().__init__`` after validating their own options and implement
    ``make_batch(L, batch_size)`` (a picklable ``seed -> batch`` callable) and
    ``_eval_samples(L, n, seed)``. ``state_dict()`` = ``{"batches_consumed", "seed"}``: the number of
    training batches this rank has consumed (every DDP rank consumes as many, so rank 0's count,
    which Lightning checkpoints, holds for all).

    The consumed-batch count lives in ``on_before_batch_transfer``: a LightningModule trained on
    this DataModule must not override that hook (Lightning would call only the DataModule's).
    """

    #: Name of the training-size option in error messages.
    size_option = "train_size"

    def __init__(self, *, train_size: int, eval_sizes: Sequence[int] | None, batch_size: int,
                 num_workers: int, seed: int, val_batches: int):
        super().__init__()
        self.train_size = train_size
        self.eval_sizes = [train_size] if eval_sizes is None else list(eval_sizes)
        if not self.eval_sizes:
            raise ValueError("eval_sizes must list at least one size (or be None for [train_size])")
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.num_workers = check_int(num_workers, "num_workers", 0)
        self.seed = check_int(seed, "seed", 0)
        self.val_batches = check_int(val_batches, "val_batches", 1)
        self.batches_consumed = 0
        self._val_set: list[Batch] | None = None
        self._eval_cache: dict[tuple[int, int, int], Batch] = {}

    # -- to implement -------------------------------------------------------------------------
    def make_batch(self, L: int, batch_size: int) -> Callable[[int], Batch]:
        """A picklable callable ``seed -> batch`` of ``batch_size`` training samples at size L."""
        raise NotImplementedError

    def _eval_samples(self, L: int, n: int, seed: int) -> Batch:
        raise NotImplementedError

    def check_size(self, L: int) -> None:
        """Raise ValueError unless samples can be drawn at size L."""
        raise NotImplementedError

    def expected_model(self) -> dict:
        """Student options these batches need (checked by :meth:`check_model`): one-channel fields on
        the periodic square lattice, no conditioning channels; subclasses override."""
        return {"dim": 2, "periodic": True, "in_channels": 1, "cond_channels": 0}

    def describe_data(self) -> str:
        """What the batches are, for :meth:`check_model`'s message."""
        return f"{type(self).__name__} streams one-channel fields on the periodic square lattice"

    def check_model(self, model) -> None:
        """ValueError naming every ``model.<option>`` (see :func:`model_geometry`) that does not fit these
        batches; options the model does not expose are not checked. ``ScoreModule.check_fit`` calls it
        before training."""
        actual = model_geometry(model)
        expected = self.expected_model()
        bad = [k for k, v in expected.items() if k in actual and actual[k] != v]
        if bad:
            got = ", ".join(f"model.{k}={actual[k]!r}" for k in bad)
            want = ", ".join(f"model.{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in expected.items())
            raise ValueError(f"{got} does not match the data: {self.describe_data()}; set {want}")

    def worker_options(self) -> dict:
        """Extra DataLoader options when ``num_workers > 0`` (e.g. ``multiprocessing_context``)."""
        return {}

    def _check_sizes(self) -> None:
        """Check train_size and eval_sizes with ``check_size``; the message names the option."""
        for name, sizes in ((self.size_option, [self.train_size]), ("eval_sizes", self.eval_sizes)):
            for L in sizes:
                try:
                    self.check_size(L)
                except ValueError as err:
                    raise ValueError(f"{name}: size {L!r} is not allowed: {err}") from None

    # -- Lightning ----------------------------------------------------------------------------
    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def train_dataloader(self) -> StreamLoader:
        """This rank's training stream; every epoch starts at the batches consumed so far."""
        stream = BatchStream(self.make_batch(self.train_size, self.batch_size), seed=self.seed,
                             rank=self._rank(), stream=TRAIN_STREAM)
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        workers = dict(persistent_workers=True, **self.worker_options()) if self.num_workers > 0 else {}
        return StreamLoader(stream, lambda: self.batches_consumed, num_workers=self.num_workers,
                            pin_memory=pin, **workers)

    def val_dataloader(self) -> DataLoader:
        """``val_batches`` fixed batches at train_size (rank-independent validation seed stream)."""
        if self._val_set is None:
            make = self.make_batch(self.train_size, self.batch_size)
            self._val_set = [make(batch_seed(self.seed, VAL_STREAM, k)) for k in range(self.val_batches)]
        return DataLoader(self._val_set, batch_size=None)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.batches_consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {"batches_consumed": self.batches_consumed, "seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict["seed"] != self.seed:
            raise ValueError(f"seed={self.seed} differs from the checkpoint's data seed {state_dict['seed']}: "
                             "a resumed run must continue the same stream")
        self.batches_consumed = int(state_dict["batches_consumed"])

    # -- evaluation ---------------------------------------------------------------------------
    def eval_batch(self, L: int, n: int, *, seed: int = 0) -> Batch:
        """n reproducible evaluation samples at size L, cached per (L, n, seed).

        A function of (L, n, seed) and the target only, not of the DataModule's ``seed``, so
        students trained on different data seeds are evaluated on the same samples.
        """
        self.check_size(L)
        check_int(n, "n", 1)
        check_int(seed, "seed", 0)
        key = (int(L), int(n), int(seed))
        if key not in self._eval_cache:
            self._eval_cache[key] = self._eval_samples(*key)
        return self._eval_cache[key]
