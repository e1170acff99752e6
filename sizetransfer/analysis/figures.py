"""Figures of a sweep (matplotlib ``Figure`` API: no pyplot, any backend): ``<kind>_figure``."""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sizetransfer.analysis.load import status_line
from sizetransfer.analysis.tables import (FAR, FAR_SHARE_MIN, RADIUS_AXES, _far_blanked, _cell_axes, _generation_by, _label, _metric_title, _shown, _size_metrics,
                                         generation_table, groups, ising_table, radius_table, size_ratios,
                                         size_table)
from sizetransfer.atomic import atomic_write


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
    atomic_write(Path(path), buf.getvalue())


def png_bytes(fig: Figure) -> bytes:
    """The PNG encoding of ``fig`` (for ``IPython.display.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _set_size_axis(ax, sizes) -> None:
    sizes = sorted({int(s) for s in sizes})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _far_axes(ax, frames, table) -> None:
    """The far-response panel's reference line at 1 (a model with no far response) and, where some cells
    are blank (:func:`~sizetransfer.analysis.tables.meaningful_far`), a note saying why."""
    ax.axhline(1.0, color="grey", lw=0.6, ls="--")
    if _far_blanked(frames, table):
        ax.text(0.02, 0.02, f"not shown: teachers with < {FAR_SHARE_MIN:.0%} of their\nresponse in the far shells",
                transform=ax.transAxes, fontsize=7, color="grey", va="bottom")


def _sweep_name(frames) -> str:
    d = frames["runs"].attrs.get("sweep_dir")
    return Path(d).name if d else "sweep"


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
        for k, (key, g) in enumerate(groups(table, cell)):
            ax.errorbar(g["L"], g[f"{m}_mean"], yerr=g[f"{m}_sem"].fillna(0), fmt="o-", capsize=3,
                        color=f"C{k}", label=_label(g.iloc[0], _shown(table, cell)))
        for L in sorted(set(ratios["L_train"])):
            ax.axvline(L, color="grey", lw=0.8, ls=":")
        _set_size_axis(ax, table["L"])
        ax.set(xlabel="lattice size L", ylabel="relative error", title=_metric_title(m))
        ax.set_ylim(bottom=0)
        if m == FAR:
            _far_axes(ax, frames, table)
    axs[0].legend(fontsize=8)
    return _finish(fig, f"{title} — {_sweep_name(frames)}: {status_line(frames)}", path)


def hard_valid_figure(frames, path=None, sigma_eval: float = 0.05) -> Figure:
    return size_figure(frames, path, sigma_eval, title="Hard-valid 3D size extrapolation (Fig. 3)")


def radius_figure(frames: dict[str, pd.DataFrame], path=None, L: int | None = None, sigma_eval: float = 0.05) -> Figure:
    """Fig 2: clean-score RMSE, near and far response error vs receptive radius R at L, one line
    per teacher, error bars = s.e.m. over seeds."""
    table = radius_table(frames, L, sigma_eval)
    metrics = _size_metrics(frames, sigma_eval)
    cell = _cell_axes(frames, exclude=RADIUS_AXES)
    fig, axs = _panels(len(metrics), width=4.2)
    radii = sorted(int(r) for r in table["receptive_radius"].unique())
    for ax, m in zip(axs, metrics):
        for k, (key, g) in enumerate(groups(table, cell)):
            ax.errorbar(g["receptive_radius"], g[f"{m}_mean"], yerr=g[f"{m}_sem"].fillna(0), fmt="o-",
                        capsize=3, color=f"C{k}", label=_label(g.iloc[0], _shown(table, cell)))
        ax.set_xticks(radii, [str(r) for r in radii])
        ax.set(xlabel="receptive radius R", ylabel="relative error", title=_metric_title(m))
        ax.set_ylim(bottom=0)
        if m == FAR:
            _far_axes(ax, frames, table)
    axs[0].legend(fontsize=8)
    L = int(table["L"].iloc[0])
    return _finish(fig, f"Receptive-field sweep at L = {L} (Fig. 2) — {_sweep_name(frames)}: {status_line(frames)}", path)


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
        for k, (key, gc) in enumerate(groups(sel, cell)):
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


def generation_figure(frames: dict[str, pd.DataFrame], path=None) -> Figure:
    """Table 5 as bars: per teacher, MAE at the smallest and largest L (error bars = s.e.m.),
    the teacher floor as a black tick on each bar."""
    t = generation_table(frames)
    by = _generation_by(frames)
    lo, hi = int(t["L"].min()), int(t["L"].max())
    sizes = [lo, hi] if hi != lo else [lo]
    cells = groups(t, by)
    fig = Figure(figsize=(max(5.0, 1.6 * len(cells) + 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(sizes)
    for j, L in enumerate(sizes):
        xs, ys, es, fl = [], [], [], []
        for i, (_, g) in enumerate(cells):
            g = g[g["L"] == L]
            if g.empty:
                continue
            xs.append(i + (j - (len(sizes) - 1) / 2) * width)
            ys.append(g["mae_mean"].iloc[0])
            es.append(0 if pd.isna(g["mae_sem"].iloc[0]) else g["mae_sem"].iloc[0])
            fl.append(g["teacher_floor_mean"].iloc[0] if "teacher_floor_mean" in g else np.nan)
        ax.bar(xs, ys, width * 0.95, yerr=es, capsize=3, color=f"C{j}", label=f"L = {L}")
        ax.plot(xs, fl, "_", color="k", ms=18, mew=2, label="teacher floor" if j == 0 else None)
    ax.set_xticks(range(len(cells)), [_label(g.iloc[0], _shown(t, by)) for _, g in cells], fontsize=8)
    ax.set(ylabel="local-observable MAE")
    ax.legend(fontsize=8)
    return _finish(fig, f"Generation local observables (Table 5) — {_sweep_name(frames)}: {status_line(frames)}", path)

