"""LightningDataModules streaming training samples of the FDLF teachers and the Ising prior.

Reusable alone (they import ``sizetransfer.teachers`` and ``ising``, never the trainer):
    FDLFDataModule      exact FDLF-teacher samples (float32 x0 for training, float64 for evaluation)
    HardValidDataModule exact 3D hard-valid teacher samples: x0, cond (ports, types), mask (occupied)
    IsingDataModule     ±1 Ising spins from independent cluster / heat-bath chains
    BatchStream         the generic infinite IterableDataset of whole batches
    StreamLoader        its DataLoader: every epoch starts where the consumer stopped
    StreamingDataModule their base: resumable stream position, fixed validation set, eval batches
    TeacherDataModule   base of the exact-teacher DataModules (FDLF, hard-valid)

What evaluation may rely on (eval batches and the exact target): ``sizetransfer.data.protocol``.
"""
from sizetransfer.data.fdlf import FDLFDataModule
from sizetransfer.data.hard_valid import HardValidDataModule
from sizetransfer.data.ising import IsingDataModule
from sizetransfer.data.streaming import BatchStream, StreamingDataModule, StreamLoader
from sizetransfer.seeding import batch_seed

__all__ = ["FDLFDataModule", "HardValidDataModule", "IsingDataModule", "BatchStream", "StreamLoader", "StreamingDataModule", "batch_seed"]
