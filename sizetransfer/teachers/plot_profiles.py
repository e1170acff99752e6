"""Response profiles of the four FDLF families: ``python -m sizetransfer.teachers.plot_profiles --out DIR``.

For each family, the exact clean-score response profile ρ(r) = Σ_{d∞(i,j)=r} |∂s_i/∂x_j| at
L = 64, averaged over teacher samples and probe sites (``mean_response_profile``). Writes
``DIR/response_profiles.csv`` (family, r, rho, rho_normalised = ρ(r) / Σ_{r'≥1} ρ(r'), tail =
normalised tail beyond r) and ``DIR/response_profiles.png`` (ρ(r)/Σ_{r'≥1} ρ(r'), r ≥ 1, log
scale), and prints the calibration table (R_0.05, tail beyond 4 and 8).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from sizetransfer.lattice import normalised_tail, response_range
from sizetransfer.teachers import FDLF_KEYS, make_teacher
from sizetransfer.teachers.base import mean_response_profile


def profiles(L: int = 64, n_samples: int = 8, n_sites: int = 8, seed: int = 0,
             teacher_seed: int = 0) -> dict[str, torch.Tensor]:
    """family -> mean response profile (L // 2 + 1,) of ``make_teacher(family, seed=teacher_seed)``."""
    return {key: mean_response_profile(make_teacher(key, seed=teacher_seed), L, n_samples=n_samples,
                                       n_sites=n_sites, seed=seed) for key in FDLF_KEYS}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sizetransfer.teachers.plot_profiles", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--L", type=int, default=64, help="lattice size (default 64)")
    p.add_argument("--samples", type=int, default=8, help="teacher samples per family (default 8)")
    p.add_argument("--sites", type=int, default=8, help="probe sites per sample (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of samples and probe sites (default 0)")
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the teachers' parameters (default 0)")
    args = p.parse_args(argv)
    for name in ("L", "samples", "sites"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)

    profs = profiles(args.L, args.samples, args.sites, args.seed, args.teacher_seed)
    with open(args.out / "response_profiles.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["family", "r", "rho", "rho_normalised", "tail"])
        for key, prof in profs.items():
            norm, tail = prof / prof[1:].sum(), normalised_tail(prof)
            for r in range(prof.numel()):
                w.writerow([key, r, f"{prof[r]:.6e}", f"{norm[r]:.6e}", f"{tail[r]:.6e}"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    print(f"{'family':<14} {'R_0.05':>6} {'tail>4':>7} {'tail>8':>7}   (L={args.L}, "
          f"{args.samples} samples x {args.sites} sites)")
    for key, prof in profs.items():
        tail = normalised_tail(prof)
        r = int(response_range(prof))
        print(f"{key:<14} {r:>6d} {tail[4]:>7.3f} {tail[8]:>7.3f}")
        radii = torch.arange(1, prof.numel())
        ax.semilogy(radii, prof[1:] / prof[1:].sum(), marker="o", ms=3, label=f"{key} (R$_{{0.05}}$={r})")
    ax.set_xlabel("Chebyshev distance r")
    ax.set_ylabel(r"$\rho(r) / \sum_{r' \geq 1} \rho(r')$")
    ax.set_title(f"Exact clean-score response profiles, L = {args.L}")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "response_profiles.png", dpi=150)
    plt.close(fig)
    print(f"wrote {args.out / 'response_profiles.png'} and {args.out / 'response_profiles.csv'}")


if __name__ == "__main__":
    main()
