"""Training entry point: ``python -m sizetransfer.fit --config ising_critical.yaml [--trainer.max_steps 50]``.

A ``LightningCLI`` over :class:`~sizetransfer.module.ScoreModule` and any ``LightningDataModule``
(``data.class_path``: ``FDLFDataModule``, ``IsingDataModule`` or ``HardValidDataModule``). The YAML is flat::

    seed_everything: 0
    trainer:    {max_steps: ..., devices: ..., strategy: ..., logger: ...}   # pytorch_lightning.Trainer
    model:      {blocks: 2, width: 64, sigma_min: 0.05, sigma_max: 10, ...}  # ScoreModule
    data:       {class_path: IsingDataModule, init_args: {...}}
    evaluation: {probe_sigmas: [1, 2, 4, 8], ...}   # SizeExtrapolationCallback
    generation: {sizes: [24, 64], steps: 64, ...}   # GenerationCallback (Table 5; off unless sizes)
    checkpoint: {every_n_train_steps: 250, ...}     # ModelCheckpoint (dirpath: the run directory)
    run:        {root: runs, name: null, dir: null}
    ckpt_path:  null                                # resume from a checkpoint

A bare ``--config NAME.yaml`` that is no existing file is looked up in ``./configs/`` and then in
the configs shipped with the package. ``--print_config`` prints the resolved config.

Each run writes to its own directory ``<run.root>/<run.name>/<YYYYmmdd-HHMMSS>/`` (``run.name``
defaults to the config's file name; ``run.dir`` sets the directory outright, needed for multi-node
runs): ``config.yaml``, ``checkpoints/``, ``eval/step=<k>/`` (``generation.*`` too when
``generation.sizes`` is set) and the W&B run under ``wandb/``. The
directory is created only once every option has been checked. W&B (``WandbLogger``) runs offline
unless ``WANDB_MODE`` is set or an API key is available (``WANDB_API_KEY``, ``wandb login``).
"""
from __future__ import annotations

import netrc
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from pytorch_lightning import Callback, LightningDataModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

import sizetransfer.data  # noqa: F401  (registers the DataModules as data.class_path choices)
from sizetransfer.evaluation.callback import SizeExtrapolationCallback
from sizetransfer.evaluation.generation import GenerationCallback
from sizetransfer.module import ScoreModule

#: Configs shipped with the package (in a repository checkout: a link to the top-level ``configs/``).
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
#: Run directory handed from the launching process to the DDP processes Lightning starts.
_RUN_DIR_ENV = "SIZETRANSFER_RUN_DIR"


def find_config(name: str) -> str:
    """``name`` if it is a file, else ``./configs/name`` or the packaged ``configs/name`` (``.yaml`` optional)."""
    if Path(name).is_file() or os.sep in name:
        return name
    for folder in (Path.cwd() / "configs", PACKAGE_CONFIGS):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return str(candidate)
    return name  # jsonargparse reports the missing file


def _resolve_config_args(args: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" and i + 1 < len(args):
            out += [arg, find_config(args[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + find_config(arg.split("=", 1)[1])
        out.append(arg)
        i += 1
    return out


def wandb_should_be_offline() -> bool:
    """True unless the user chose a mode (``WANDB_MODE``) or can reach W&B (an API key or netrc login)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` to the run directory and logs the whole config as the loggers' hyperparameters
    (Lightning itself logs only the model's and the DataModule's arguments)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.config.as_dict()
        config.pop("config", None)
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


class SizeTransferCLI(LightningCLI):
    """LightningCLI with per-run directories, early validation and a closing summary."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 250})
        parser.add_lightning_class_args(SizeExtrapolationCallback, "evaluation")
        parser.add_lightning_class_args(GenerationCallback, "generation")
        parser.add_argument("--run.root", type=str, default="runs", help="Root folder of run directories.")
        parser.add_argument("--run.name", type=str | None, default=None,
                            help="Experiment name (default: the config's file name, else 'fit').")
        parser.add_argument("--run.dir", type=str | None, default=None,
                            help="Run directory (default: <run.root>/<run.name>/<timestamp>).")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="Checkpoint to resume from (e.g. a previous run's checkpoints/last.ckpt).")

    # -- before anything is instantiated: choose the run directory (nothing is created yet) ----------
    def before_instantiate_classes(self) -> None:
        """Point trainer, checkpoints, evaluation and W&B at the run directory. These derived values are
        taken out of the config again before it is saved (:meth:`restore_config`), so that a saved
        ``config.yaml`` re-runs into a new directory instead of the old one."""
        cfg = self.config
        self.run_dir = self._run_dir(cfg)
        os.environ[_RUN_DIR_ENV] = str(self.run_dir)
        self._derived = []
        self._derive(cfg.trainer, "default_root_dir", str(self.run_dir))
        if cfg.checkpoint.dirpath is None:
            self._derive(cfg.checkpoint, "dirpath", str(self.run_dir / "checkpoints"))
        if cfg.evaluation.output_dir is None:
            self._derive(cfg.evaluation, "output_dir", str(self.run_dir))
        if cfg.generation.output_dir is None:
            self._derive(cfg.generation, "output_dir", str(self.run_dir))
        logger = cfg.trainer.logger
        if getattr(logger, "class_path", "").endswith("WandbLogger"):
            args = logger.init_args
            if args.save_dir in (None, "."):
                self._derive(args, "save_dir", str(self.run_dir))
            if args.name is None:
                self._derive(args, "name", f"{self.run_dir.parent.name}/{self.run_dir.name}")
            if not args.offline and wandb_should_be_offline():
                self._derive(args, "offline", True)

    def _derive(self, namespace, key: str, value) -> None:
        self._derived.append((namespace, key, namespace[key]))
        namespace[key] = value

    def restore_config(self) -> None:
        """Put the user's values of the derived options back (the objects are already built)."""
        for namespace, key, value in reversed(self._derived):
            namespace[key] = value

    def _run_dir(self, cfg) -> Path:
        if cfg.run.dir is not None:
            return Path(cfg.run.dir)
        if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(_RUN_DIR_ENV):
            return Path(os.environ[_RUN_DIR_ENV])  # a DDP process started by Lightning: the launcher's dir
        if cfg.run.name is None:  # kept in the saved config: a re-run from it lands beside this run
            configs = cfg.get("config") or []
            cfg.run.name = Path(str(configs[-1])).stem if configs else "fit"
        base = Path(cfg.run.root) / cfg.run.name / time.strftime("%Y%m%d-%H%M%S")
        run_dir, k = base, 1
        while run_dir.exists():
            k += 1
            run_dir = base.with_name(f"{base.name}-{k}")
        return run_dir

    # -- after instantiation, before the trainer touches the disk -----------------------------------
    def check(self) -> None:
        """Cross-checks of model, data and evaluation options (ValueError naming the option)."""
        if self.config.ckpt_path is not None and not Path(self.config.ckpt_path).is_file():
            raise ValueError(f"ckpt_path: no checkpoint file at {self.config.ckpt_path}")
        self.model.check_fit(self.datamodule, self.trainer.max_steps)
        stub = SimpleNamespace(datamodule=self.datamodule)
        for callback in self.trainer.callbacks:
            if isinstance(callback, (SizeExtrapolationCallback, GenerationCallback)):
                callback.setup(stub, self.model, "fit")  # its own option checks (eval sizes, regions)

    def fit(self) -> None:
        """Train (resuming from ``ckpt_path`` if given) and print where the results are."""
        fresh_wandb_service(self.trainer)
        seen = _TrainEndSeen()
        self.trainer.callbacks.append(seen)
        self.trainer.fit(self.model, self.datamodule, ckpt_path=self.config.ckpt_path)
        if not seen.called and self.trainer.max_steps > 0 and self.trainer.global_step >= self.trainer.max_steps:
            # Lightning skips the whole training loop, on_train_end included, when a run resumes from a
            # checkpoint saved at max_steps (a run killed during its final evaluation): evaluate now.
            for callback in self.trainer.callbacks:
                if isinstance(callback, (SizeExtrapolationCallback, GenerationCallback)):
                    callback.on_train_end(self.trainer, self.model)
        self.print_results()
        self.finish_wandb()

    @rank_zero_only
    def finish_wandb(self) -> None:
        """Close the W&B run, so that the offline run is complete and a second fit in this process
        (a notebook, a test) starts its own run instead of appending to this one."""
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()

    @rank_zero_only
    def print_results(self) -> None:
        run_dir = self.run_dir.resolve()
        lines = [f"\nResults of this run in {run_dir}:", f"  config       {run_dir / 'config.yaml'}"]
        ckpt = next((c for c in self.trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt is not None and ckpt.last_model_path:
            lines.append(f"  checkpoint   {ckpt.last_model_path}  (resume: --ckpt_path {ckpt.last_model_path})")
        evaluation = next((c for c in self.trainer.callbacks if isinstance(c, SizeExtrapolationCallback)), None)
        if evaluation is not None and evaluation.last_output_dir is not None:
            out = evaluation.last_output_dir.resolve()
            lines.append(f"  evaluation   {out / 'metrics.csv'}, {out / 'response_profiles.png'}")
        generation = next((c for c in self.trainer.callbacks if isinstance(c, GenerationCallback)), None)
        if generation is not None and generation.last_output_dir is not None:
            out = generation.last_output_dir.resolve()
            lines.append(f"  generation   {out / 'generation.csv'}, {out / 'generation.png'}")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.experiment.dir:
                wandb_run = Path(logger.experiment.dir).resolve().parent
                mode = "offline" if logger.experiment.settings.mode in ("offline", "dryrun") else "online"
                hint = f"  (view: wandb leet {wandb_run}; upload: wandb sync {wandb_run})" if mode == "offline" else ""
                lines.append(f"  W&B ({mode})  {wandb_run}{hint}")
        print("\n".join(lines), flush=True)


def fresh_wandb_service(trainer) -> None:
    """Shut down a W&B service left by earlier, finished runs of this process (a notebook, tests) before
    this fit's run starts: a reused service wrote an offline run's transaction log (``run-*.wandb``)
    to the earlier run's directory instead of this run's (wandb 0.31)."""
    if not any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        return
    import wandb

    if wandb.run is None:
        wandb.teardown()


class _TrainEndSeen(Callback):
    """Records whether Lightning called ``on_train_end`` during a fit."""

    called = False

    def on_train_end(self, trainer, pl_module) -> None:
        self.called = True


class OptionError(ValueError):
    """A bad option, found before training started (nothing was written)."""


def cli_main(args: list[str] | None = None, *, run: bool = True) -> SizeTransferCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), build and check everything and, if ``run``, fit;
    returns the CLI. Bad options raise :class:`OptionError` (parse errors: ``SystemExit``)."""
    if args is None:  # resolve in sys.argv itself: DDP processes are started with the launcher's sys.argv
        sys.argv[1:] = _resolve_config_args(sys.argv[1:])
    else:
        args = _resolve_config_args(list(args))
    try:
        cli = SizeTransferCLI(
            ScoreModule,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=LoggedSaveConfigCallback,
            save_config_kwargs={"overwrite": False},
            trainer_defaults={
                "logger": {"class_path": "pytorch_lightning.loggers.WandbLogger",
                           "init_args": {"project": "sizetransfer"}},
                "check_val_every_n_epoch": None,
            },
            args=args,
            run=False,
            auto_configure_optimizers=False,
        )
        cli.restore_config()
        cli.check()
    except ValueError as err:  # jsonargparse wraps the constructors' errors: report the original one
        while isinstance(err.__cause__, ValueError):
            err = err.__cause__
        raise OptionError(str(err)) from None
    if run:
        cli.fit()
    return cli


def main() -> None:
    """Console entry point: bad options end with a one-line error (exit status 2), not a traceback."""
    try:
        cli_main()
    except OptionError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
