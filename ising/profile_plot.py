"""Response profiles of the critical-posterior smoothed score (paper Fig. 4 mechanism).

``python -m ising.profile_plot --out DIR [--n-observations N] [--n-sweeps S] [--quick]``

Runs :func:`ising.response_profile` at L = 32 (default) for β/β_c ∈ {0.6, 0.8, 0.9, 0.95, 1.0}
and σ ∈ {1, 2, 4, 8}, r = 0..8, and writes to DIR:
* ``profile.csv``: one row per (β/β_c, σ, r): ρ(r) and its standard error, the normalised
  ρ(r)/ρ(1) with its jackknife error over observations, σ⁴ ρ(r), n_observations;
* ``profile.json``: the same plus the settings, timings and the mixing check;
* ``profile.png``: ρ(r)/ρ(1) against r, one curve per β, one panel per σ, with error bars.
Mixing check at β_c: every σ again with the two other Wolff-with-field schedules among
cluster_every ∈ {0 (heat-bath alone), 4, 1} on the same observations (same seed, hence the
same y); the paired difference of ρ(r) from the default sampler is reported with its error.
matplotlib (imported here only) is needed for the PNG; tqdm, if installed, shows progress.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from ising import BETA_C, stats
from ising.posterior import default_cluster_every, response_profile

BETA_RELS = (0.6, 0.8, 0.9, 0.95, 1.0)
SIGMAS = (1.0, 2.0, 4.0, 8.0)
R_MAX = 8


def normalised(rho_obs):
    """ρ(r)/ρ(1) as a ratio of means over observations, jackknife over observations.

    rho_obs (n, r_max+1) → (ratio, stderr), each (r_max+1,)."""
    x = rho_obs.T
    return stats.jackknife(lambda a, b: a / b, x, np.broadcast_to(x[1], x.shape), n_blocks=x.shape[1],
                           axis=-1, chain_axis=None)


def _bar(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="profile")


def run(out, L=32, n_observations=128, n_sweeps=1000, seed=0, beta_rels=BETA_RELS, sigmas=SIGMAS):
    """Compute every profile and the β_c mixing check; write CSV, JSON and PNG into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, mixing = [], []
    bar = _bar((len(beta_rels) + 2) * len(sigmas))
    kw = dict(n_observations=n_observations, n_sweeps=n_sweeps, details=True)
    for b in beta_rels:
        for k, sigma in enumerate(sigmas):
            rho, err, d = response_profile(L, b * BETA_C, sigma, R_MAX, seed=seed + k, **kw)
            ratio, ratio_err = normalised(d["rho_obs"])
            rows.append(dict(beta_rel=b, sigma=sigma, rho=rho.tolist(), stderr=err.tolist(), ratio=ratio.tolist(),
                             ratio_stderr=ratio_err.tolist(), n_observations=d["n_observations"],
                             chain_stderr_rms=np.sqrt((d["chain_stderr_obs"] ** 2).mean(0)).tolist(),
                             seconds=d["seconds"], cluster_every=default_cluster_every(sigma)))
            if b == 1.0:
                for other in sorted({0, 1, 4} - {default_cluster_every(sigma)}):  # the other schedules
                    _, _, d2 = response_profile(L, BETA_C, sigma, R_MAX, seed=seed + k, cluster_every=other, **kw)
                    diff = d2["rho_obs"] - d["rho_obs"]  # same y (same seed), different chains
                    mixing.append(dict(sigma=sigma, default_cluster_every=rows[-1]["cluster_every"],
                                       other_cluster_every=other, rho_other=d2["rho_obs"].mean(0).tolist(),
                                       diff=diff.mean(0).tolist(),
                                       diff_stderr=(diff.std(0, ddof=1) / math.sqrt(diff.shape[0])).tolist(),
                                       seconds=d2["seconds"]))
                    if bar is not None:
                        bar.update(1)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    settings = dict(L=L, n_observations=n_observations, n_sweeps=n_sweeps, thin=4, n_blocks=8, seed=seed,
                    r_max=R_MAX, beta_c=BETA_C)
    (out / "profile.json").write_text(json.dumps(dict(settings=settings, profiles=rows, mixing_check=mixing),
                                                 indent=1))
    with open(out / "profile.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["beta_over_beta_c", "sigma", "r", "rho", "rho_stderr", "rho_over_rho1", "rho_over_rho1_stderr",
                    "sigma4_rho", "n_observations"])
        for row in rows:
            for r in range(R_MAX + 1):
                w.writerow([row["beta_rel"], row["sigma"], r, f"{row['rho'][r]:.6e}", f"{row['stderr'][r]:.3e}",
                            f"{row['ratio'][r]:.5f}", f"{row['ratio_stderr'][r]:.5f}",
                            f"{row['sigma'] ** 4 * row['rho'][r]:.5f}", row["n_observations"]])
    plot(rows, out / "profile.png", L)
    return rows, mixing


def plot(rows, path, L):
    """ρ(r)/ρ(1) against r = 1..r_max: one panel per σ, one curve per β/β_c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigmas = sorted({r["sigma"] for r in rows})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.6 * len(sigmas), 3.4), sharey=True, squeeze=False)
    r = np.arange(1, R_MAX + 1)
    for ax, sigma in zip(axes[0], sigmas):
        for row in (x for x in rows if x["sigma"] == sigma):
            ax.errorbar(r, row["ratio"][1:], yerr=row["ratio_stderr"][1:], marker="o", ms=3, capsize=2,
                        label=f"β/β_c = {row['beta_rel']:g}")
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.set_title(f"σ = {sigma:g}")
        ax.set_xlabel("Chebyshev distance r")
    axes[0, 0].set_ylabel("ρ(r) / ρ(1)")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Smoothed-score response profile of the Ising posterior, L = {L} (Eq. 22, averaged over y)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ising.profile_plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--L", type=int, default=32)
    p.add_argument("--n-observations", type=int, default=128)
    p.add_argument("--n-sweeps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="L = 16, 16 observations, 200 sweeps (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.L, a.n_observations, a.n_sweeps = 16, 16, 200
    t = time.perf_counter()
    rows, mixing = run(a.out, a.L, a.n_observations, a.n_sweeps, a.seed)
    print(f"wrote {a.out}/profile.csv, profile.json, profile.png in {time.perf_counter() - t:.0f} s")
    print("beta/bc sigma " + " ".join(f"{'rho%d/rho1' % r:>14}" for r in (2, 4, 6, 8)) + f"{'rho(6)':>20}")
    for row in rows:
        cells = " ".join(f"{row['ratio'][r]:7.3f}±{row['ratio_stderr'][r]:.3f}" for r in (2, 4, 6, 8))
        print(f"{row['beta_rel']:7g} {row['sigma']:5g} {cells} {row['rho'][6]:10.3e}±{row['stderr'][6]:.1e}")
    print("mixing at beta_c: rho(r) [other sampler − default] (paired, same y)")
    for m in mixing:
        print(f"  sigma={m['sigma']:g} cluster_every {m['default_cluster_every']}→{m['other_cluster_every']}: "
              + " ".join(f"r={r}: {m['diff'][r]:+.2e}±{m['diff_stderr'][r]:.1e}" for r in (1, 4, 6, 8)))


if __name__ == "__main__":
    main()
