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
"""
from __future__ import annotations

import io
import logging
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

log = logging.getLogger(__name__)

#: Critical inverse temperature of the 2D square-lattice Ising model, ½ ln(1 + √2).
BETA_C = 0.5 * math.log1p(math.sqrt(2.0))
#: Grid axes that are replicates (averaged over); every other axis identifies a cell.
REPLICATE_AXES = ("seed",)
#: Columns of ``runs.csv`` that are not grid axes.
RUN_COLUMNS = ("run", "status", "wall_s", "run_dir")
#: Columns of ``results.csv`` / ``generation.csv`` that are not metrics.
ROW_KEYS = ("L", "sigma")
#: Teacher display order (the paper's) and names.
TEACHER_NAMES = {
    "simple_local": "Short-range simple",
    "complex_local": "Short-range structured",
    "medium_range": "Medium-range",
    "complex_long": "Long-range stress",
}
KINDS = ("size", "radius", "ising", "generation", "hard_valid")
NEAR, FAR = "near_response_error", "far_response_error"


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------

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


def _scan(sweep_dir: Path) -> dict[str, pd.DataFrame]:
    """Frames of a sweep still running (no ``runs.csv``): one run per subdirectory named by a run
    key; done when ``eval/step=<trainer.max_steps>/metrics.csv`` exists, else pending."""
    runs, results, generation = [], [], []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        axes = parse_run_key(d.name)
        if not axes or not ((d / "config.yaml").is_file() or (d / "eval").is_dir()):
            continue
        cfg = _read_yaml(d / "config.yaml")
        max_steps = _get(cfg, "trainer.max_steps")
        steps = _eval_steps(d)
        done = bool(steps) and (max_steps is None or int(max_steps) in steps)
        runs.append({"run": d.name, "status": "done" if done else "pending", "wall_s": math.nan,
                     "run_dir": str(d), **axes})
        if not done:
            continue
        step = int(max_steps) if max_steps is not None else steps[-1]
        eval_dir = d / "eval" / f"step={step}"
        radius = math.nan
        try:
            import json

            radius = json.loads((eval_dir / "metrics.json").read_text()).get("receptive_radius", math.nan)
        except (OSError, ValueError):
            blocks = _get(cfg, "model.blocks")
            radius = 2 * int(blocks) + 2 if blocks is not None else math.nan
        metrics = pd.read_csv(eval_dir / "metrics.csv")
        head = pd.DataFrame({"run": d.name, **axes, "step": step, "receptive_radius": radius},
                            index=metrics.index)
        results.append(pd.concat([head, metrics], axis=1))
        if (eval_dir / "generation.csv").is_file():
            gen = pd.read_csv(eval_dir / "generation.csv")
            generation.append(pd.concat([pd.DataFrame({"run": d.name, **axes}, index=gen.index), gen], axis=1))
    frames = {"runs": pd.DataFrame(runs, columns=list(RUN_COLUMNS) if not runs else None),
              "results": pd.concat(results, ignore_index=True) if results else pd.DataFrame()}
    if generation:
        frames["generation"] = pd.concat(generation, ignore_index=True)
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


# ----------------------------------------------------------------------------------------------
# aggregation helpers
# ----------------------------------------------------------------------------------------------

def rmse_column(results: pd.DataFrame, sigma_eval: float = 0.05) -> str:
    """The clean-score RMSE column at ``sigma_eval`` (``rmse_sigma0.05``), else the first
    ``rmse*`` column; ValueError when there is none."""
    name = f"rmse_sigma{sigma_eval:g}"
    if name in results:
        return name
    cands = [c for c in results.columns if c.startswith("rmse")]
    if not cands:
        raise ValueError(f"results have no clean-score RMSE column (rmse_sigma{sigma_eval:g}); "
                         f"columns: {list(results.columns)}")
    return cands[0]


def _cell_axes(frames, exclude=()) -> list[str]:
    """Non-replicate grid axes present in the results (the cell identity), minus ``exclude``."""
    res = frames["results"]
    return [a for a in axes(frames) if a not in REPLICATE_AXES and a not in exclude and a in res]


def _teacher_rank(values: pd.Series) -> pd.Series:
    order = {k: i for i, k in enumerate(TEACHER_NAMES)}
    return values.map(lambda v: order.get(v, len(order)))


def _sort(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    by = [b for b in by if b in df]
    if not by:
        return df.reset_index(drop=True)
    return df.sort_values(by, key=lambda s: _teacher_rank(s) if s.name == "teacher" else s,
                          kind="stable").reset_index(drop=True)


def aggregate(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and s.e.m. (``ddof = 1``) over the rows of each ``by`` group: columns ``by``,
    ``<metric>_mean``, ``<metric>_sem`` per metric and ``n_seeds`` (distinct runs in the group)."""
    if df.empty:
        return pd.DataFrame(columns=by + [f"{m}_{s}" for m in metrics for s in ("mean", "sem")] + ["n_seeds"])
    groups = df.groupby(by, dropna=False, sort=False) if by else [((), df)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").dropna()
            row[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
            row[f"{m}_sem"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        row["n_seeds"] = int(g["run"].nunique()) if "run" in g else len(g)
        rows.append(row)
    return _sort(pd.DataFrame(rows), by)


def format_pm(mean: float, sem: float = math.nan, digits: int = 3) -> str:
    """``0.412 ± 0.013``: ``digits`` decimals, more where needed to show two significant digits
    of the s.e.m. (at most 6); ``0.412`` alone when the s.e.m. is NaN (one seed); ``—`` for NaN;
    ``3.21e-05 ± 4e-06`` (significant digits) when 0 < |mean| < 1e-3."""
    if mean is None or not np.isfinite(mean):
        return "—"
    if 0 < abs(mean) < 1e-3:  # tiny values (e.g. Ising responses at large σ): significant digits
        return f"{mean:.3g}" + (f" ± {sem:.2g}" if sem is not None and np.isfinite(sem) else "")
    if sem is None or not np.isfinite(sem):
        return f"{mean:.{digits}f}"
    if sem > 0:
        digits = min(max(digits, 1 - math.floor(math.log10(sem))), 6)
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table (no external dependency)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines) + "\n"


def _shown(table: pd.DataFrame, names: list[str]) -> list[str]:
    """The cell axes worth naming in a label: ``teacher`` always, other axes where they vary."""
    return [n for n in names if n == "teacher" or (n in table and table[n].nunique() > 1)]


def _label(row: dict | pd.Series, names: list[str], paper: bool = False) -> str:
    parts = []
    for n in names:
        v = row[n]
        if n == "teacher":
            parts.append(f"{TEACHER_NAMES[v]} ({v})" if paper and v in TEACHER_NAMES else str(v))
        elif n == "blocks":
            parts.append(f"B={v}")
        else:
            parts.append(f"{n}={v}")
    return ", ".join(parts) if parts else "all"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _metric_title(m: str) -> str:
    if m.startswith("rmse_sigma"):
        return f"clean-score relative RMSE (σ = {m[len('rmse_sigma'):]})"
    return {NEAR: "near-response relative error", FAR: "far-response relative error",
            "mae": "local-observable MAE", "teacher_floor": "teacher floor"}.get(m, m)


def _panels(n: int, width: float = 4.4, height: float = 3.5):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axs = fig.subplots(rows, cols, squeeze=False)
    for ax in axs.flat[n:]:
        ax.set_visible(False)
    return fig, list(axs.flat[:n])


def _finish(fig: Figure, title: str, path) -> Figure:
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """PNG of ``fig`` at ``path`` (a file object, or a file path written atomically)."""
    if hasattr(path, "write"):
        fig.savefig(path, format="png", dpi=110)
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _atomic_write(Path(path), buf.getvalue())


def png_bytes(fig: Figure) -> bytes:
    """The PNG encoding of ``fig`` (for ``IPython.display.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary name beside ``path``, then ``os.replace`` it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:10]}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _set_size_axis(ax, sizes) -> None:
    sizes = sorted({int(s) for s in sizes})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _sweep_name(frames) -> str:
    d = frames["runs"].attrs.get("sweep_dir")
    return Path(d).name if d else "sweep"


# ----------------------------------------------------------------------------------------------
# size (Fig 1) and hard_valid (Fig 3): errors vs L
# ----------------------------------------------------------------------------------------------

def _size_metrics(frames, sigma_eval) -> list[str]:
    res = frames["results"]
    return [rmse_column(res, sigma_eval)] + [m for m in (NEAR, FAR) if m in res]


def size_table(frames: dict[str, pd.DataFrame], sigma_eval: float = 0.05) -> pd.DataFrame:
    """Fig 1 / Fig 3 numbers: per cell (non-seed grid axes, e.g. teacher [× blocks]) × L, mean and
    s.e.m. over seeds of the clean-score RMSE at ``sigma_eval`` and the near/far response errors."""
    res = frames["results"]
    cell = _cell_axes(frames)
    return aggregate(res, cell + ["L"], _size_metrics(frames, sigma_eval))


def size_ratios(frames: dict[str, pd.DataFrame], sigma_eval: float = 0.05) -> pd.DataFrame:
    """Per cell: RMSE(L_max) / RMSE(L_train), a ratio of seed means. ``L_train`` is the run's
    training size when it is among the evaluated sizes, else the smallest evaluated L."""
    res = frames["results"]
    col = rmse_column(res, sigma_eval)
    cell = _cell_axes(frames)
    table = size_table(frames, sigma_eval)
    rows = []
    for key, g in (table.groupby(cell, sort=False) if cell else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        sel = res
        for a, v in zip(cell, key):
            sel = sel[sel[a] == v]
        train = pd.to_numeric(sel.get("train_size", pd.Series(dtype=float)), errors="coerce").dropna().unique()
        l_train = int(train[0]) if len(train) == 1 and int(train[0]) in set(g["L"]) else int(g["L"].min())
        l_max = int(g["L"].max())
        at = g.set_index("L")[f"{col}_mean"]
        rows.append({**dict(zip(cell, key)), "L_train": l_train, "L_max": l_max,
                     "rmse_L_train": at[l_train], "rmse_L_max": at[l_max], "ratio": at[l_max] / at[l_train]})
    return _sort(pd.DataFrame(rows), cell)


def teacher_ratio(frames: dict[str, pd.DataFrame], numerator: str = "complex_long",
                  denominator: str = "simple_local", sigma_eval: float = 0.05) -> pd.DataFrame:
    """Per L (and other non-seed axes): mean RMSE of ``numerator`` teacher / that of
    ``denominator`` (empty when either teacher is absent)."""
    table = size_table(frames, sigma_eval)
    col = f"{rmse_column(frames['results'], sigma_eval)}_mean"
    if "teacher" not in table or not {numerator, denominator} <= set(table["teacher"]):
        return pd.DataFrame(columns=["L", "ratio"])
    other = [a for a in _cell_axes(frames, exclude=("teacher",))] + ["L"]
    a = table[table["teacher"] == numerator].set_index(other)[col]
    b = table[table["teacher"] == denominator].set_index(other)[col]
    out = (a / b).dropna().rename("ratio").reset_index()
    out.insert(len(other), f"rmse_{numerator}", a.reindex(out.set_index(other).index).to_numpy())
    out.insert(len(other) + 1, f"rmse_{denominator}", b.reindex(out.set_index(other).index).to_numpy())
    return out


def size_markdown(frames: dict[str, pd.DataFrame], sigma_eval: float = 0.05, title: str = "Size sweep (Fig. 1)") -> str:
    table = size_table(frames, sigma_eval)
    cell = _cell_axes(frames)
    sizes = sorted(table["L"].unique())
    out = [f"### {title}\n", f"{status_line(frames)}; mean ± s.e.m. over seeds (n = seeds per row).\n"]
    for m in _size_metrics(frames, sigma_eval):
        rows = []
        for key, g in (table.groupby(cell, sort=False) if cell else [((), table)]):
            g = g.set_index("L")
            key = key if isinstance(key, tuple) else (key,)
            rows.append([_label(dict(zip(cell, key)), _shown(table, cell), paper=True)]
                        + [format_pm(g.at[L, f"{m}_mean"], g.at[L, f"{m}_sem"]) if L in g.index else "—" for L in sizes]
                        + [int(g["n_seeds"].min())])
        out += [f"**{_metric_title(m)}**\n", markdown_table(["cell"] + [f"L = {L}" for L in sizes] + ["n"], rows)]
    ratios = size_ratios(frames, sigma_eval)
    out += ["**RMSE(L_max) / RMSE(L_train)**\n",
            markdown_table(["cell", "L_train", "L_max", "ratio"],
                           [[_label(r, _shown(table, cell), paper=True), r["L_train"], r["L_max"], f"{r['ratio']:.3f}"]
                            for _, r in ratios.iterrows()])]
    tr = teacher_ratio(frames, sigma_eval=sigma_eval)
    if len(tr):
        other = [c for c in tr.columns if c not in ("ratio",) and not c.startswith("rmse_")]
        out += ["**RMSE complex_long / simple_local**\n",
                markdown_table(other + ["ratio"], [[_num(r[c]) for c in other] + [f"{r['ratio']:.3f}"]
                                                   for _, r in tr.iterrows()])]
    return "\n".join(out)


def size_figure(frames: dict[str, pd.DataFrame], path=None, sigma_eval: float = 0.05,
                title: str = "Size extrapolation (Fig. 1)") -> Figure:
    """Panels: clean-score RMSE vs L, then near and far response error vs L; one line per cell,
    error bars = s.e.m. over seeds, the training size marked."""
    table = size_table(frames, sigma_eval)
    metrics = _size_metrics(frames, sigma_eval)
    cell = _cell_axes(frames)
    fig, axs = _panels(len(metrics))
    ratios = size_ratios(frames, sigma_eval)
    for ax, m in zip(axs, metrics):
        for k, (key, g) in enumerate(table.groupby(cell, sort=False) if cell else [((), table)]):
            ax.errorbar(g["L"], g[f"{m}_mean"], yerr=g[f"{m}_sem"].fillna(0), fmt="o-", capsize=3,
                        color=f"C{k}", label=_label(g.iloc[0], _shown(table, cell)))
        for L in sorted(set(ratios["L_train"])):
            ax.axvline(L, color="grey", lw=0.8, ls=":")
        _set_size_axis(ax, table["L"])
        ax.set(xlabel="lattice size L", ylabel="relative error", title=_metric_title(m))
        ax.set_ylim(bottom=0)
        if m == FAR:
            ax.axhline(1.0, color="grey", lw=0.6, ls="--")
    axs[0].legend(fontsize=8)
    return _finish(fig, f"{title} — {_sweep_name(frames)}: {status_line(frames)}", path)


def hard_valid_table(frames, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Fig 3 numbers (3D teachers): as :func:`size_table`, cells teacher × blocks."""
    return size_table(frames, sigma_eval)


def hard_valid_markdown(frames, sigma_eval: float = 0.05) -> str:
    return size_markdown(frames, sigma_eval, title="Hard-valid 3D sweep (Fig. 3)")


def hard_valid_figure(frames, path=None, sigma_eval: float = 0.05) -> Figure:
    return size_figure(frames, path, sigma_eval, title="Hard-valid 3D size extrapolation (Fig. 3)")


# ----------------------------------------------------------------------------------------------
# radius (Fig 2, Table 3)
# ----------------------------------------------------------------------------------------------

def _radius_frame(frames, L):
    res = frames["results"]
    L = int(res["L"].max()) if L is None else int(L)
    if "receptive_radius" not in res or res["receptive_radius"].isna().all():
        if "blocks" not in res:
            raise ValueError("results have neither receptive_radius nor blocks")
        res = res.assign(receptive_radius=2 * res["blocks"] + 2)
    return res[res["L"] == L], L


def radius_table(frames: dict[str, pd.DataFrame], L: int | None = None, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Table 3 numbers at lattice size ``L`` (default: the largest evaluated): per teacher ×
    blocks (R = 2B + 2), mean and s.e.m. over seeds of the clean-score RMSE and near/far
    response errors; column ``L``."""
    res, L = _radius_frame(frames, L)
    cell = _cell_axes(frames, exclude=("blocks",))
    by = cell + ["receptive_radius"] + (["blocks"] if "blocks" in res else [])
    table = aggregate(res, by, _size_metrics(frames, sigma_eval))
    table.insert(len(by), "L", L)
    return _sort(table, cell + ["receptive_radius"])


def radius_change(frames: dict[str, pd.DataFrame], L: int | None = None, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Per teacher and metric: seed means at the smallest and largest radius and the relative
    change (mean(R_max) − mean(R_min)) / mean(R_min)."""
    table = radius_table(frames, L, sigma_eval)
    cell = _cell_axes(frames, exclude=("blocks",))
    rows = []
    for key, g in (table.groupby(cell, sort=False) if cell else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        lo, hi = g.loc[g["receptive_radius"].idxmin()], g.loc[g["receptive_radius"].idxmax()]
        for m in _size_metrics(frames, sigma_eval):
            a, b = lo[f"{m}_mean"], hi[f"{m}_mean"]
            rows.append({**dict(zip(cell, key)), "metric": m, "R_min": int(lo["receptive_radius"]),
                         "R_max": int(hi["receptive_radius"]), "mean_R_min": a, "mean_R_max": b,
                         "relative_change": (b - a) / a})
    return pd.DataFrame(rows)


def radius_markdown(frames: dict[str, pd.DataFrame], L: int | None = None, sigma_eval: float = 0.05) -> str:
    table = radius_table(frames, L, sigma_eval)
    change = radius_change(frames, L, sigma_eval)
    cell = _cell_axes(frames, exclude=("blocks",))
    radii = sorted(table["receptive_radius"].unique())
    bl = table.drop_duplicates("receptive_radius").set_index("receptive_radius").get("blocks")
    head = [f"B = {bl[R]} (R = {R})" if bl is not None else f"R = {R}" for R in radii]
    out = [f"### Receptive-field sweep at L = {int(table['L'].iloc[0])} (Fig. 2, Table 3)\n",
           f"{status_line(frames)}; mean ± s.e.m. over seeds; n = seeds per cell (min–max)"
           + (f"; change = relative change from R = {radii[0]} to R = {radii[-1]}.\n" if len(radii) > 1 else ".\n")]
    for m in _size_metrics(frames, sigma_eval):
        rows = []
        for key, g in (table.groupby(cell, sort=False) if cell else [((), table)]):
            key = key if isinstance(key, tuple) else (key,)
            g = g.set_index("receptive_radius")
            ch = change[(change["metric"] == m)]
            for a, v in zip(cell, key):
                ch = ch[ch[a] == v]
            n = f"{g['n_seeds'].min()}–{g['n_seeds'].max()}" if g["n_seeds"].nunique() > 1 else str(g["n_seeds"].iloc[0])
            rows.append([_label(dict(zip(cell, key)), _shown(table, cell), paper=True)]
                        + [format_pm(g.at[R, f"{m}_mean"], g.at[R, f"{m}_sem"]) if R in g.index else "—" for R in radii]
                        + [f"{ch['relative_change'].iloc[0]:+.1%}" if len(ch) and len(g) > 1 else "—", n])
        out += [f"**{_metric_title(m)}**\n", markdown_table(["teacher"] + head + ["change", "n"], rows)]
    return "\n".join(out)


def radius_figure(frames: dict[str, pd.DataFrame], path=None, L: int | None = None, sigma_eval: float = 0.05) -> Figure:
    """Fig 2: clean-score RMSE, near and far response error vs receptive radius R at L, one line
    per teacher, error bars = s.e.m. over seeds."""
    table = radius_table(frames, L, sigma_eval)
    metrics = _size_metrics(frames, sigma_eval)
    cell = _cell_axes(frames, exclude=("blocks",))
    fig, axs = _panels(len(metrics), width=4.2)
    radii = sorted(int(r) for r in table["receptive_radius"].unique())
    for ax, m in zip(axs, metrics):
        for k, (key, g) in enumerate(table.groupby(cell, sort=False) if cell else [((), table)]):
            ax.errorbar(g["receptive_radius"], g[f"{m}_mean"], yerr=g[f"{m}_sem"].fillna(0), fmt="o-",
                        capsize=3, color=f"C{k}", label=_label(g.iloc[0], _shown(table, cell)))
        ax.set_xticks(radii, [str(r) for r in radii])
        ax.set(xlabel="receptive radius R = 2B + 2", ylabel="relative error", title=_metric_title(m))
        ax.set_ylim(bottom=0)
        if m == FAR:
            ax.axhline(1.0, color="grey", lw=0.6, ls="--")
    axs[0].legend(fontsize=8)
    L = int(table["L"].iloc[0])
    return _finish(fig, f"Receptive-field sweep at L = {L} (Fig. 2) — {_sweep_name(frames)}: {status_line(frames)}", path)


# ----------------------------------------------------------------------------------------------
# ising (Fig 4)
# ----------------------------------------------------------------------------------------------

def response_radius(results: pd.DataFrame) -> int:
    """r* = the largest r with a ``response_exact_r<r>`` column (the receptive radius)."""
    rs = [int(m.group(1)) for c in results.columns if (m := re.fullmatch(r"response_exact_r(\d+)", c))]
    if not rs:
        raise ValueError("results have no response_exact_r<r> column (not an Ising sweep)")
    return max(rs)


def _with_beta_ratio(res: pd.DataFrame) -> pd.DataFrame:
    if "beta_over_beta_c" in res:
        return res
    if "beta" in res:
        return res.assign(beta_over_beta_c=res["beta"] / BETA_C)
    raise ValueError("Ising results need a beta_over_beta_c (or beta) axis column")


def ising_table(frames: dict[str, pd.DataFrame], r: int | None = None) -> pd.DataFrame:
    """Fig 4 numbers at probe distance ``r`` (default :func:`response_radius`): per β/β_c × σ × L
    (× other non-seed axes), exact boundary response ρ(r) (seed mean; ``exact_stderr`` =
    √(Σ stderr²)/n, the standard error of that mean), learned ρ(r) (seed mean, ``learned_sem``
    across seeds, NaN with one seed) and ``ratio`` = learned / exact."""
    res = _with_beta_ratio(frames["results"])
    r = response_radius(res) if r is None else int(r)
    ex, err, le = f"response_exact_r{r}", f"response_exact_stderr_r{r}", f"response_learned_r{r}"
    missing = [c for c in (ex, le) if c not in res]
    if missing:
        raise ValueError(f"r={r}: results lack {missing}; available r: {response_radius(res)} and below")
    cell = [a for a in _cell_axes(frames, exclude=("beta", "beta_over_beta_c"))]
    by = cell + ["beta_over_beta_c", "sigma", "L"]
    rows = []
    for key, g in res.groupby(by, dropna=False, sort=False):
        n = len(g)
        stderr = float(np.sqrt((g[err] ** 2).sum()) / n) if err in g else math.nan
        rows.append({**dict(zip(by, key)), "r": r, "exact": float(g[ex].mean()), "exact_stderr": stderr,
                     "learned": float(g[le].mean()),
                     "learned_sem": float(g[le].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                     "ratio": float(g[le].mean() / g[ex].mean()), "n_seeds": int(g["run"].nunique())})
    return _sort(pd.DataFrame(rows), by)


def ising_markdown(frames: dict[str, pd.DataFrame], r: int | None = None) -> str:
    t = ising_table(frames, r)
    cell = [c for c in t.columns if c not in ("beta_over_beta_c", "sigma", "L", "r", "exact", "exact_stderr",
                                              "learned", "learned_sem", "ratio", "n_seeds")]
    r = int(t["r"].iloc[0])
    rows = [[_num(x[c]) for c in cell] + [f"{x['beta_over_beta_c']:g}", f"{x['sigma']:g}", int(x["L"]),
             format_pm(x["exact"], x["exact_stderr"], 4), format_pm(x["learned"], x["learned_sem"], 4),
             f"{x['ratio']:.3f}", int(x["n_seeds"])] for _, x in t.iterrows()]
    return "\n".join([f"### Critical Ising boundary response ρ(r = {r}) (Fig. 4)\n",
                      f"{status_line(frames)}; exact ± its Monte Carlo standard error; learned ± s.e.m. "
                      "over seeds (when several); ratio = learned / exact.\n",
                      markdown_table(cell + ["β/β_c", "σ", "L", "exact ρ", "learned ρ", "ratio", "n"], rows)])


def ising_figure(frames: dict[str, pd.DataFrame], path=None, r: int | None = None) -> Figure:
    """Fig 4: one panel per probe σ; exact ρ(r*) (error bars = its stderr) and learned ρ(r*) vs
    β/β_c; smallest L solid, larger L dashed; log y axis when every value is positive."""
    t = ising_table(frames, r)
    r = int(t["r"].iloc[0])
    sigmas = sorted(t["sigma"].unique())
    sizes = sorted(t["L"].unique())
    cell = [c for c in t.columns if c not in ("beta_over_beta_c", "sigma", "L", "r", "exact", "exact_stderr",
                                              "learned", "learned_sem", "ratio", "n_seeds")]
    fig, axs = _panels(len(sigmas), width=4.0)
    for ax, sigma in zip(axs, sigmas):
        sel = t[t["sigma"] == sigma]
        values = pd.concat([sel["exact"], sel["learned"]])
        for k, (key, gc) in enumerate(sel.groupby(cell, sort=False) if cell else [((), sel)]):
            suffix = f" {_label(gc.iloc[0], _shown(t, cell))}" if _shown(t, cell) else ""
            for j, L in enumerate(sizes):
                g = gc[gc["L"] == L].sort_values("beta_over_beta_c")
                if g.empty:
                    continue
                ls = "-" if j == 0 else "--"
                ax.errorbar(g["beta_over_beta_c"], g["exact"], yerr=g["exact_stderr"].fillna(0), fmt="o", ls=ls,
                            capsize=3, color=f"C{2 * k}", label=f"exact L={L}{suffix}")
                ax.errorbar(g["beta_over_beta_c"], g["learned"], yerr=g["learned_sem"].fillna(0), fmt="s", ls=ls,
                            mfc="none", capsize=3, color=f"C{2 * k + 1}", label=f"learned L={L}{suffix}")
        if len(values) and (values > 0).all():
            ax.set_yscale("log")
        else:
            ax.axhline(0.0, color="grey", lw=0.6)
        ax.set(xlabel="β / β_c", ylabel=f"boundary response ρ(r={r})", title=f"probe σ = {sigma:g}")
    axs[0].legend(fontsize=7)
    return _finish(fig, f"Critical Ising boundary response at r = {r} (Fig. 4) — {_sweep_name(frames)}: "
                        f"{status_line(frames)}", path)


# ----------------------------------------------------------------------------------------------
# generation (Table 5)
# ----------------------------------------------------------------------------------------------

def _generation_by(frames) -> list[str]:
    gen = frames["generation"]
    by = [a for a in axes(frames) if a not in REPLICATE_AXES and a in gen]
    by += [c for c in ("sampler", "steps") if c in gen and gen[c].nunique() > 1]
    return by


def generation_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 5 numbers: per teacher (× other non-seed axes, × sampler/steps when they vary) × L,
    mean and s.e.m. over seeds of the local-observable MAE and of the teacher floor (teacher
    samples vs teacher samples)."""
    gen = frames["generation"]
    metrics = [m for m in ("mae", "teacher_floor") if m in gen]
    return aggregate(gen, _generation_by(frames) + ["L"], metrics)


def generation_markdown(frames: dict[str, pd.DataFrame]) -> str:
    t = generation_table(frames)
    by = _generation_by(frames)
    lo, hi = int(t["L"].min()), int(t["L"].max())
    sizes = [lo, hi] if hi != lo else [lo]
    rows = []
    for key, g in (t.groupby(by, sort=False) if by else [((), t)]):
        g = g.set_index("L")
        key = key if isinstance(key, tuple) else (key,)
        cells = [format_pm(g.at[L, "mae_mean"], g.at[L, "mae_sem"]) if L in g.index else "—" for L in sizes]
        floor = [format_pm(g.at[L, "teacher_floor_mean"]) if "teacher_floor_mean" in g and L in g.index else "—"
                 for L in sizes]
        rows.append([_label(dict(zip(by, key)), _shown(t, by), paper=True)] + cells + floor + [int(g["n_seeds"].min())])
    head = (["teacher"] + [f"MAE at L = {L}" for L in sizes] + [f"teacher floor L = {L}" for L in sizes] + ["n"])
    return "\n".join(["### Generation-level local observables (Table 5)\n",
                      f"{status_line(frames)}; MAE over local observables, mean ± s.e.m. over seeds.\n",
                      markdown_table(head, rows)])


def generation_figure(frames: dict[str, pd.DataFrame], path=None) -> Figure:
    """Table 5 as bars: per teacher, MAE at the smallest and largest L (error bars = s.e.m.),
    the teacher floor as a black tick on each bar."""
    t = generation_table(frames)
    by = _generation_by(frames)
    lo, hi = int(t["L"].min()), int(t["L"].max())
    sizes = [lo, hi] if hi != lo else [lo]
    groups = list(t.groupby(by, sort=False)) if by else [((), t)]
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(sizes)
    for j, L in enumerate(sizes):
        xs, ys, es, fl = [], [], [], []
        for i, (_, g) in enumerate(groups):
            g = g[g["L"] == L]
            if g.empty:
                continue
            xs.append(i + (j - (len(sizes) - 1) / 2) * width)
            ys.append(g["mae_mean"].iloc[0])
            es.append(0 if pd.isna(g["mae_sem"].iloc[0]) else g["mae_sem"].iloc[0])
            fl.append(g["teacher_floor_mean"].iloc[0] if "teacher_floor_mean" in g else np.nan)
        ax.bar(xs, ys, width * 0.95, yerr=es, capsize=3, color=f"C{j}", label=f"L = {L}")
        ax.plot(xs, fl, "_", color="k", ms=18, mew=2, label="teacher floor" if j == 0 else None)
    ax.set_xticks(range(len(groups)), [_label(g.iloc[0], _shown(t, by)) for _, g in groups], fontsize=8)
    ax.set(ylabel="local-observable MAE")
    ax.legend(fontsize=8)
    return _finish(fig, f"Generation local observables (Table 5) — {_sweep_name(frames)}: {status_line(frames)}", path)


# ----------------------------------------------------------------------------------------------
# draw
# ----------------------------------------------------------------------------------------------

def _fdlf_missing(frames) -> str | None:
    res = frames["results"]
    if res.empty:
        return "no finished runs in results"
    if "L" not in res or not any(c.startswith("rmse") for c in res.columns):
        return "results have no L / rmse_sigma* columns (not an FDLF/3D sweep)"
    return None


def missing_data(frames: dict[str, pd.DataFrame], kind: str) -> str | None:
    """Why ``kind`` cannot be drawn from ``frames`` (None when it can)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind in ("size", "hard_valid"):
        return _fdlf_missing(frames)
    if kind == "radius":
        why = _fdlf_missing(frames)
        if why is None and "receptive_radius" not in frames["results"] and "blocks" not in frames["results"]:
            why = "results have no receptive_radius / blocks column"
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
        _atomic_write(csv, table.to_csv(index=False))
        _atomic_write(md, MARKDOWN[kind](frames))
        FIGURES[kind](frames, png)
        written += [png, csv, md]
    return written
