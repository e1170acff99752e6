"""Training entry point: ``python -m sizetransfer.fit --config ising_critical.yaml [--trainer.max_steps 50]``.

A ``LightningCLI`` over :class:`~sizetransfer.module.ScoreModule` and any ``LightningDataModule``
(``data.class_path``: ``FDLFDataModule``, ``IsingDataModule`` or ``HardValidDataModule``). The YAML is flat::

    seed_everything: 0
    trainer:    {max_steps: ..., devices: ..., strategy: ..., logger: ...}   # pytorch_lightning.Trainer
    model:      {blocks: 2, width: 64, sigma_min: 0.05, sigma_max: 10, ...}  # ScoreModule
    data:       {class_path: IsingDataModule, init_args: {...}}
    evaluation: {probe_sigmas: [1, 2, 4, 8], ...}   # SizeExtrapolationCallback
    generation: {sizes: [24, 64], steps: 256, ...}   # GenerationCallback (Table 5; off unless sizes)
    checkpoint: {every_n_train_steps: 250, ...}     # ModelCheckpoint (dirpath: the run directory)
    run:        {root: runs, name: null, dir: null}
    ckpt_path:  null                                # resume from a checkpoint

A bare ``--config NAME.yaml`` that is no existing file is looked up in ``./configs/`` and then in
the configs shipped with the package. ``--print_config`` prints the resolved config (with the W&B
``offline`` setting the run will use).

Each run writes to its own directory ``<run.root>/<run.name>/<YYYYmmdd-HHMMSS>/`` (``run.name``
defaults to the config's file name; ``run.dir`` sets the directory outright, needed for multi-node
runs): ``config.yaml``, ``checkpoints/``, ``eval/step=<k>/`` (``generation.*`` too when
``generation.sizes`` is set), ``summary.md`` (what was trained and measured, the key numbers and
what they mean; also printed at the end) and the W&B run under ``wandb/``. The directory is created
only once every option (and ``ckpt_path``) has been checked. W&B (``WandbLogger``) runs offline
unless ``WANDB_MODE`` is set or an API key is available (``WANDB_API_KEY``, ``wandb login``).

Resuming (``--ckpt_path <run dir>/checkpoints/last.ckpt``) continues in the checkpoint's own run
directory and W&B run (same run id, ``wandb_id`` in the run directory); the resumed run's config is
saved beside the first as ``config.resumed-<time>.yaml``. A checkpoint elsewhere starts a new run
directory.

Threads: unless ``OMP_NUM_THREADS`` is set, torch uses (cores available − DataLoader workers)
threads, so that training and the data workers together never ask for more cores than there are.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import ArgumentError
from pytorch_lightning import Callback, LightningDataModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

import sizetransfer.data  # noqa: F401  (registers the DataModules as data.class_path choices)
from sizetransfer.checkpoints import FinalCheckpoint, check_checkpoint, run_dir_of_checkpoint
from sizetransfer.evaluation.callback import GenerationCallback, SizeExtrapolationCallback
from sizetransfer.module import ScoreModule
from sizetransfer.progress import step_progress_bar
from sizetransfer.run_summary import run_summary
from sizetransfer.tracking import (WandbRun, finish_wandb_loggers, prepare_wandb_loggers, wandb_loggers,
                                   wandb_should_be_offline)

#: Configs shipped with the package (in a repository checkout: a link to the top-level ``configs/``).
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
#: Run directory handed from the launching process to the DDP processes Lightning starts.
_RUN_DIR_ENV = "SIZETRANSFER_RUN_DIR"
#: File in the run directory holding the W&B run id (a resumed run continues the same W&B run).
WANDB_ID_FILE = "wandb_id"


#: DDP's "Grad strides do not match bucket view strides" for a 1×1 conv weight (C_out, C_in, 1, 1) whose grad
#: differs from its bucket view only in the strides of the two size-1 dims, which address the same memory: the
#: compiled step's backward (``model.compile``) writes such grads. A real layout mismatch (other sizes, or other
#: strides of the first two dims) still warns.
SIZE_ONE_STRIDES_WARNING = (r"(?s)Grad strides do not match bucket view strides.*"
                            r"grad\.sizes\(\) = \[(\d+), (\d+), 1, 1\], strides\(\) = \[(\d+), (\d+), \d+, \d+\]\s*"
                            r"bucket_view\.sizes\(\) = \[\1, \2, 1, 1\], strides\(\) = \[\3, \4, \d+, \d+\]")


def quiet_libraries() -> None:
    """Silence what a user cannot act on, through the libraries' own settings: Lightning's litlogger
    advertisement (a filter on its info logger), a deprecation warning Lightning raises inside its own
    code under torch >= 2.10, DDP's stride warning for the size-1 dims of 1×1 conv weights
    (:data:`SIZE_ONE_STRIDES_WARNING`), and Lightning's per-fit banner lines when ``SIZETRANSFER_QUIET`` is
    set (the sweep runner's option check builds one fit per grid point). W&B's "anonymous" and "git root"
    warnings are avoided where they arise (:meth:`SizeTransferCLI.fit`)."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLitLoggerTip())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=SIZE_ONE_STRIDES_WARNING)


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def default_threads(num_workers: int) -> None:
    """torch threads = cores available to this process − DataLoader workers (at least 1), unless the user
    chose (``OMP_NUM_THREADS``). Under contention (a shared machine) more threads than cores make every
    step wait for the slowest thread; this keeps training plus data workers within the cores."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores - int(num_workers)))


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

    #: The parser last built (its options give a misspelled option's close match).
    last_parser = None

    def init_parser(self, **kwargs):
        """The parser raises ``ArgumentError`` (reported in one line by :func:`main`) instead of printing
        the whole usage; ``--help`` still prints it."""
        parser = super().init_parser(**kwargs, exit_on_error=False)
        SizeTransferCLI.last_parser = parser
        return parser

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
        _check_devices(cfg.trainer.devices)
        self.resumed_from_step = None
        if cfg.ckpt_path is not None:  # before anything is created: a bad checkpoint writes nothing
            ckpt = check_checkpoint(cfg.ckpt_path, cfg.model)
            self.resumed_from_step = int(ckpt["global_step"])
            del ckpt
        self.run_dir = self._run_dir(cfg)
        # (a DDP process started by Lightning finds the launcher's config.yaml already there: not a continuation)
        launched_by_lightning = os.environ.get("LOCAL_RANK", "0") != "0" and bool(os.environ.get(_RUN_DIR_ENV))
        self.continues_run = not launched_by_lightning and (self.run_dir / "config.yaml").is_file()
        if self.continues_run and cfg.ckpt_path is not None:  # keep the first config; this one is saved beside it
            self.save_config_kwargs["config_filename"] = f"config.resumed-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
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
            id_file = self.run_dir / WANDB_ID_FILE
            if args.get("id") is None and self.continues_run and id_file.is_file():
                self._derive(args, "id", id_file.read_text().strip())  # the same W&B run, resumed
                if args.get("resume") is None:
                    self._derive(args, "resume", "allow")

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
        if cfg.ckpt_path is not None and run_dir_of_checkpoint(cfg.ckpt_path) is not None:
            return run_dir_of_checkpoint(cfg.ckpt_path)  # resume: continue in the checkpoint's run directory
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
    def check_run_dir(self) -> None:
        """Before a fit: a run directory that already holds a run is only continued from a checkpoint."""
        if self.continues_run and self.config.ckpt_path is None:
            raise ValueError(f"run.dir: {self.run_dir} already holds a run (config.yaml); resume it with "
                             f"--ckpt_path {self.run_dir / 'checkpoints' / 'last.ckpt'} or choose another run.dir")

    def check(self) -> None:
        """Cross-checks of model, data and evaluation options (ValueError naming the option)."""
        self.model.check_fit(self.datamodule, self.trainer.max_steps)
        stub = SimpleNamespace(datamodule=self.datamodule)
        with warnings.catch_warnings():  # its warnings come again when the trainer sets it up
            warnings.simplefilter("ignore")
            for callback in self.trainer.callbacks:
                if isinstance(callback, (SizeExtrapolationCallback, GenerationCallback)):
                    callback.setup(stub, self.model, "fit")  # its own option checks (eval sizes, regions)

    def fit(self) -> None:
        """Train (resuming from ``ckpt_path`` if given), then print and write the run's summary."""
        default_threads(getattr(self.datamodule, "num_workers", 0))
        step_progress_bar(self.trainer)
        prepare_wandb_loggers(self.trainer.loggers)
        self.run_dir.mkdir(parents=True, exist_ok=True)  # W&B looks for the git root from here
        if self.trainer.fast_dev_run:  # a smoke test: one evaluation at the training size, no generation
            self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, GenerationCallback)]
            for callback in self.trainer.callbacks:
                if isinstance(callback, SizeExtrapolationCallback):
                    callback.eval_sizes = [self.datamodule.train_size]
        start = time.perf_counter()
        seen = _TrainEndSeen()
        self.trainer.callbacks = [FinalCheckpoint()] + self.trainer.callbacks + [seen, _RecordWandbId(self.run_dir)]
        self.trainer.fit(self.model, self.datamodule, ckpt_path=self.config.ckpt_path)
        if not seen.called and self.trainer.max_steps > 0 and self.trainer.global_step >= self.trainer.max_steps:
            # Lightning skips the whole training loop, on_train_end included, when a run resumes from a
            # checkpoint saved at max_steps (a run killed during its final evaluation): evaluate now.
            for callback in self.trainer.callbacks:
                if isinstance(callback, (SizeExtrapolationCallback, GenerationCallback)):
                    callback.on_train_end(self.trainer, self.model)
        self.wall_s = time.perf_counter() - start
        wandb_run = self.finish_wandb()
        self.print_results(wandb_run)

    @rank_zero_only
    def finish_wandb(self) -> WandbRun | None:
        """Close the W&B run (:func:`~sizetransfer.tracking.finish_wandb_loggers`); its id goes to
        ``<run dir>/wandb_id`` (a resumed run continues it)."""
        wandb_run = finish_wandb_loggers(self.trainer.loggers)
        if wandb_run is not None:
            (self.run_dir / WANDB_ID_FILE).write_text(f"{wandb_run.id}\n")
        return wandb_run

    @rank_zero_only
    def print_results(self, wandb_run: WandbRun | None = None) -> None:
        """Print the run's summary (what was trained and measured, what it means) and where its files
        are; the same text goes to ``<run dir>/summary.md``."""
        run_dir = self.run_dir.resolve()
        files = [f"Files of this run in {run_dir}:"]
        files += [f"  config       {path}" for path in sorted(run_dir.glob("config*.yaml"))]
        ckpt = next((c for c in self.trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt is not None and ckpt.last_model_path:
            files.append(f"  checkpoint   {ckpt.last_model_path}  (resume: --ckpt_path {ckpt.last_model_path})")
        evaluation = next((c for c in self.trainer.callbacks if isinstance(c, SizeExtrapolationCallback)), None)
        final_eval = None
        if evaluation is not None and evaluation.last_output_dir is not None:
            final_eval = evaluation.last_output_dir.resolve()
            files.append(f"  evaluation   {final_eval / 'metrics.csv'}, {final_eval / 'response_profiles.png'}")
        generation = next((c for c in self.trainer.callbacks if isinstance(c, GenerationCallback)), None)
        if generation is not None and generation.last_output_dir is not None:
            out = generation.last_output_dir.resolve()
            files.append(f"  generation   {out / 'generation.csv'}, {out / 'generation.png'}")
        if wandb_run is not None and wandb_run.path is not None:
            path, offline = wandb_run.path, wandb_run.offline
            wandb_dir = path.parent
            hint = (f"  (view: wandb leet {wandb_dir}; summary: wandb leet inspect --summary {wandb_dir}; "
                    f"upload: wandb sync {wandb_dir}/offline-run-*)") if offline else ""
            files.append(f"  W&B ({'offline' if offline else 'online'})  {path}{hint}")
        files.append(f"  summary      {run_dir / 'summary.md'}")
        summary = run_summary(self.model, self.datamodule, steps=int(self.trainer.global_step),
                              wall_s=self.wall_s, resumed_from_step=self.resumed_from_step,
                              eval_dir=final_eval or run_dir / "eval" / f"step={self.trainer.global_step}",
                              fast_dev_run=bool(self.trainer.fast_dev_run))
        text = summary + "\n\n" + "\n".join(files)
        if run_dir.is_dir():
            (run_dir / "summary.md").write_text(text + "\n")
        print("\n" + text, flush=True)


def _check_devices(devices) -> None:
    """One-line errors for device counts Lightning reports with a traceback."""
    if isinstance(devices, (int, str)) and str(devices).strip() in ("0", ""):
        raise ValueError(f"trainer.devices must be a positive number of devices, -1 (all), 'auto' or a list "
                         f"of device indices, got {devices!r}")


class _RecordWandbId(Callback):
    """Writes the W&B run id to ``<run dir>/wandb_id`` when training starts, so that a run killed
    mid-way is resumed into the same W&B run."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        for logger in wandb_loggers(trainer.loggers):
            (self.run_dir / WANDB_ID_FILE).write_text(f"{logger.experiment.id}\n")


class _TrainEndSeen(Callback):
    """Records whether Lightning called ``on_train_end`` during a fit."""

    called = False

    def on_train_end(self, trainer, pl_module) -> None:
        self.called = True


class OptionError(ValueError):
    """A bad option, found before training started (nothing was written)."""


def _parse_error(err: ArgumentError, parser) -> str:
    """One line for a jsonargparse error: its message without the usage, and a close match for a
    misspelled option."""
    message = " ".join(str(err).split())
    unknown = re.findall(r"--[\w.\-]+", message) if "nrecognized" in message else re.findall(
        r"Key '([\w.\-]+)' is not expected", message)
    options = [o for a in getattr(parser, "_actions", []) for o in a.option_strings if o.startswith("--")]
    hints = []
    for name in unknown:
        probe = name if name.startswith("--") else f"--{name}"
        close = difflib.get_close_matches(probe, options, n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {close[0]}?")
    return message + ("; " + " ".join(hints) if hints else "") + " (all options: python -m sizetransfer.fit --help)"


def cli_main(args: list[str] | None = None, *, run: bool = True) -> SizeTransferCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), build and check everything and, if ``run``, fit;
    returns the CLI. Bad options raise :class:`OptionError` (parse errors: ``SystemExit``)."""
    quiet_libraries()
    if args is None:  # resolve in sys.argv itself: DDP processes are started with the launcher's sys.argv
        sys.argv[1:] = _resolve_config_args(sys.argv[1:])
    else:
        args = _resolve_config_args(list(args))
    cli = None
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
                           "init_args": {"project": "sizetransfer", "offline": wandb_should_be_offline()}},
                "check_val_every_n_epoch": None,
            },
            args=args,
            run=False,
            auto_configure_optimizers=False,
        )
        cli.restore_config()
        cli.check()
        if run:
            cli.check_run_dir()
    except ArgumentError as err:  # a parse error: one line, not the usage
        cause = err.__cause__
        while isinstance(cause, ValueError) and not isinstance(cause, ArgumentError):
            if not isinstance(cause.__cause__, ValueError):  # a constructor's own error: report it
                raise OptionError(str(cause)) from None
            cause = cause.__cause__
        raise OptionError(_parse_error(err, SizeTransferCLI.last_parser)) from None
    except MisconfigurationException as err:  # Lightning's checks of trainer options
        raise OptionError(f"trainer: {' '.join(str(err).split())}") from None
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
