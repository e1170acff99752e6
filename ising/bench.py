"""Benchmarks: ``python -m ising.bench [prior|posterior|all] [--quick]``.

Prints tables with ratios against baselines measured in the same run.
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ising.bench", description=__doc__)
    p.add_argument("what", nargs="?", default="all", choices=["prior", "posterior", "all"])
    p.add_argument("--quick", action="store_true", help="short runs (smoke test of the bench itself)")
    args = p.parse_args(argv)
    if args.what in ("prior", "all"):
        from ising._bench_prior import run as run_prior

        run_prior(quick=args.quick)
    if args.what in ("posterior", "all"):
        from ising._bench_posterior import run as run_posterior

        run_posterior(quick=args.quick)


if __name__ == "__main__":
    main()
