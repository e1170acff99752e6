"""``python -m sizetransfer.generate --ckpt runs/<name>/<time>/checkpoints/last.ckpt [--steps 256]``: Table 5 of a
trained student (generation-level local observables of its reverse process against teacher samples), without
training again: the same computation as the fit's ``generation`` callback, with its options taken from the run's
``config.yaml`` unless given here. Writes ``generation.csv``, ``generation.json`` and ``generation.png`` into
``<run dir>/generation/`` (or ``--out``; ``--out <run dir>/eval/step=<k>`` replaces the training-time table that
the sweep tables read). FDLF teachers only (docs/metrics.md, "Generation-level local observables")."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from sizetransfer.evaluation.generation import SAMPLERS, GenerationConfig


#: Defaults where neither the command line nor the run's config gives an option: those of GenerationConfig.
DEFAULTS = {f.name: f.default for f in fields(GenerationConfig)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.generate", description=(
        "Generation-level local observables (Table 5) of a trained student's reverse process against teacher "
        "samples. Options not given are the run's config.yaml generation.* values (else the defaults below)."))
    p.add_argument("--ckpt", required=True, help="checkpoint of a sizetransfer fit (checkpoints/*.ckpt)")
    p.add_argument("--sizes", type=int, nargs="+", help="lattice sizes L (default: the run's generation.sizes, "
                   "else the training size and the largest evaluated size)")
    p.add_argument("--n-samples", type=int, nargs="+", help="samples per size: one count, or one per size "
                   f"(default: the run's generation.n_samples, else {DEFAULTS['n_samples']})")
    p.add_argument("--steps", type=int, help="reverse steps σ_max → σ_min, then the Tweedie step to 0 (default: "
                   f"the run's generation.steps, else {DEFAULTS['steps']})")
    p.add_argument("--sampler", choices=sorted(SAMPLERS),
                   help=f"reverse sampler (default: the run's, else {DEFAULTS['sampler']})")
    corrector = p.add_mutually_exclusive_group()
    corrector.add_argument("--corrector-sigma-min", type=float, help="pc: Langevin corrector only at σ >= this "
                           f"(default: the run's, else {DEFAULTS['corrector_sigma_min']})")
    corrector.add_argument("--corrector-everywhere", action="store_true", help="pc: the corrector at every level")
    p.add_argument("--seed", type=int, help="seed of the reference samples and the reverse process (default: "
                   f"the run's, else {DEFAULTS['seed']})")
    p.add_argument("--floor-repeats", type=int, help="independent teacher sets of the noise floor (default: the "
                   f"run's, else {DEFAULTS['floor_repeats']})")
    p.add_argument("--out", help="output directory (default: <run dir>/generation)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def generation_config(args, cfg: dict, train: int, eval_sizes: list[int]) -> GenerationConfig:
    """The :class:`GenerationConfig` of the options, the run's ``generation.*`` keys and :data:`DEFAULTS`, in
    that order; its ValueErrors name the command-line option (``--steps must ...``)."""
    run = {k: v for k, v in (cfg.get("generation") or {}).items() if v is not None}
    sizes = args.sizes or run.get("sizes") or sorted({train, max([train, *eval_sizes])})
    n_samples = args.n_samples if args.n_samples is not None else run.get("n_samples", DEFAULTS["n_samples"])
    if isinstance(n_samples, list) and len(n_samples) == 1:
        n_samples = n_samples[0]
    if isinstance(n_samples, list) and args.sizes and args.n_samples is None and len(n_samples) != len(sizes):
        n_samples = DEFAULTS["n_samples"]  # the run's per-size counts do not fit the sizes asked for
    options = {"sizes": sizes, "n_samples": n_samples}
    for key in ("steps", "sampler", "corrector_sigma_min", "seed", "floor_repeats"):
        given = getattr(args, key)
        options[key] = given if given is not None else run.get(key, DEFAULTS[key])
    if args.corrector_everywhere:
        options["corrector_sigma_min"] = None
    for key in ("sigma_max", "sigma_min"):
        options[key] = run.get(key)
    try:
        return GenerationConfig(**options)
    except ValueError as err:  # "generation.<field> must ..." -> "--<option> must ..."
        text = str(err)
        if text.startswith("generation."):
            field, rest = text[len("generation."):].split(" ", 1)
            text = f"--{field.replace('_', '-')} {rest}"
        raise ValueError(text) from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from sizetransfer.diagnose.__main__ import checked_ckpt, evaluation_data, run_config, target_of

        ckpt = Path(args.ckpt)
        saved = checked_ckpt(ckpt)
        cfg, run_dir = run_config(ckpt)
        key, train, eval_sizes, teacher_seed = target_of(cfg, SimpleNamespace(target=None, train_size=None,
                                                                              ckpt=ckpt))
        if key == "ising":
            raise ValueError(f"--ckpt: {ckpt} is an Ising run; generation-level observables need an FDLF teacher")
        config = generation_config(args, cfg, train, eval_sizes)
        out = Path(args.out) if args.out else (run_dir / "generation" if run_dir is not None else None)
        if out is None:
            raise ValueError("--out: the checkpoint is not inside a run directory; say where to write the table")
        data = evaluation_data(cfg, key, train, eval_sizes, teacher_seed)
        for L in config.sizes:
            try:
                data.teacher.check_size(L)
            except ValueError as err:
                raise ValueError(f"--sizes: size {L} is invalid for teacher {key!r}: {err}") from None
        from sizetransfer.diagnose import load_student

        student = load_student(ckpt)
        sigma_max, sigma_min = config.schedule_range(student.noise)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from sizetransfer.evaluation.generation import evaluate_generation
    from sizetransfer.evaluation.plots import plot_generation
    from sizetransfer.evaluation.report import format_summary, write_results

    start = time.process_time()
    results = evaluate_generation(student.score, data, config, sigma_max=sigma_max, sigma_min=sigma_min,
                                  dtype=student.dtype, progress=not args.no_progress)
    results["step"] = int(saved["global_step"])
    results["receptive_radius"] = int(student.receptive_radius)
    results["cpu_s"] = time.process_time() - start
    write_results(results, out, "generation", "generation", plot_generation)
    print(format_summary(results))
    print(f"{config.steps} {config.sampler} steps, {results['cpu_s']:.0f} CPU-s; written: "
          f"{out / 'generation.csv'}, {out / 'generation.json'}, {out / 'generation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
