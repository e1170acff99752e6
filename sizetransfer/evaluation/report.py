"""An evaluation's results as files, logger rows and a printed summary (layout: docs/outputs.md).

``results`` is the plain dict an evaluation function returns (:func:`~sizetransfer.evaluation.fdlf.evaluate_fdlf`,
:func:`~sizetransfer.evaluation.ising_eval.evaluate_ising`,
:func:`~sizetransfer.evaluation.generation.evaluate_generation`) with ``step`` and ``receptive_radius``
added. Files are written atomically to ``<run dir>/eval/step=<k>/``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from sizetransfer.atomic import atomic_output
from sizetransfer.evaluation.fdlf import sigma_name


def columns(results: dict[str, Any]) -> list[str]:
    """Table columns: generation's own; else L (and σ for the Ising target), then the metrics."""
    if "columns" in results:
        return list(results["columns"])
    return ["L"] + (["sigma"] if results["target"] == "ising" else []) + results["metric_keys"]


def _write_table(path: Path, names: Sequence[str], rows: list[dict]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(names))
            writer.writeheader()
            writer.writerows(rows)


def write_results(results: dict[str, Any], out: Path, stem: str, figure: str, plot) -> None:
    """``<stem>.csv`` (the rows), ``<stem>.json`` (everything) and ``<figure>.png`` (``plot(results, path)``)."""
    out = Path(out)
    _write_table(out / f"{stem}.csv", columns(results), results["rows"])
    with atomic_output(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=str))
    with atomic_output(out / f"{figure}.png") as tmp:
        plot(results, tmp)


def logged_metrics(results: dict[str, Any], prefix: str, *, skip_nan: bool = True) -> dict[str, float]:
    """``{"<prefix>/<metric>[_sigma<σ>]/L=<L>": value}`` of every row (NaN values left out when ``skip_nan``,
    e.g. ``rmse_bulk`` where the bulk is empty)."""
    metrics = {}
    for row in results["rows"]:
        suffix = f"_sigma{sigma_name(row['sigma'])}" if "sigma" in row else ""
        for key in results["metric_keys"]:
            value = float(row[key])
            if not (skip_nan and math.isnan(value)):
                metrics[f"{prefix}/{key}{suffix}/L={row['L']}"] = value
    return metrics


def format_table(title: str, names: Sequence[str], rows: list[dict]) -> str:
    """Fixed-width text table (floats to 4 significant digits) under ``title``."""
    cells = [list(names)] + [[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in names]
                             for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    return "\n".join([title] + ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells])


def format_summary(results: dict[str, Any]) -> str:
    """The printed summary of a size-extrapolation or generation evaluation."""
    if "observables" not in results:
        return format_table(f"size extrapolation ({results['target_name']}), step {results['step']}",
                            columns(results), results["rows"])
    cfg = results["config"]
    names = ["L", "mae", "teacher_floor"] + [k for k in results["metric_keys"] if k.endswith("_error")]
    title = (f"generation ({results['target_name']}, {cfg['sampler']}, {cfg['steps']} steps, "
             f"n_samples {cfg['n_samples']}), step {results['step']}")
    return format_table(title, names, results["rows"])
