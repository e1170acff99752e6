"""Benchmarks: ``python -m sizetransfer.bench [teachers|training|recipe|all] [--quick]``.

Prints tables with ratios against baselines measured in the same run; ``recipe`` trains the shipped
recipe on the Gaussian teacher and compares it with the closed-form smoothed score.
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.bench", description=__doc__)
    p.add_argument("what", nargs="?", default="all", choices=["teachers", "training", "recipe", "all"])
    p.add_argument("--quick", action="store_true", help="short runs (smoke test of the bench itself)")
    args = p.parse_args(argv)
    from sizetransfer.fit import quiet_libraries

    quiet_libraries()
    if args.what in ("teachers", "all"):
        from sizetransfer.benchmarks.teachers import run as run_teachers

        run_teachers(quick=args.quick)
    if args.what in ("training", "all"):
        from sizetransfer.benchmarks.training import run as run_training

        run_training(quick=args.quick)
    if args.what in ("recipe", "all"):
        from sizetransfer.benchmarks.recipe import run as run_recipe

        run_recipe(quick=args.quick)


if __name__ == "__main__":
    main()
