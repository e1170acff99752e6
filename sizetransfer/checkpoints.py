"""Checkpoints of a ``ScoreModule`` fit: checked before anything is created, and found in their run directory."""
from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.callbacks import Callback, ModelCheckpoint

#: Keys every checkpoint of a ScoreModule fit has (Lightning's, plus the module's own ``noise_seed``).
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "global_step", "noise_seed")
#: Model options a checkpoint must agree on with the config it is resumed under (the weights' shapes).
ARCHITECTURE_KEYS = ("blocks", "width", "dim", "in_channels", "cond_channels", "radius", "film", "norm", "emb_width",
                     "mlp_ratio", "mlp_depth", "global_features", "dilations", "stem_radius", "skip_radius")


def check_checkpoint(path: str | os.PathLike, model_options=None) -> dict:
    """The checkpoint at ``path`` (loaded on the CPU with ``weights_only=True``: tensors and plain
    containers only, never arbitrary code), or ValueError naming ``ckpt_path`` if it is no file, not
    loadable that way, not a checkpoint of a ``ScoreModule`` fit, or one of a different architecture
    than ``model_options`` (a mapping of model options)."""
    import torch

    where = Path(path)
    if not where.is_file():
        raise ValueError(f"ckpt_path: no checkpoint file at {path}")
    try:
        ckpt = torch.load(where, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (whatever torch.load raises on foreign bytes: not a checkpoint)
        raise ValueError(f"ckpt_path: {path} is not a checkpoint of this project (not a readable torch "
                         f"checkpoint); pass a checkpoints/*.ckpt file of a sizetransfer run") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or not any(str(k).startswith("student.") for k in ckpt["state_dict"]):
        raise ValueError(f"ckpt_path: {path} is not a checkpoint of this project (no ScoreModule state: "
                         f"missing {missing or ['student weights']}); pass a checkpoints/*.ckpt file of a "
                         f"sizetransfer run")
    if model_options is not None:
        saved = ckpt["hyper_parameters"]
        for key in ARCHITECTURE_KEYS:
            if key in saved and key in model_options and saved[key] != model_options[key]:
                raise ValueError(f"ckpt_path: {path} was trained with model.{key}={saved[key]!r}, but this "
                                 f"config has model.{key}={model_options[key]!r}: resume with the run's own "
                                 f"config.yaml")
    return ckpt


def run_dir_of_checkpoint(path: str | os.PathLike) -> Path | None:
    """The run directory a checkpoint belongs to (``<run dir>/checkpoints/<name>.ckpt`` beside the
    run's ``config.yaml``), or None."""
    folder = Path(path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


class FinalCheckpoint(Callback):
    """Saves ``last.ckpt`` at the end of training when the periodic checkpoints missed the last step
    (``max_steps`` not a multiple of ``checkpoint.every_n_train_steps``), before the final evaluation
    runs: ``last.ckpt`` always holds the weights the run's final evaluation and summary describe."""

    def on_train_end(self, trainer, pl_module) -> None:
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt is None or not ckpt.save_last or ckpt.dirpath is None or trainer.fast_dev_run:
            return
        if getattr(ckpt, "_last_global_step_saved", -1) == trainer.global_step:
            return
        path = Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        ckpt.last_model_path = str(path)
