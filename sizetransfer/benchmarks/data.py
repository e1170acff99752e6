"""Throughput of the streaming DataModules: samples/s their training DataLoader delivers.

``python -m sizetransfer.benchmarks.data`` prints the table for every FDLF teacher and the Ising
stream (β = 0.95 β_c, Wolff) at batch 16, L = 32, with 0 and 1 DataLoader workers.
"""
from __future__ import annotations

import time


def data_throughput(datamodule, n_batches: int = 20, *, warmup: int = 2) -> float:
    """Samples/s of ``datamodule.train_dataloader()`` over ``n_batches`` batches, after ``warmup``
    batches (worker start-up, compilation) that are not timed. Rank 0, stream position as is."""
    if n_batches < 1 or warmup < 0:
        raise ValueError(f"n_batches must be >= 1 and warmup >= 0, got {n_batches}, {warmup}")
    loader = datamodule.train_dataloader()
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    start, n = time.perf_counter(), 0
    for _ in range(n_batches):
        n += next(batches)["x0"].shape[0]
    elapsed = time.perf_counter() - start
    del batches, loader  # shuts persistent workers down
    return n / elapsed


def main() -> None:
    from sizetransfer.data import FDLFDataModule, IsingDataModule
    from sizetransfer.teachers import PERIODIC_2D_KEYS

    print(f"{'stream':<28} {'workers':>7} {'samples/s':>10} {'ms/batch':>9}")
    for num_workers in (0, 1):
        streams = {f"fdlf {key}": FDLFDataModule(key, train_size=32, batch_size=16, num_workers=num_workers)
                   for key in PERIODIC_2D_KEYS}
        streams["ising 0.95 beta_c wolff"] = IsingDataModule(beta_over_beta_c=0.95, L=32, batch_size=16,
                                                             num_workers=num_workers)
        for name, dm in streams.items():
            rate = data_throughput(dm, n_batches=20)
            print(f"{name:<28} {num_workers:>7} {rate:>10.0f} {1e3 * 16 / rate:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
