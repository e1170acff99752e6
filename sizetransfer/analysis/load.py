"""Loading a sweep: its run directories and CSV outputs as pandas DataFrames.

:func:`collect_runs` reads the final evaluation of each finished run (the sweep runner writes its
``results.csv`` / ``generation.csv`` from it); :func:`load_sweep` reads a sweep directory
(``runs.csv``, ``results.csv``, ``generation.csv``, or the run directories of a sweep still running).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from sizetransfer.evaluation.far_share import far_share

#: Grid axes that are replicates (averaged over); every other axis identifies a cell.
REPLICATE_AXES = ("seed",)


#: Columns of ``runs.csv`` that are not grid axes.
RUN_COLUMNS = ("run", "status", "wall_s", "run_dir")


#: Columns of ``results.csv`` / ``generation.csv`` that are not metrics.
ROW_KEYS = ("L", "sigma")


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def parse_run_key(key: str) -> dict[str, Any]:
    """``"teacher=medium_range-blocks=1-seed=0"`` -> ``{"teacher": "medium_range", "blocks": 1, "seed": 0}``.

    Axis names are identifiers; values may contain ``-`` (e.g. ``lr=1e-3``, ``shift=-1``).
    Returns ``{}`` for a name that is not a run key.
    """
    parts = re.split(r"-(?=[A-Za-z_][\w.]*=)", key)
    out: dict[str, Any] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            return {}
        out[name] = _parse_value(value)
    return out


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _train_size(cfg: dict) -> float:
    value = _get(cfg, "data.init_args.train_size")
    if value is None:
        value = _get(cfg, "data.init_args.L")
    return float(value) if value is not None else math.nan


def _eval_steps(run_dir: Path) -> list[int]:
    steps = []
    for d in (run_dir / "eval").glob("step=*"):
        m = re.fullmatch(r"step=(\d+)", d.name)
        if m and (d / "metrics.csv").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect_runs(runs: Iterable[tuple[str, dict[str, Any], Path, int]], axes: list[str]
                 ) -> dict[str, tuple[list[str], list[dict]]]:
    """The final evaluation of finished runs as table rows, the one reader of run directories.

    ``runs``: ``(run key, axis values, run directory, step of its final evaluation)``; the rows of
    ``<run dir>/eval/step=<step>/metrics.csv`` become ``results`` rows ``run, <axes>, step,
    receptive_radius`` (from ``metrics.json``; empty when unknown) and the metrics; the rows of
    ``generation.csv`` there become ``generation`` rows ``run, <axes>`` and its columns. Values stay
    as written (CSV text). Returns ``{"results": (columns, rows), "generation": (columns, rows)}``,
    columns in order of first appearance.
    """
    out = {"results": (["run", *axes, "step", "receptive_radius"], []), "generation": (["run", *axes], [])}
    for key, values, run_dir, step in runs:
        final = Path(run_dir) / "eval" / f"step={step}"
        meta = json.loads((final / "metrics.json").read_text()) if (final / "metrics.json").is_file() else {}
        head = {"run": key, **values}
        tables = {"results": (final / "metrics.csv", {"step": meta.get("step", step),
                                                      "receptive_radius": meta.get("receptive_radius", "")}),
                  "generation": (final / "generation.csv", {})}
        for name, (path, extra) in tables.items():
            if not path.is_file():
                continue
            columns, rows = out[name]
            shares = _far_shares(meta) if name == "results" else {}
            for row in _read_rows(path):
                if shares and "teacher_far_share" not in row and str(row.get("L")) in shares:
                    row = {**row, "teacher_far_share": shares[str(row["L"])]}
                columns += [c for c in row if c not in columns]
                rows.append({**head, **extra, **row})
    return out


def _far_shares(meta: dict) -> dict[str, str]:
    """``{L: teacher far share}`` from the teacher profiles of an FDLF ``metrics.json`` written before
    ``metrics.csv`` had a ``teacher_far_share`` column (empty when it has no profiles or far shells)."""
    far = (meta.get("config") or {}).get("far")
    if meta.get("target") != "fdlf" or not far:
        return {}
    return {str(p["L"]): repr(far_share(p["teacher"], far)) for p in meta.get("profiles", [])
            if "L" in p and "teacher" in p}


def _frame(columns: list[str], rows: list[dict]) -> pd.DataFrame:
    """Rows of CSV text as pandas reads the same table from a file (types inferred)."""
    if not rows:
        return pd.DataFrame()
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    text.seek(0)
    return pd.read_csv(text)


def _scan(sweep_dir: Path) -> dict[str, pd.DataFrame]:
    """Frames of a sweep still running (no ``runs.csv``): one run per subdirectory named by a run
    key; done when ``eval/step=<trainer.max_steps>/metrics.csv`` exists, else pending."""
    runs, finished = [], []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        axes = parse_run_key(d.name)
        if not axes or not ((d / "config.yaml").is_file() or (d / "eval").is_dir()):
            continue
        max_steps = _get(_read_yaml(d / "config.yaml"), "trainer.max_steps")
        steps = _eval_steps(d)
        done = bool(steps) and (max_steps is None or int(max_steps) in steps)
        runs.append({"run": d.name, "status": "done" if done else "pending", "wall_s": math.nan,
                     "run_dir": str(d), **axes})
        if done:
            finished.append((d.name, axes, d, int(max_steps) if max_steps is not None else steps[-1]))
    names = list(dict.fromkeys(a for _, axes, _, _ in finished for a in axes))
    collected = collect_runs(finished, names)
    frames = {"runs": pd.DataFrame(runs, columns=list(RUN_COLUMNS) if not runs else None),
              "results": _frame(*collected["results"])}
    if collected["generation"][1]:
        frames["generation"] = _frame(*collected["generation"])
    return frames


def load_sweep(sweep_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read a sweep directory into ``{"runs", "results"[, "generation"]}`` DataFrames.

    ``runs.csv`` / ``results.csv`` / ``generation.csv`` are read when present; a sweep without
    ``runs.csv`` (still running) is read from its run directories. ``results`` and
    ``generation`` keep only the rows of finished runs (``status == "done"``) and gain a
    ``train_size`` column (from each run's ``config.yaml``: ``data.init_args.train_size`` or
    ``…L``; NaN when unknown) unless it is a grid axis. ``frames["runs"].attrs["axes"]`` lists the
    grid axes in order and ``.attrs["sweep_dir"]`` the directory.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir {str(sweep_dir)!r} is not a directory")
    if (sweep_dir / "runs.csv").is_file():
        frames = {"runs": pd.read_csv(sweep_dir / "runs.csv")}
        results = sweep_dir / "results.csv"
        frames["results"] = pd.read_csv(results) if results.is_file() and results.stat().st_size else pd.DataFrame()
        if (sweep_dir / "generation.csv").is_file():
            frames["generation"] = pd.read_csv(sweep_dir / "generation.csv")
    else:
        frames = _scan(sweep_dir)
    runs = frames["runs"]
    if "status" not in runs:
        runs["status"] = "done"
    axes = [c for c in runs.columns if c not in RUN_COLUMNS]
    if not axes and "step" in frames["results"]:
        cols = list(frames["results"].columns)
        axes = cols[1:cols.index("step")]
    done = set(runs.loc[runs["status"] == "done", "run"]) if "run" in runs else None
    train = {}
    for run in runs.get("run", []):
        train[run] = _train_size(_read_yaml(sweep_dir / str(run) / "config.yaml"))
    for key in ("results", "generation"):
        if key not in frames:
            continue
        df = frames[key]
        if done is not None and "run" in df:
            df = df[df["run"].isin(done)].reset_index(drop=True)
        if "train_size" not in df and "run" in df:
            df["train_size"] = df["run"].map(train).astype(float)
        frames[key] = df
    runs.attrs["axes"] = axes
    runs.attrs["sweep_dir"] = str(sweep_dir)
    return frames


def axes(frames: dict[str, pd.DataFrame]) -> list[str]:
    """Grid axes of the sweep, in grid order."""
    return list(frames["runs"].attrs.get("axes", []))


def runs_status(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """``{"done": n, "pending": n, "failed": n, "total": n}`` (other statuses are added as found)."""
    counts = {"done": 0, "pending": 0, "failed": 0}
    runs = frames["runs"]
    if "status" in runs:
        for status, n in runs["status"].value_counts().items():
            counts[str(status)] = int(n)
    counts["total"] = int(len(runs))
    return counts


def status_line(frames: dict[str, pd.DataFrame]) -> str:
    c = runs_status(frames)
    rest = ", ".join(f"{n} {s}" for s, n in c.items() if s not in ("done", "total") and n)
    return f"{c['done']}/{c['total']} runs done" + (f" ({rest})" if rest else "")

