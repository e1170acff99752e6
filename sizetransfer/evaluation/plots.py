"""Figures of one evaluation (matplotlib ``Figure`` API: no pyplot, any backend).

Each function takes the plain ``results`` dict of an evaluation (the content of ``metrics.json`` /
``generation.json``, see docs/outputs.md): ``results["rows"]`` is a list of flat metric dicts (one
per L, or per (L, σ) for the Ising target), ``results["profiles"]`` a list of response profiles,
``results["observables"]`` (generation) the local observables per L.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


#: Lower limit of the normalised-profile axis: below it lie round-off and exactly-local students.
FLOOR = 1e-12


def _panels(n: int, size: tuple[float, float] = (4.2, 3.4)):
    """A figure of n panels, at most 4 a row, each ``size`` inches; returns (figure, the n axes)."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _positive(values) -> np.ndarray:
    """Values for a log axis: non-positive entries become NaN (not drawn)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(v > 0, v, np.nan)


def plot_fdlf(results: dict[str, Any], path: str | os.PathLike) -> None:
    """FDLF figure: normalised response profile ρ(r)/Σ_{r'≥1}ρ(r') of student vs teacher per L
    (log scale, receptive radius marked), then clean-score RMSE and response errors vs L.

    2D tori and 3D open boxes alike (open boxes: profiles at occupied near-centre probes over
    occupied columns, see :mod:`sizetransfer.evaluation.fdlf`); metrics that are NaN at every L (e.g. an empty bulk) are
    left out of the last panel, NaN points elsewhere are not drawn."""
    profiles, rows = results["profiles"], results["rows"]
    fig, axes = _panels(len(profiles) + 1)
    radius = results.get("receptive_radius")
    for ax, prof in zip(axes, profiles):
        r = np.asarray(prof["r"])
        ax.semilogy(r[1:], _positive(prof["teacher"][1:]), "o-", label="teacher")
        ax.semilogy(r[1:], _positive(prof["student"][1:]), "s--", label="student")
        if radius is not None:
            ax.axvline(radius, color="grey", lw=0.8, ls=":", label=f"R = {radius}")
        ax.set(title=f"L = {prof['L']}", xlabel="Chebyshev distance r", ylabel="normalised ρ(r)")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], FLOOR))
        ax.legend(fontsize=8)
    ax = axes[-1]
    sizes = [row["L"] for row in rows]
    for key in results["rmse_keys"] + ["near_response_error", "far_response_error"]:
        values = np.asarray([row[key] for row in rows], dtype=np.float64)
        if np.isfinite(values).any():
            ax.plot(sizes, values, "o-", label=key)
    ax.set(title="size extrapolation", xlabel="L", ylabel="relative error", xscale="log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    _save(fig, path, f"{results.get('target_name', 'FDLF')} — step {results['step']}")


def plot_ising(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Ising figure: σ⁴ρ(r) exact (error bars) vs learned per L, one colour per probe σ
    (log scale, r ≥ 1), then the score RMSE against the MCMC smoothed score vs σ per L."""
    profiles, rows = results["profiles"], results["rows"]
    sizes = sorted({p["L"] for p in profiles})
    fig, axes = _panels(len(sizes) + 1)
    radius = results.get("receptive_radius")
    for ax, L in zip(axes, sizes):
        for k, prof in enumerate(p for p in profiles if p["L"] == L):
            s4 = prof["sigma"] ** 4
            r = np.asarray(prof["r"])[1:]
            colour = f"C{k}"
            ax.errorbar(r, _positive(s4 * np.asarray(prof["exact"][1:])), yerr=s4 * np.asarray(prof["exact_stderr"][1:]),
                        fmt="o-", color=colour, capsize=2, label=f"exact σ={prof['sigma']:g}")
            ax.errorbar(r, _positive(s4 * np.asarray(prof["student"][1:])), yerr=s4 * np.asarray(prof["student_sem"][1:]),
                        fmt="s--", color=colour, mfc="none", capsize=2, label=f"learned σ={prof['sigma']:g}")
        if radius is not None:
            ax.axvline(radius, color="grey", lw=0.8, ls=":")
        ax.set(title=f"L = {L}", xlabel="Chebyshev distance r", ylabel="σ⁴ ρ(r) (signed shell sum)", yscale="log")
        ax.legend(fontsize=6, ncol=2, loc="lower left")
    ax = axes[-1]
    for L in sizes:
        sel = [row for row in rows if row["L"] == L]
        line, = ax.plot([row["sigma"] for row in sel], [row["score_rmse"] for row in sel], "o-", label=f"L = {L}")
        ax.plot([row["sigma"] for row in sel], [row["score_rmse_mc_floor"] for row in sel], ":",
                color=line.get_color(), label=f"MC floor L = {L}")
    sigmas = sorted({row["sigma"] for row in rows})
    ax.set(title="score vs MCMC smoothed score", xlabel="σ", ylabel="relative RMSE", xscale="log", yscale="log")
    ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    _save(fig, path, f"Ising β = {results['beta']:.6g} — step {results['step']}")


def plot_generation(results: dict[str, Any], path) -> None:
    """Figure: per L, each local observable of the generated vs the teacher samples (channel 0);
    last panel: MAE and teacher noise floor vs L."""
    entries = results["observables"]
    fig, axes = _panels(len(entries) + 1, size=(4.6, 3.6))
    for ax, entry in zip(axes, entries):
        keys = list(entry["teacher"])
        pos = np.arange(len(keys))
        ax.bar(pos - 0.2, [entry["teacher"][k][0] for k in keys], 0.4, label="teacher")
        ax.bar(pos + 0.2, [entry["generated"][k][0] for k in keys], 0.4, label="generated")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(pos, keys, rotation=35, ha="right", fontsize=8)
        ax.set(title=f"L = {entry['L']}", ylabel="observable")
        ax.legend(fontsize=8)
    ax = axes[len(entries)]
    sizes = [row["L"] for row in results["rows"]]
    ax.plot(sizes, [row["mae"] for row in results["rows"]], "o-", label="student MAE")
    ax.plot(sizes, [row["teacher_floor"] for row in results["rows"]], "s--", label="teacher floor")
    ax.set(title=f"{results['target_name']}, step {results['step']}", xlabel="L", ylabel="local-observable MAE")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def _save(fig, path, title: str) -> None:
    """Write ``fig`` as PNG to exactly ``path`` (the caller makes the write atomic)."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
