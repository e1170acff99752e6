"""A size curve's files: ``size_curve.csv`` (the table), ``size_curve.json`` (everything) and ``size_curve.png``
(errors vs L on a log axis with the flatness fit; CPU seconds and peak memory vs L), written atomically."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sizetransfer.evaluation.report import format_table, write_results

#: Columns of the printed table (the CSV has all of them).
PRINTED = ("L", "n_samples", "n_sites", "rmse_sigma", "score_rmse", "near_response_error", "far_response_error",
           "cpu_s", "peak_rss_MiB")


def plot_size_curve(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Left: the RMSE columns and the near/far response errors vs L (log x axis), the least-squares line of
    the headline RMSE against ln L dashed; right: CPU seconds and peak RSS per size (log-log)."""
    rows = results["rows"]
    sizes = np.asarray([r["L"] for r in rows], dtype=np.float64)
    fig = Figure(figsize=(10.5, 4.0))
    ax, cost = fig.subplots(1, 2)
    keys = [k for k in results["columns"] if k.startswith(("rmse_", "score_rmse"))
            and not k.endswith("mc_floor")] + ["near_response_error", "far_response_error"]
    for key in keys:
        values = np.asarray([r.get(key, math.nan) for r in rows], dtype=np.float64)
        if np.isfinite(values).any():
            ax.plot(sizes, values, "o-" if key == results["headline"] else "s:", label=key)
    fit = results.get("flatness")
    if fit:
        y = np.asarray([r[results["headline"]] for r in rows], dtype=np.float64)
        x = np.log(sizes)
        ax.plot(sizes, y.mean() + fit["slope"] * (x - x.mean()), "k--", lw=0.8,
                label=f"slope {fit['slope']:+.3g} ± {fit['slope_se']:.2g} per ln L")
    for a in (ax, cost):
        a.set_xscale("log")
        a.set_xticks(sizes, [str(int(s)) for s in sizes])
        a.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="L", ylabel="relative error", title=results["target_name"])
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    cost.plot(sizes, [r["cpu_s"] for r in rows], "o-", label="CPU seconds")
    cost.set(xlabel="L", ylabel="CPU seconds", yscale="log",
             title=f"total {results['total_cpu_s'] / 60:.1f} CPU-min")
    mem = cost.twinx()
    mem.plot(sizes, [r["peak_rss_MiB"] for r in rows], "s--", color="tab:red", label="peak RSS (MiB)")
    mem.set_ylabel("peak RSS (MiB)", color="tab:red")
    partial = "" if results.get("complete", True) else f" (partial: {len(rows)} sizes so far)"
    fig.suptitle(results.get("student", "") + partial, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def write_size_curve(results: dict[str, Any], out: str | os.PathLike) -> dict[str, str]:
    """Write the three files into ``out`` (each atomically); returns their paths. The figure too is drawn for
    partial results (``"complete": False``, written after each size), so the files always agree."""
    out = Path(out)
    write_results(results, out, "size_curve", "size_curve", plot_size_curve)
    return {k: str(out / f"size_curve.{k}") for k in ("csv", "json", "png")}


def summary(results: dict[str, Any]) -> str:
    """The printed table (the main columns), the cost line and the flatness line."""
    names = [c for c in results["columns"] if c in PRINTED or c.startswith("rmse_sigma")]
    table = format_table(f"size curve ({results['target_name']}), {results.get('student', '')}", names,
                         results["rows"])
    cost = (f"total {results['total_cpu_s']:.0f} CPU-s ({results['total_cpu_s'] / 60:.1f} CPU-min), "
            f"peak RSS {results['peak_rss_MiB']:.0f} MiB ({results['memory_method']})")
    return "\n".join([table, cost, results["flatness_line"]])
