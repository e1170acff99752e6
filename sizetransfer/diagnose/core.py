"""``diagnose(score_fn, target, ...)``: will this model extrapolate across size, and why not?"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from sizetransfer.diagnose.config import DiagnoseConfig
from sizetransfer.diagnose.ising_target import check_ising_sizes
from sizetransfer.diagnose.measure import check_score_shape, check_sizes, default_sizes, eval_config, measure
from sizetransfer.diagnose.target import as_model_score, declared_radius, resolve_target
from sizetransfer.diagnose.verdict import decide


def load_student(path: str | os.PathLike):
    """The ``ScoreModule`` of a checkpoint of this project (CPU, eval mode); one-line ValueError otherwise."""
    from sizetransfer.checkpoints import check_checkpoint
    from sizetransfer.module import ScoreModule

    check_checkpoint(path)
    module = ScoreModule.load_from_checkpoint(str(path), map_location="cpu")
    return module.eval()


def check_oracle(path: str | os.PathLike, model_options: dict | None = None) -> None:
    """ValueError (one line, naming ``oracle``) unless ``path`` is a checkpoint of this project trained with
    ``model.objective: exact_score`` and, given ``model_options`` (the model's hyperparameters), the same
    student architecture."""
    from sizetransfer.checkpoints import check_checkpoint

    try:
        ckpt = check_checkpoint(path, model_options)
    except ValueError as err:
        raise ValueError(str(err).replace("ckpt_path:", "oracle:", 1).replace("resume with the run's own "
                                                                              "config.yaml", "train the oracle "
                                                                              "with the model's options")) from None
    objective = ckpt["hyper_parameters"].get("objective", "dsm")
    if objective != "exact_score":
        raise ValueError(f"oracle: {path} was trained with model.objective={objective!r}; the oracle control is a "
                         "fit with model.objective: exact_score")


def _name(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def plan(target, train_size: int | None, sizes: Sequence[int] | None, config: DiagnoseConfig, *,
         teacher_seed: int = 0) -> tuple[Any, int, list[int], str]:
    """``(data, train_size, sizes, kind)`` of a diagnosis, every size checked (one-line ValueError); ``kind`` is
    ``"fdlf"`` (a teacher with an exact score) or ``"ising"``."""
    data, train_size = resolve_target(target, train_size, teacher_seed=teacher_seed)
    kind = "ising" if hasattr(data, "beta") and not hasattr(data, "teacher") else "fdlf"
    extra = getattr(data, "eval_sizes", ()) or ()
    largest = config.max_size if kind == "fdlf" else min(config.max_size, config.ising_max_size)
    sizes = sorted({int(L) for L in sizes}) if sizes is not None else default_sizes(train_size, largest, extra)
    if kind == "ising":
        check_ising_sizes(data, sizes, train_size, config)
    else:
        check_sizes(data.teacher, sizes, train_size, eval_config(config))
    return data, train_size, sizes, kind


def diagnose(score_fn, target, *, train_size: int | None = None, sizes: Sequence[int] | None = None,
             receptive_radius: int | None = None, oracle=None, config: DiagnoseConfig | None = None,
             quick: bool = False, out: str | os.PathLike | None = None, progress: bool = False,
             teacher_seed: int = 0, name: str | None = None) -> dict[str, Any]:
    """Measure what decides size transfer for ``score_fn`` on ``target`` and give the verdict.

    Args:
        score_fn: ``score_fn(x, sigma)`` (or ``(x, sigma, cond)``), x (n, C, L, L) → the score, same shape: a
            student of this project or any torch module / callable.
        target: a periodic teacher key (``"complex_long"``), a Teacher, or a DataModule with a ``teacher`` or
            the Ising ``beta`` (then the responses are Eq. 22's and the RMSE is against the MCMC smoothed score).
        train_size: the L the model was trained at (default: the DataModule's ``train_size``).
        sizes: the sizes of the extrapolation curve (default: :func:`~sizetransfer.diagnose.measure.default_sizes`
            up to ``config.max_size``).
        receptive_radius: the model's receptive radius (default: its ``receptive_radius`` if it declares one,
            else the measured support of its response).
        oracle: the range-floor control, a score function or a checkpoint path of an
            ``objective: exact_score`` run of the same student; None: the error split is unavailable.
        config: measurement options and thresholds (:class:`DiagnoseConfig`); ``quick``: its cheaper pass
            (``DiagnoseConfig.quick()``; ignored when ``config`` is given).
        out: a directory to write ``diagnosis.json``, ``diagnosis.md``, ``diagnosis.png`` into.
        progress: a progress bar over the steps.
        name: the model's name in the report (default: its type or function name).
    Returns:
        the diagnosis as a dict (the content of ``diagnosis.json``): ``verdict`` ∈ {"extrapolates", "range",
        "training"}, ``headline``, ``reasons`` and every number.
    Raises:
        ValueError, in one line and before any expensive work, for a bad target, size, model output or oracle.
    """
    config = config or (DiagnoseConfig.quick() if quick else DiagnoseConfig())
    data, train_size, sizes, kind = plan(target, train_size, sizes, config, teacher_seed=teacher_seed)
    score = as_model_score(score_fn)
    check_score_shape(score, data, train_size, config)
    oracle_score = None
    if oracle is not None and kind == "ising":
        raise ValueError("oracle: the Ising target has no exact clean score, so there is no oracle control")
    if oracle is not None:
        if isinstance(oracle, (str, Path)):
            check_oracle(oracle, dict(getattr(score_fn, "hparams", {}) or {}) or None)
            oracle = load_student(oracle)
        oracle_score = as_model_score(oracle)
        try:
            check_score_shape(oracle_score, data, train_size, config)
        except ValueError as err:
            raise ValueError(f"oracle: {err}") from None
    radius = receptive_radius if receptive_radius is not None else declared_radius(score_fn)

    steps = len(sizes) + (oracle_score is not None)
    with tqdm(total=steps, desc="diagnose", disable=not progress) as bar:
        m = measure(score, data, train_size=train_size, sizes=sizes, config=config, oracle=oracle_score,
                    progress=bar, kind=kind)
    if radius is None:
        model_range, source = m["model_support"], "measured support: the model declares no receptive radius"
    else:
        model_range, source = int(radius), "declared receptive radius"
    v = decide(m, model_range, source, config, kind=kind)
    if kind == "ising":
        import ising

        key = "ising"
        target_name = f"Ising β = {data.beta / ising.BETA_C:.4g} β_c (probe σ = {config.ising_sigma:g})"
    else:
        key = getattr(data.teacher, "key", None)
        target_name = f"FDLF {key}" if key else _name(data.teacher)
    d = {"verdict": v["verdict"], "headline": v["headline"], "reasons": v["reasons"],
         "train_size": train_size, "sizes": sizes,
         "model": {"name": name or _name(score_fn), "declared_radius": radius, "range": model_range,
                   "range_source": source,
                   "support": m["model_support"], "response_range": m["model_range_q"]},
         "target": {"name": target_name, "kind": kind, "key": key, "response_range": m["target_range"],
                    "response_range_L": m["target_range_L"], "far_share": m["target_far_share"]},
         "oracle_floor": m["oracle_floor"], "training_part": v["training_part"], "flat": v["flat"],
         "grows": v["grows"], "trend": m["trend"], "rows": m["rows"],
         "per_sample_rmse": m["per_sample_rmse"], "profiles": m["profiles"], "config": config.as_dict()}
    if out is not None:
        from sizetransfer.diagnose.report import write

        d["files"] = {k: str(p) for k, p in write(d, out).items()}
    return d
