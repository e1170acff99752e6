"""Tables of a sweep: mean ± s.e.m. over seeds per cell (pandas aggregation), as DataFrames
(``<kind>_table``) and markdown (``<kind>_markdown``).
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ising import BETA_C
from sizetransfer.analysis.load import REPLICATE_AXES, axes, status_line
from sizetransfer.evaluation.far_share import FAR_SHARE_MIN

#: Grid axes that set the receptive radius (``model.blocks`` in the paper's sweep, ``model.radius`` or ``model.dilations`` in the
#: radius-isolated one): never a cell of a radius table, whose rows are per receptive radius.
RADIUS_AXES = ("blocks", "radius", "dilations")


#: Teacher display order (the paper's) and names.
TEACHER_NAMES = {
    "simple_local": "Short-range simple",
    "complex_local": "Short-range structured",
    "medium_range": "Medium-range",
    "complex_long": "Long-range stress",
}


NEAR, FAR = "near_response_error", "far_response_error"

#: The teacher's far share per row (``metrics.csv``; the loader fills it from ``metrics.json`` for older runs).
FAR_SHARE = "teacher_far_share"

#: Shown under a far-response table where some cells are blank.
FAR_NOTE = (f"— : the teacher's far shells hold < {FAR_SHARE_MIN:.0%} of its off-diagonal response, so a relative "
            f"far-response error measures nothing there.\n")


def meaningful_far(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the far-response error blanked (NaN) in the rows whose teacher's far shells hold
    < ``FAR_SHARE_MIN`` of its response (short-range teachers); unchanged where the share is unknown."""
    if FAR not in results or FAR_SHARE not in results:
        return results
    share = pd.to_numeric(results[FAR_SHARE], errors="coerce")
    return results.assign(**{FAR: results[FAR].where(~(share < FAR_SHARE_MIN))})


def _far_blanked(frames, table: pd.DataFrame) -> bool:
    """Whether some cell of ``table`` lost its far-response error to :func:`meaningful_far`."""
    res = frames["results"]
    return f"{FAR}_mean" in table and bool(table[f"{FAR}_mean"].isna().any()) and FAR_SHARE in res


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


def groups(df: pd.DataFrame, by: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """``(key, rows)`` per value of the ``by`` columns, in order of first appearance (keys are tuples;
    one group of all rows when ``by`` is empty)."""
    if not by:
        return [((), df)]
    return [(key if isinstance(key, tuple) else (key,), g) for key, g in df.groupby(by, sort=False)]


def aggregate(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and s.e.m. (``ddof = 1``; NaN for one value) over the rows of each ``by`` group: columns
    ``by``, ``<metric>_mean``, ``<metric>_sem`` per metric and ``n_seeds`` (distinct runs in the group)."""
    columns = by + [f"{m}_{s}" for m in metrics for s in ("mean", "sem")] + ["n_seeds"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    keys = [df[b] for b in by] if by else np.zeros(len(df), dtype=int)
    stats = df[metrics].apply(pd.to_numeric, errors="coerce").groupby(keys, dropna=False, sort=False).agg(["mean", "sem"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    runs = df["run"] if "run" in df else pd.Series(np.arange(len(df)), index=df.index)
    stats["n_seeds"] = runs.groupby(keys, dropna=False, sort=False).nunique()
    return _sort(stats.reset_index(drop=not by)[columns], by)


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


def _size_metrics(frames, sigma_eval) -> list[str]:
    res = frames["results"]
    return [rmse_column(res, sigma_eval)] + [m for m in (NEAR, FAR) if m in res]


def size_table(frames: dict[str, pd.DataFrame], sigma_eval: float = 0.05) -> pd.DataFrame:
    """Fig 1 / Fig 3 numbers: per cell (non-seed grid axes, e.g. teacher [× blocks]) × L, mean and
    s.e.m. over seeds of the clean-score RMSE at ``sigma_eval`` and the near/far response errors."""
    res = meaningful_far(frames["results"])
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
    for key, g in groups(table, cell):
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
        for key, g in groups(table, cell):
            g = g.set_index("L")
            rows.append([_label(dict(zip(cell, key)), _shown(table, cell), paper=True)]
                        + [format_pm(g.at[L, f"{m}_mean"], g.at[L, f"{m}_sem"]) if L in g.index else "—" for L in sizes]
                        + [int(g["n_seeds"].min())])
        out += [f"**{_metric_title(m)}**\n", markdown_table(["cell"] + [f"L = {L}" for L in sizes] + ["n"], rows)]
        if m == FAR and _far_blanked(frames, table):
            out.append(FAR_NOTE)
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


def hard_valid_table(frames, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Fig 3 numbers (3D teachers): as :func:`size_table`, cells teacher × blocks."""
    return size_table(frames, sigma_eval)


def hard_valid_markdown(frames, sigma_eval: float = 0.05) -> str:
    return size_markdown(frames, sigma_eval, title="Hard-valid 3D sweep (Fig. 3)")


def _radius_frame(frames, L):
    res = frames["results"]
    L = int(res["L"].max()) if L is None else int(L)
    if "receptive_radius" not in res or res["receptive_radius"].isna().all():
        if "blocks" not in res:
            raise ValueError("results have neither receptive_radius nor blocks")
        res = res.assign(receptive_radius=2 * res["blocks"] + 2)
    return meaningful_far(res[res["L"] == L]), L


def radius_table(frames: dict[str, pd.DataFrame], L: int | None = None, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Table 3 numbers at lattice size ``L`` (default: the largest evaluated): per teacher ×
    blocks (R = 2B + 2), mean and s.e.m. over seeds of the clean-score RMSE and near/far
    response errors; column ``L``."""
    res, L = _radius_frame(frames, L)
    cell = _cell_axes(frames, exclude=RADIUS_AXES)
    by = cell + ["receptive_radius"] + (["blocks"] if "blocks" in res else [])
    table = aggregate(res, by, _size_metrics(frames, sigma_eval))
    table.insert(len(by), "L", L)
    return _sort(table, cell + ["receptive_radius"])


def radius_change(frames: dict[str, pd.DataFrame], L: int | None = None, sigma_eval: float = 0.05) -> pd.DataFrame:
    """Per teacher and metric: seed means at the smallest and largest radius and the relative
    change (mean(R_max) − mean(R_min)) / mean(R_min)."""
    table = radius_table(frames, L, sigma_eval)
    cell = _cell_axes(frames, exclude=RADIUS_AXES)
    rows = []
    for key, g in groups(table, cell):
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
    cell = _cell_axes(frames, exclude=RADIUS_AXES)
    radii = sorted(table["receptive_radius"].unique())
    bl = table.drop_duplicates("receptive_radius").set_index("receptive_radius").get("blocks")
    head = [f"B = {bl[R]} (R = {R})" if bl is not None else f"R = {R}" for R in radii]
    out = [f"### Receptive-field sweep at L = {int(table['L'].iloc[0])} (Fig. 2, Table 3)\n",
           f"{status_line(frames)}; mean ± s.e.m. over seeds; n = seeds per cell (min–max)"
           + (f"; change = relative change from R = {radii[0]} to R = {radii[-1]}.\n" if len(radii) > 1 else ".\n")]
    for m in _size_metrics(frames, sigma_eval):
        rows = []
        for key, g in groups(table, cell):
            g = g.set_index("receptive_radius")
            ch = change[(change["metric"] == m)]
            for a, v in zip(cell, key):
                ch = ch[ch[a] == v]
            n = f"{g['n_seeds'].min()}–{g['n_seeds'].max()}" if g["n_seeds"].nunique() > 1 else str(g["n_seeds"].iloc[0])
            rows.append([_label(dict(zip(cell, key)), _shown(table, cell), paper=True)]
                        + [format_pm(g.at[R, f"{m}_mean"], g.at[R, f"{m}_sem"]) if R in g.index else "—" for R in radii]
                        + [f"{ch['relative_change'].iloc[0]:+.1%}"
                           if len(ch) and len(g) > 1 and np.isfinite(ch["relative_change"].iloc[0]) else "—", n])
        out += [f"**{_metric_title(m)}**\n", markdown_table(["teacher"] + head + ["change", "n"], rows)]
        if m == FAR and _far_blanked(frames, table):
            out.append(FAR_NOTE)
    return "\n".join(out)


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
    g = res.groupby(by, dropna=False, sort=False)
    out = pd.DataFrame({"exact": g[ex].mean(), "learned": g[le].mean(), "learned_sem": g[le].sem(),
                        "n_seeds": g["run"].nunique()})
    # the exact response's own error: the mean over seeds of independent estimates
    out["exact_stderr"] = g[err].agg(lambda v: np.sqrt((v ** 2).sum()) / len(v)) if err in res else math.nan
    out["r"], out["ratio"] = r, out["learned"] / out["exact"]
    columns = ["r", "exact", "exact_stderr", "learned", "learned_sem", "ratio", "n_seeds"]
    return _sort(out.reset_index()[by + columns], by)


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
    for key, g in groups(t, by):
        g = g.set_index("L")
        cells = [format_pm(g.at[L, "mae_mean"], g.at[L, "mae_sem"]) if L in g.index else "—" for L in sizes]
        floor = [format_pm(g.at[L, "teacher_floor_mean"]) if "teacher_floor_mean" in g and L in g.index else "—"
                 for L in sizes]
        rows.append([_label(dict(zip(by, key)), _shown(t, by), paper=True)] + cells + floor + [int(g["n_seeds"].min())])
    head = (["teacher"] + [f"MAE at L = {L}" for L in sizes] + [f"teacher floor L = {L}" for L in sizes] + ["n"])
    return "\n".join(["### Generation-level local observables (Table 5)\n",
                      f"{status_line(frames)}; MAE over local observables, mean ± s.e.m. over seeds.\n",
                      markdown_table(head, rows)])

