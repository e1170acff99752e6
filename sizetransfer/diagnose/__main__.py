"""``python -m sizetransfer.diagnose --ckpt runs/<name>/<time>/checkpoints/last.ckpt``: the verdict for a trained
student (its run's ``config.yaml`` supplies the target); ``--help`` lists the options (docs/diagnose.md)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

from sizetransfer.diagnose.config import DiagnoseConfig

#: File of a run directory holding its W&B run id (written by the fit).
WANDB_ID_FILE = "wandb_id"

#: Learning rate of ``--train-oracle``: the exact-score regression is steadier below the configs' 3e-3
#: (docs/training.md, "Oracle control").
ORACLE_LR = 1e-3

#: Evaluation options a run's config.yaml supplies (``evaluation.<key>``) to the diagnosis.
_FROM_RUN = ("sigma_eval", "near", "far", "q", "seed", "n_samples", "response_samples", "n_probes", "fd_epsilon")
_THRESHOLDS = ("q", "support_tol", "rmse_max", "training_ratio", "training_excess", "flat_tolerance", "trend_z",
               "far_share_min", "max_size", "sigma_eval", "ising_sigma", "ising_max_size")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.diagnose", description=(
        "Will this score model extrapolate across lattice size, and why not? Writes diagnosis.md, "
        "diagnosis.json and diagnosis.png into the run directory (or --out)."))
    p.add_argument("--ckpt", required=True, help="checkpoint of a sizetransfer fit (checkpoints/*.ckpt)")
    p.add_argument("--target", help="teacher key; default: the run's config.yaml (data.init_args.teacher)")
    p.add_argument("--train-size", type=int, help="training L; default: the run's data.init_args.train_size")
    p.add_argument("--sizes", type=int, nargs="+", help="sizes L of the extrapolation curve (default: train L up "
                   "to --max-size, with the run's eval sizes)")
    p.add_argument("--out", help="output directory (default: the checkpoint's run directory)")
    p.add_argument("--quick", action="store_true", help="cheaper, noisier pass (8 samples, L <= 64)")
    p.add_argument("--oracle-ckpt", help="checkpoint of the oracle control (model.objective: exact_score, same "
                   "student): its error is the range floor")
    p.add_argument("--train-oracle", type=int, metavar="STEPS", help="train the oracle control for STEPS steps "
                   "first (the run's config with model.objective exact_score), into <out>/oracle")
    p.add_argument("--oracle-lr", type=float, default=ORACLE_LR, metavar="LR", help="learning rate of "
                   f"--train-oracle (default {ORACLE_LR}: at the configs' 3e-3 the exact-score regression of an "
                   "eight-conv student stalled; docs/training.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-wandb", action="store_true", help="do not add the diagnosis to the run's W&B run")
    for name in _THRESHOLDS:
        f = next(f for f in dataclasses.fields(DiagnoseConfig) if f.name == name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(f.default), help=f"default {f.default}")
    return p


def checked_ckpt(path: str | Path) -> dict:
    """The checkpoint at ``path`` (:func:`~sizetransfer.checkpoints.check_checkpoint`), its errors naming ``--ckpt``."""
    from sizetransfer.checkpoints import check_checkpoint

    try:
        return check_checkpoint(path)
    except ValueError as err:
        raise ValueError(str(err).replace("ckpt_path:", "--ckpt:", 1)) from None


def run_config(ckpt: Path) -> tuple[dict, Path | None]:
    """The run's config.yaml (``{}`` when the checkpoint is not in a run directory) and the run directory."""
    import yaml

    from sizetransfer.checkpoints import run_dir_of_checkpoint

    run_dir = run_dir_of_checkpoint(ckpt)
    if run_dir is None:
        return {}, None
    return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}, run_dir


def target_of(cfg: dict, args) -> tuple[str, int, list[int], int]:
    """(teacher key, train L, eval sizes, teacher seed) from the options and the run's config; the key is
    ``"ising"`` for an Ising run (its ``data.init_args`` then make the target)."""
    data = cfg.get("data") or {}
    init = data.get("init_args") or {}
    cls = str(data.get("class_path", ""))
    if args.target is None and cls.endswith("IsingDataModule"):
        return "ising", int(args.train_size or init.get("L", 32)), list(init.get("eval_sizes") or []), 0
    if args.target is None and cls and not cls.endswith("FDLFDataModule"):
        raise ValueError(f"target: the run's data is {cls.rsplit('.', 1)[-1]}; diagnose supports periodic teachers "
                         "(FDLFDataModule) and the Ising target (IsingDataModule) only so far")
    key = args.target or init.get("teacher")
    if key is None:
        raise ValueError(f"--target: {args.ckpt} is not inside a run directory with a config.yaml; name the teacher")
    train = args.train_size or init.get("train_size")
    if train is None:
        raise ValueError("--train-size: the run's config does not say the training size; give it")
    return key, int(train), list(init.get("eval_sizes") or []), int(init.get("teacher_seed", 0))


def evaluation_data(cfg: dict, key: str, train: int, eval_sizes: list[int], teacher_seed: int):
    """The evaluation data of the target ``key`` (from :func:`target_of`): an ``IsingDataModule`` built from the
    run's ``data.init_args`` for ``"ising"``, else a :class:`~sizetransfer.diagnose.target.TeacherData` (the
    same evaluation samples as the run's DataModule). One-line ValueError for a bad key or training size."""
    if key == "ising":
        from sizetransfer.data import IsingDataModule

        init = dict((cfg.get("data") or {}).get("init_args") or {})
        init["L"] = train
        return IsingDataModule(**{k: v for k, v in init.items() if k in ("beta", "beta_over_beta_c", "L",
                                                                          "eval_sizes", "algorithm")})
    from sizetransfer.diagnose.target import TeacherData, resolve_target
    from sizetransfer.teachers import make_teacher

    resolve_target(key, train, teacher_seed=teacher_seed)  # a bad key or size fails before any loading
    return TeacherData(make_teacher(key, seed=teacher_seed), train, eval_sizes)


def train_oracle(run_dir: Path | None, out: Path, steps: int, lr: float = ORACLE_LR) -> Path:
    """Train the oracle control (the run's config, ``model.objective: exact_score``, learning rate ``lr``)
    and return its last.ckpt."""
    if run_dir is None:
        raise ValueError("--train-oracle needs the checkpoint's run directory (its config.yaml)")
    if steps < 1:
        raise ValueError(f"--train-oracle must be >= 1 steps, got {steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--oracle-lr must be a finite number > 0, got {lr}")
    where = out / "oracle"
    cmd = [sys.executable, "-m", "sizetransfer.fit", "--config", str(run_dir / "config.yaml"),
           "--model.objective", "exact_score", "--model.lr", repr(float(lr)), "--trainer.max_steps", str(steps),
           "--generation.sizes", "[]", "--run.dir", str(where)]
    print("training the oracle control:", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise ValueError(f"--train-oracle: the oracle fit failed (exit code {done.returncode}); see its output above")
    return where / "checkpoints" / "last.ckpt"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not (math.isfinite(args.oracle_lr) and args.oracle_lr > 0):
            raise ValueError(f"--oracle-lr must be a finite number > 0, got {args.oracle_lr}")
        ckpt = Path(args.ckpt)
        saved = checked_ckpt(ckpt)
        if args.oracle_ckpt:
            from sizetransfer.diagnose.core import check_oracle

            try:
                check_oracle(args.oracle_ckpt, saved["hyper_parameters"])
            except ValueError as err:
                raise ValueError(str(err).replace("oracle:", "--oracle-ckpt:", 1)) from None
        cfg, run_dir = run_config(ckpt)
        key, train, eval_sizes, teacher_seed = target_of(cfg, args)
        out = Path(args.out) if args.out else run_dir
        if out is None:
            raise ValueError("--out: the checkpoint is not inside a run directory; say where to write the diagnosis")
        base = DiagnoseConfig.quick() if args.quick else DiagnoseConfig()
        from_run = {k: v for k, v in (cfg.get("evaluation") or {}).items() if k in _FROM_RUN and v is not None}
        if args.quick:  # the quick pass keeps its smaller sample counts
            from_run = {k: v for k, v in from_run.items() if k not in ("n_samples", "response_samples", "n_probes")}
        given = {k: getattr(args, k) for k in _THRESHOLDS if getattr(args, k) is not None}
        config = dataclasses.replace(base, **{**from_run, **given})

        import sizetransfer.diagnose as diag
        from sizetransfer.diagnose.core import plan

        if key == "ising" and (args.oracle_ckpt or args.train_oracle is not None):
            raise ValueError("--oracle-ckpt/--train-oracle: the Ising target has no exact clean score, so there is "
                             "no oracle control")
        data = evaluation_data(cfg, key, train, eval_sizes, teacher_seed)
        plan(data, train, args.sizes, config)  # every size checked before the oracle is trained
        oracle = args.oracle_ckpt
        if args.train_oracle is not None:
            oracle = train_oracle(run_dir, out, args.train_oracle, args.oracle_lr)
        student = diag.load_student(ckpt)
        d = diag.diagnose(student, data, train_size=train, sizes=args.sizes, oracle=oracle, config=config,
                          out=out, progress=not args.no_progress, teacher_seed=teacher_seed,
                          name=f"{ckpt} (step {saved['global_step']}, receptive radius {student.receptive_radius}"
                               + ("" if student.is_local else f" plus {student.hparams.global_features} global "
                                                                "features") + ")")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    wandb_id = run_dir / WANDB_ID_FILE if run_dir is not None else None
    if wandb_id is not None and wandb_id.is_file() and not args.no_wandb:
        from sizetransfer.diagnose.report import log_wandb

        where = log_wandb(d, wandb_id.read_text().strip(), run_dir)
        d["files"]["wandb"] = str(where)
    print(d["headline"])
    for r in d["reasons"]:
        print(f"  * {r}")
    print(f"written: {', '.join(d['files'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
