"""Writing a diagnosis: ``diagnosis.json``, ``diagnosis.md`` and ``diagnosis.png`` (atomic, all or nothing)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sizetransfer.atomic import atomic_output, atomic_write

FILES = ("diagnosis.json", "diagnosis.md", "diagnosis.png")


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def markdown(d: dict[str, Any]) -> str:
    """The report: the one-line verdict, its reasons, and the size curve."""
    lines = ["# Diagnosis", "", f"**{d['headline']}**", "", f"Verdict: `{d['verdict']}`", "", "Reasons:", ""]
    lines += [f"* {r}" for r in d["reasons"]]
    rmse = "RMSE against the MCMC smoothed score" if d["target"]["kind"] == "ising" else "clean-score RMSE"
    lines += ["", f"Model: {d['model']['name']}; target: {d['target']['name']}, trained at L = {d['train_size']}, "
              f"σ = {d['config']['ising_sigma' if d['target']['kind'] == 'ising' else 'sigma_eval']:g}.", "",
              f"| L | {rmse} ± s.e. | near-response error | far-response error | target R_q | model R_q |",
              "|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['L']} | {r['rmse']:.4g} ± {r['rmse_se']:.2g} | {r['near_response_error']:.4g} | "
                     f"{r['far_response_error']:.4g} | {r['response_range_teacher']} | {r['response_range_student']} |")
    lines += ["", "Thresholds and how the verdict is reached: docs/diagnose.md. All numbers: diagnosis.json.", ""]
    return "\n".join(lines)


def figure(d: dict[str, Any], path: Path) -> None:
    """Left: normalised absolute response profiles ρ(r) / Σ_{r≥1} ρ of target and model at the largest L;
    right: clean-score RMSE against L with standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    p = d["profiles"][-1]
    r = p["r"][1:]
    exact = "target (exact, Eq. 22)" if d["target"]["kind"] == "ising" else "target (exact Hessian rows)"
    a.semilogy(r, [max(v, 1e-6) for v in p["teacher"][1:]], "o-", label=exact)
    a.semilogy(r, [max(v if v == v else 0.0, 1e-6) for v in p["student"][1:]], "s-", label="model (autograd Jacobian)")
    a.axvline(d["model"]["range"], color="k", ls="--", lw=1, label=f"model range {d['model']['range']}")
    a.axvline(d["target"]["response_range"], color="C0", ls=":", lw=1,
              label=f"target R_{d['config']['q']:g} = {d['target']['response_range']}")
    a.set(xlabel="Chebyshev distance r", ylabel="ρ(r) / Σ_{r≥1} ρ", title=f"response profiles at L = {p['L']}")
    a.legend(fontsize=8)
    Ls = [row["L"] for row in d["rows"]]
    b.errorbar(Ls, [row["rmse"] for row in d["rows"]], yerr=[row["rmse_se"] for row in d["rows"]], fmt="o-",
               label="model")
    if d["oracle_floor"] is not None:
        b.axhline(d["oracle_floor"], color="C2", ls="--", label="range floor (oracle)")
    b.axvline(d["train_size"], color="k", ls=":", lw=1, label="training size")
    b.set(xscale="log", xlabel="L", ylabel="clean-score relative RMSE", title=f"verdict: {d['verdict']}")
    b.set_ylim(bottom=0)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(d: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write the three files into ``out``; each appears only complete (the figure first, the JSON last)."""
    out = Path(out)
    paths = {name: out / name for name in FILES}
    with atomic_output(paths["diagnosis.png"]) as tmp:
        figure(d, tmp)
    atomic_write(paths["diagnosis.md"], markdown(d))
    atomic_write(paths["diagnosis.json"], json.dumps(_clean(d), indent=1) + "\n")
    return paths


TABLE_COLUMNS = ("L", "rmse", "rmse_se", "near_response_error", "far_response_error", "response_range_teacher",
                 "response_range_student")


def log_wandb(d: dict[str, Any], run_id: str, directory: Path) -> Path:
    """The diagnosis into the fit's W&B run ``run_id``: summary ``diagnose/verdict`` and ``diagnose/headline``,
    the table ``diagnose/size_curve`` (one row per L) and the image ``diagnose/figure``."""
    from sizetransfer.tracking import log_to_run

    rows = [{c: r[c] for c in TABLE_COLUMNS} for r in d["rows"]]
    summary = {"diagnose/verdict": d["verdict"], "diagnose/headline": d["headline"],
               "diagnose/target_response_range": d["target"]["response_range"],
               "diagnose/model_range": d["model"]["range"]}
    if d["oracle_floor"] is not None:
        summary["diagnose/oracle_floor"] = d["oracle_floor"]
    return log_to_run(run_id=run_id, directory=directory, summary=summary,
                      tables={"diagnose/size_curve": (list(TABLE_COLUMNS), rows)},
                      images={"diagnose/figure": Path(d["files"]["diagnosis.png"])})
