"""Tables and figures of a sweep (the paper's Figures 1-4, Tables 3 and 5) from its CSV outputs.

A sweep directory ``<root>/<name>/`` (written by :mod:`sizetransfer.sweep`, see the sweep contract)
holds ``runs.csv`` (one row per run: ``run, status, wall_s, run_dir`` and one column per grid axis,
e.g. ``teacher, blocks, seed``), ``results.csv`` (run × row of the run's final
``eval/step=<k>/metrics.csv``: ``run``, axis columns, ``step, receptive_radius, L`` [``, sigma``],
metrics) and, for generation runs, ``generation.csv``. :func:`load_sweep` reads them; while a sweep
is still running (no ``runs.csv`` yet) it reads the run directories ``<key>/`` themselves.

Conventions
-----------
* Replicates: the grid axis ``seed`` (independent training seeds). Every other grid axis, with
  ``L`` (and ``sigma`` for the Ising target), identifies a cell; cells report the mean over seeds
  and the standard error of the mean (s.e.m., ``ddof = 1``; NaN with a single seed) and
  ``n_seeds``, the number of finished runs in the cell.
* Only runs with ``status == "done"`` enter the tables (partial sweeps: the pending and failed
  runs are counted in the status line of every table and figure title).
* Metric columns: clean-score relative RMSE ``rmse_sigma<σ_eval>`` (default σ_eval = 0.05),
  ``near_response_error``, ``far_response_error`` (FDLF/3D); ``response_exact_r<r>``,
  ``response_exact_stderr_r<r>``, ``response_learned_r<r>`` (Ising); ``mae``, ``teacher_floor``
  (generation). Receptive radius R = 2B + 2 (column ``receptive_radius``).

Per kind there is a table function (``<kind>_table(frames) -> DataFrame``: long numeric table,
written to ``tables/<kind>.csv``), a markdown function (``<kind>_markdown(frames) -> str``:
``mean ± s.e.m.`` tables ready for the README, ``tables/<kind>.md``) and a figure function
(``<kind>_figure(frames, path=None) -> matplotlib Figure``, ``figures/<kind>.png``);
:func:`draw` writes all three for the kinds whose data are present. pandas and matplotlib only
(``Figure`` API, no pyplot, any backend); no torch import.

Modules: :mod:`~sizetransfer.analysis.load` (the sweep as DataFrames), :mod:`~sizetransfer.analysis.tables`
(mean ± s.e.m. tables and markdown), :mod:`~sizetransfer.analysis.figures`; this package re-exports
their public names and adds :func:`draw`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from ising import BETA_C  # noqa: F401  (re-exported)
from sizetransfer.analysis.load import (  # noqa: F401  (the package's public names)
    REPLICATE_AXES,
    RUN_COLUMNS,
    ROW_KEYS,
    parse_run_key,
    load_sweep,
    axes,
    runs_status,
    status_line,
)
from sizetransfer.analysis.tables import (  # noqa: F401  (the package's public names)
    TEACHER_NAMES,
    NEAR,
    FAR,
    rmse_column,
    aggregate,
    format_pm,
    markdown_table,
    size_table,
    size_ratios,
    teacher_ratio,
    size_markdown,
    hard_valid_table,
    hard_valid_markdown,
    radius_table,
    radius_change,
    radius_markdown,
    response_radius,
    ising_table,
    ising_markdown,
    generation_table,
    generation_markdown,
)
from sizetransfer.analysis.figures import (  # noqa: F401  (the package's public names)
    save_figure,
    png_bytes,
    size_figure,
    hard_valid_figure,
    radius_figure,
    ising_figure,
    generation_figure,
)
from sizetransfer.atomic import atomic_write

log = logging.getLogger(__name__)





KINDS = ("size", "radius", "ising", "generation", "hard_valid")


def _fdlf_missing(frames) -> str | None:
    res = frames["results"]
    if res.empty:
        return "no finished runs in results"
    if "L" not in res or not any(c.startswith("rmse") for c in res.columns):
        return "results have no L / rmse_sigma* columns (not an FDLF/3D sweep)"
    return None


def _hard_valid_runs(frames) -> bool:
    """Whether the sweep's runs use the 3D hard-valid teachers (``teacher`` column ``hard_valid_*``)."""
    res = frames["results"]
    return "teacher" in res and res["teacher"].astype(str).str.startswith("hard_valid").all()


def missing_data(frames: dict[str, pd.DataFrame], kind: str) -> str | None:
    """Why ``kind`` cannot be drawn from ``frames`` (None when it can)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind in ("size", "hard_valid"):
        why = _fdlf_missing(frames)
        if why is None and (kind == "hard_valid") != _hard_valid_runs(frames):
            why = ("the runs are 2D teachers (hard_valid is the 3D figure)" if kind == "hard_valid"
                   else "the runs are hard-valid 3D teachers (see the hard_valid kind)")
        return why
    if kind == "radius":
        why = _fdlf_missing(frames)
        res = frames["results"]
        if why is None and "receptive_radius" not in res and "blocks" not in res:
            why = "results have no receptive_radius / blocks column"
        elif why is None and res["receptive_radius" if "receptive_radius" in res and res["receptive_radius"].notna().any()
                                 else "blocks"].nunique() < 2:
            why = "every run has the same receptive radius (not a receptive-field sweep)"
        elif why is None and _hard_valid_runs(frames):
            why = "the runs are hard-valid 3D teachers (see the hard_valid kind)"
        return why
    if kind == "ising":
        res = frames["results"]
        if res.empty:
            return "no finished runs in results"
        if "sigma" not in res or not any(c.startswith("response_exact_r") for c in res.columns):
            return "results have no sigma / response_exact_r* columns (not an Ising sweep)"
        if "beta_over_beta_c" not in res and "beta" not in res:
            return "results have no beta_over_beta_c (or beta) axis column"
        return None
    gen = frames.get("generation")
    if gen is None or gen.empty or "mae" not in gen:
        return "no generation.csv with an mae column (runs wrote no eval/step=<k>/generation.csv)"
    return None


TABLES: dict[str, Callable[..., pd.DataFrame]] = {
    "size": size_table, "radius": radius_table, "ising": ising_table,
    "generation": generation_table, "hard_valid": hard_valid_table}


MARKDOWN: dict[str, Callable[..., str]] = {
    "size": size_markdown, "radius": radius_markdown, "ising": ising_markdown,
    "generation": generation_markdown, "hard_valid": hard_valid_markdown}


FIGURES: dict[str, Callable[..., Figure]] = {
    "size": size_figure, "radius": radius_figure, "ising": ising_figure,
    "generation": generation_figure, "hard_valid": hard_valid_figure}


def available_kinds(frames: dict[str, pd.DataFrame], kinds=KINDS) -> list[str]:
    return [k for k in kinds if missing_data(frames, k) is None]


def draw(sweep_dir: str | os.PathLike, kinds=None) -> list[Path]:
    """Write ``figures/<kind>.png``, ``tables/<kind>.csv`` and ``tables/<kind>.md`` under
    ``sweep_dir`` for each of ``kinds`` (default: all of :data:`KINDS`) whose data are present,
    each file atomically; kinds without data are skipped with a logged warning saying why.
    Returns the written paths."""
    kinds = list(KINDS if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"kinds must be among {KINDS}, got {bad}")
    sweep_dir = Path(sweep_dir)
    frames = load_sweep(sweep_dir)
    written: list[Path] = []
    for kind in kinds:
        why = missing_data(frames, kind)
        if why is not None:
            log.warning("analysis: skipping %r for %s: %s", kind, sweep_dir, why)
            continue
        table = TABLES[kind](frames)
        csv, md, png = (sweep_dir / "tables" / f"{kind}.csv", sweep_dir / "tables" / f"{kind}.md",
                        sweep_dir / "figures" / f"{kind}.png")
        atomic_write(csv, table.to_csv(index=False))
        atomic_write(md, MARKDOWN[kind](frames))
        FIGURES[kind](frames, png)
        written += [png, csv, md]
    return written
