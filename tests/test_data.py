"""Streaming DataModules: pure-function batches, rank/worker independence, exact resume, validation."""
import hashlib
import math
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from sizetransfer.benchmarks.data import data_throughput
from sizetransfer.data import BatchStream, FDLFDataModule, IsingDataModule
from sizetransfer.data.streaming import StreamLoader

L_SMALL = 8


def digest(batch) -> str:
    return hashlib.sha1(batch["x0"].numpy().tobytes()).hexdigest()


def stream_digests(loader, n):
    it = iter(loader)
    return [digest(next(it)) for _ in range(n)]


def gaussian_dm(**kw):
    opts = dict(teacher="gaussian", train_size=L_SMALL, batch_size=4, seed=3)
    return FDLFDataModule(**(opts | kw))


# --------------------------------------------------------------------------- the stream
def test_stream_is_independent_of_worker_count_and_position():
    make = gaussian_dm().make_batch(L_SMALL, 4)
    expected = [digest(BatchStream(make, seed=3).batch(k)) for k in range(7)]
    for workers in (0, 2):
        loader = DataLoader(BatchStream(make, seed=3), batch_size=None, num_workers=workers)
        assert stream_digests(loader, 7) == expected, workers
    # starting at position 4 continues the stream
    assert stream_digests(DataLoader(BatchStream(make, seed=3, position=4), batch_size=None), 3) == expected[4:]
    assert len(set(expected)) == 7


def slow_second_worker(worker_id):
    if worker_id == 1:
        time.sleep(0.5)


def test_each_epoch_starts_where_the_consumer_stopped():
    make = gaussian_dm().make_batch(L_SMALL, 4)
    expected = [digest(BatchStream(make, seed=3).batch(k)) for k in range(8)]
    consumed = 1
    loader = StreamLoader(BatchStream(make, seed=3), lambda: consumed, num_workers=2, persistent_workers=True,
                          worker_init_fn=slow_second_worker)
    for epoch in range(2):  # consuming batches while a slow worker starts must not move its start
        seen = []
        for batch in loader:
            seen.append(digest(batch))
            consumed += 1
            if len(seen) == 3:
                break
        assert seen == expected[1 + 3 * epoch: 4 + 3 * epoch], epoch


@pytest.mark.slow
def test_streams_differ_across_ranks_workers_and_seeds():
    make = gaussian_dm().make_batch(L_SMALL, 4)
    seen = {}
    for seed, rank in [(3, 0), (3, 1), (3, 2), (4, 0)]:
        loader = DataLoader(BatchStream(make, seed=seed, rank=rank), batch_size=None, num_workers=2)
        for k, h in enumerate(stream_digests(loader, 6)):  # batches of both workers
            assert h not in seen, f"batch {k} of (seed {seed}, rank {rank}) repeats {seen[h]}"
            seen[h] = (seed, rank, k)


def test_batch_shapes_dtypes_and_fixed_sets():
    dm = gaussian_dm(eval_sizes=[L_SMALL, 12], val_batches=2)
    x0 = next(iter(dm.train_dataloader()))["x0"]
    assert x0.shape == (4, 1, L_SMALL, L_SMALL) and x0.dtype == torch.float32
    val = [digest(b) for b in dm.val_dataloader()]
    assert len(val) == 2 and val == [digest(b) for b in gaussian_dm(val_batches=2).val_dataloader()]
    assert not set(val) & set(stream_digests(dm.train_dataloader(), 4))
    assert dm.eval_sizes == [L_SMALL, 12] and gaussian_dm().eval_sizes == [L_SMALL]
    for L in dm.eval_sizes:
        ev = dm.eval_batch(L, 5, seed=1)["x0"]
        assert ev.shape == (5, 1, L, L) and ev.dtype == torch.float64
        assert dm.eval_batch(L, 5, seed=1)["x0"] is ev  # cached
        # the evaluation set does not depend on the data seed
        assert torch.equal(gaussian_dm(seed=9).eval_batch(L, 5, seed=1)["x0"], ev)
        assert not torch.equal(dm.eval_batch(L, 5, seed=2)["x0"], ev)


# --------------------------------------------------------------------------- resume under Lightning
class LinearProbe(pl.LightningModule):
    """Minimal module: a linear map of flattened x0; records a digest of every training batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(L_SMALL * L_SMALL, 1, dtype=torch.float64)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(digest(batch))
        x = batch["x0"].flatten(1).double()
        return (self.net(x).squeeze(1) - x.sum(1).sin()).square().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def fit(steps, *, ckpt_path=None, callbacks=(), limit_train_batches=None, **dm_kw):
    model, dm = LinearProbe(), gaussian_dm(**dm_kw)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, limit_val_batches=0,
                         limit_train_batches=limit_train_batches, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=bool(callbacks),
                         callbacks=list(callbacks))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, dm


def test_resume_continues_the_stream_exactly(tmp_path):
    n = 8
    full, full_dm = fit(n)
    assert full_dm.state_dict() == {"batches_consumed": n, "seed": 3}
    assert len(set(full.seen)) == n
    # interrupted at n/2 by a step checkpoint, mid-epoch; 3-batch epochs, a persistent worker
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=n // 2, save_top_k=-1)
    first, _ = fit(n // 2, callbacks=[ckpt], limit_train_batches=3, num_workers=1)
    (path,) = tmp_path.glob("*.ckpt")
    assert torch.load(path, weights_only=False)["FDLFDataModule"] == {"batches_consumed": n // 2, "seed": 3}
    second, second_dm = fit(n, ckpt_path=path, limit_train_batches=3, num_workers=1)
    assert first.seen + second.seen == full.seen
    assert second_dm.batches_consumed == n
    for a, b in zip(full.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_multi_epoch_stream_continues_with_persistent_workers():
    model, dm = LinearProbe(), gaussian_dm(num_workers=2)
    trainer = pl.Trainer(max_steps=7, limit_train_batches=3, limit_val_batches=0, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch >= 2
    make = dm.make_batch(L_SMALL, 4)
    assert model.seen == [digest(BatchStream(make, seed=3).batch(k)) for k in range(7)]


def test_load_state_dict_rejects_another_seed():
    with pytest.raises(ValueError, match="seed"):
        gaussian_dm(seed=1).load_state_dict({"batches_consumed": 5, "seed": 2})


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, option", [
    (dict(teacher="no_such_teacher"), "teacher"),
    (dict(train_size=2), "train_size"),
    (dict(eval_sizes=[8, 1]), "eval_sizes"),
    (dict(eval_sizes=[]), "eval_sizes"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_workers=-1), "num_workers"),
    (dict(val_batches=0), "val_batches"),
    (dict(seed=-1), "seed"),
])
def test_fdlf_rejects_bad_options(kw, option):
    with pytest.raises(ValueError, match=option):
        gaussian_dm(**kw)


def test_fdlf_rejects_sizes_a_long_range_teacher_cannot_be_built_at():
    with pytest.raises(ValueError, match="eval_sizes"):
        FDLFDataModule("complex_long", train_size=24, eval_sizes=[24, 16])  # cutoff 8 needs L >= 17


@pytest.mark.parametrize("kw, option", [
    (dict(), "beta"),
    (dict(beta=0.4, beta_over_beta_c=0.9), "beta"),
    (dict(beta=-0.1), "beta"),
    (dict(beta_over_beta_c=float("nan")), "beta_over_beta_c"),
    (dict(beta=0.4, L=1), "L"),
    (dict(beta=0.4, eval_sizes=[8, 1.5]), "eval_sizes"),
    (dict(beta=0.4, algorithm="metropolis"), "algorithm"),
    (dict(beta=0.4, batch_size=-2), "batch_size"),
])
def test_ising_rejects_bad_options(kw, option):
    with pytest.raises(ValueError, match=option):
        IsingDataModule(**kw)


# --------------------------------------------------------------------------- Ising
def test_ising_stream_gives_equilibrium_spins():
    from ising.exact import kaufman_energy

    dm = IsingDataModule(beta_over_beta_c=1.0, L=L_SMALL, batch_size=8, seed=5)
    assert math.isclose(dm.beta, 0.5 * math.log1p(math.sqrt(2)))
    batches = stream_digests(dm.train_dataloader(), 2)
    assert len(set(batches)) == 2
    x0 = next(iter(dm.train_dataloader()))["x0"]
    assert x0.shape == (8, 1, L_SMALL, L_SMALL) and x0.dtype == torch.float32
    s = dm.eval_batch(L_SMALL, 64, seed=0)["x0"][:, 0].numpy()
    assert s.dtype == np.float32 and set(np.unique(s)) == {-1.0, 1.0}
    e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2)) / L_SMALL ** 2  # energy per site
    exact = kaufman_energy(L_SMALL, dm.beta)
    assert abs(e.mean() - exact) < 4 * e.std(ddof=1) / 8, (e.mean(), exact)


@pytest.mark.slow
def test_ising_workers_are_spawned_safely_after_parallel_numba_ran():
    dm = IsingDataModule(beta=0.4, L=L_SMALL, batch_size=4, num_workers=0)
    list(dm.val_dataloader())  # parallel numba in this process: a forked worker would abort
    expected = stream_digests(dm.train_dataloader(), 3)
    spawned = IsingDataModule(beta=0.4, L=L_SMALL, batch_size=4, num_workers=1)
    assert stream_digests(spawned.train_dataloader(), 3) == expected


def test_data_throughput_counts_samples():
    assert data_throughput(gaussian_dm(), n_batches=3, warmup=1) > 0
