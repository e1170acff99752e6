"""``python -m sizetransfer.size_curve --ckpt runs/<name>/<time>/checkpoints/last.ckpt``: the size-extrapolation
metrics of a trained student at L = 24 … 1024 (FDLF teachers) or up to 256 (Ising), with CPU seconds and peak
memory per size and the flatness slope; ``--help`` lists the options (docs/size_curve.md)."""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

from sizetransfer.size_curve.core import DEFAULT_SIZES, MAX_SIZE, SizeCurveConfig

_DEFAULTS = SizeCurveConfig()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.size_curve", description=(
        "Size-extrapolation metrics of a trained student at large L, with CPU seconds and peak memory per size. "
        "Writes size_curve.csv, size_curve.json and size_curve.png into <run dir>/size_curve (or --out)."))
    p.add_argument("--ckpt", help="checkpoint of a sizetransfer fit (checkpoints/*.ckpt)")
    p.add_argument("--combine", nargs="+", metavar="JSON", help="instead of evaluating: the flatness slope ± s.e. "
                   "over runs (seeds) of these size_curve.json files")
    p.add_argument("--sizes", type=int, nargs="+", help=f"sizes L (default: FDLF {list(DEFAULT_SIZES['fdlf'])}, "
                   f"Ising {list(DEFAULT_SIZES['ising'])}, those >= the training size; at most {MAX_SIZE['fdlf']} "
                   f"/ {MAX_SIZE['ising']})")
    p.add_argument("--out", help="output directory (default: <run dir>/size_curve)")
    p.add_argument("--target", help="teacher key; default: the run's config.yaml (data.init_args.teacher)")
    p.add_argument("--train-size", type=int, help="training L; default: the run's config.yaml")
    p.add_argument("--sites", type=int, default=_DEFAULTS.sites,
                   help=f"FDLF: RMSE on ceil(SITES / L^2) samples per size (default {_DEFAULTS.sites})")
    p.add_argument("--response-sites", type=int, default=_DEFAULTS.response_sites,
                   help="FDLF: responses and profiles on ceil(RESPONSE_SITES / L^2) samples, at least 1, at most the "
                   f"run's evaluation.response_samples (default {_DEFAULTS.response_sites})")
    p.add_argument("--pairs", type=int, help="FDLF: (sample, probe) pairs of the finite-difference responses per "
                   "size (default: the run's response_samples x n_probes)")
    p.add_argument("--pair-sites", type=int, default=_DEFAULTS.pair_sites,
                   help=f"FDLF: at most PAIR_SITES / L^2 pairs per size (default {_DEFAULTS.pair_sites}: "
                   "8 at L = 1024)")
    p.add_argument("--chunk-sites", type=int, default=_DEFAULTS.chunk_sites,
                   help=f"memory bound: score at most this many sites at once (at least one sample; default "
                   f"{_DEFAULTS.chunk_sites})")
    p.add_argument("--probe-sigma", type=float, default=_DEFAULTS.probe_sigma,
                   help=f"Ising: the probe σ (default {_DEFAULTS.probe_sigma})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def evaluation_configs(cfg: dict):
    """The run's evaluation options ``(FDLFEvalConfig, IsingEvalConfig)`` from its ``evaluation.*`` keys (as the
    training-time evaluation callback reads them)."""
    from sizetransfer.evaluation.callback import SizeExtrapolationCallback

    keys = inspect.signature(SizeExtrapolationCallback).parameters
    given = {k: v for k, v in (cfg.get("evaluation") or {}).items() if k in keys and v is not None}
    callback = SizeExtrapolationCallback(**given)
    return callback.fdlf, callback.ising


def combine(paths: list[str]) -> str:
    """The flatness line over runs of ``size_curve.json`` files (their headline error; one-line ValueError for a
    missing or foreign file, or files of different targets)."""
    import json

    from sizetransfer.evaluation.flatness import flatness_over_runs, format_flatness

    curves = []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
            curves.append((d["headline"], d["target_name"], [r["L"] for r in d["rows"]],
                           [r[d["headline"]] for r in d["rows"]]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"--combine: {path} is no size_curve.json of this project") from None
    if len({(c[0], c[1]) for c in curves}) > 1:
        raise ValueError(f"--combine: the files are of different targets or errors: {sorted({c[:2] for c in curves})}")
    stat = flatness_over_runs([(sizes, values) for _, _, sizes, values in curves])
    runs = ", ".join(f"{r['slope']:+.4f}" for r in stat["runs"])
    return f"{format_flatness(stat, curves[0][0])} [{curves[0][1]}; per run: {runs}]"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.combine:
        try:
            print(combine(args.combine))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if not args.ckpt:
        print("error: --ckpt: give the checkpoint of a sizetransfer fit (or --combine size_curve.json files)",
              file=sys.stderr)
        return 2
    try:
        from sizetransfer.diagnose.__main__ import checked_ckpt, evaluation_data, run_config, target_of

        ckpt = Path(args.ckpt)
        saved = checked_ckpt(ckpt)
        try:
            config = SizeCurveConfig(sites=args.sites, response_sites=args.response_sites, pairs=args.pairs,
                                     pair_sites=args.pair_sites, chunk_sites=args.chunk_sites,
                                     probe_sigma=args.probe_sigma)
        except ValueError as err:  # "<field> must ..." -> "--<option> must ..."
            field, rest = str(err).split(" ", 1)
            raise ValueError(f"--{field.replace('_', '-')} {rest}") from None
        cfg, run_dir = run_config(ckpt)
        key, train, eval_sizes, teacher_seed = target_of(
            cfg, SimpleNamespace(target=args.target, train_size=args.train_size, ckpt=ckpt))
        kind = "ising" if key == "ising" else "fdlf"
        out = Path(args.out) if args.out else (run_dir / "size_curve" if run_dir is not None else None)
        if out is None:
            raise ValueError("--out: the checkpoint is not inside a run directory; say where to write the size curve")
        fdlf_eval, ising_eval = evaluation_configs(cfg)
        evaluation = ising_eval if kind == "ising" else fdlf_eval
        data = evaluation_data(cfg, key, train, eval_sizes, teacher_seed)
        from sizetransfer.diagnose import load_student
        from sizetransfer.evaluation.callback import _sigma_min
        from sizetransfer.evaluation.score import model_score
        from sizetransfer.size_curve.core import check_curve_sizes, size_curve
        from sizetransfer.size_curve.output import summary, write_size_curve

        student = load_student(ckpt)  # its receptive radius bounds the sizes from below
        radius = int(student.receptive_radius)
        try:
            sizes = check_curve_sizes(kind, data, args.sizes or [L for L in DEFAULT_SIZES[kind] if L >= train],
                                      radius, evaluation)
        except ValueError as err:
            raise ValueError(f"--{err}") from None
        name = f"{ckpt} (step {saved['global_step']}, receptive radius {radius})"

        def write(partial: dict) -> dict:
            return write_size_curve({**partial, "student": name, "train_size": train}, out)

        results = size_curve(model_score(student), data, kind=kind, sizes=sizes, receptive_radius=radius,
                             evaluation=evaluation, config=config, sigma_min=_sigma_min(student),
                             near=fdlf_eval.near, far=fdlf_eval.far, progress=not args.no_progress, on_size=write)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results.update(student=name, train_size=train)
    files = write_size_curve(results, out)
    print(summary(results))
    print(f"written: {', '.join(files.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
