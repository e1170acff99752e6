"""A run's closing summary in plain words: what was trained, what was measured, the key numbers
with their meaning, and a one-line reading (printed at the end of ``python -m sizetransfer.fit``
and written to ``<run dir>/summary.md``).

Key numbers, read from the final evaluation (``eval/step=<k>/metrics.json`` and, when the config
has a ``generation:`` section, ``generation.json``):

* Ising: the learned / exact boundary response ρ(R) at r = R (the student's receptive radius) per
  probe σ, at the training size and the largest size: 1 means the student reproduces the exact
  smoothed-score response at the edge of its field of view.
* FDLF and hard-valid teachers: the clean-score relative RMSE at σ_eval at the training size and
  the largest size, and their ratio (≈ 1: the error does not grow with size), plus the far-response
  error at the largest size.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sizetransfer.evaluation.far_share import FAR_SHARE_MIN

#: learned / exact within this band counts as "reproduced".
RATIO_BAND = (0.8, 1.25)
#: RMSE(largest L) / RMSE(train L) up to this counts as "does not grow with size".
FLAT_RATIO = 1.05


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def describe_training(model, datamodule, *, steps: int, wall_s: float, resumed_from_step: int | None) -> str:
    """One paragraph: student, target, training size, steps and time."""
    hp = model.hparams
    blocks = hp.get("blocks")
    k = int(hp.get("global_features") or 0)
    stem, skip = int(hp.get("stem_radius") or 1), int(hp.get("skip_radius") or 0)
    reach = ((", a " + "×".join([str(2 * stem + 1)] * int(hp.get("dim") or 2)) + " input stem" if stem > 1 else "")
             + (f", a linear skip of radius {skip}" if skip else ""))
    student = (f"a {'local ' if not k else ''}score model (CNN, {blocks} block{'s' if blocks != 1 else ''}, width "
               f"{hp.get('width')}{reach}, receptive radius R = {model.receptive_radius} sites"
               + (f", plus {k} global lattice-mean features: not local)" if k else ")"))
    L = getattr(datamodule, "train_size", None)
    if hasattr(datamodule, "beta"):
        import ising

        target = f"the 2D Ising model at β = {datamodule.beta / ising.BETA_C:.3g} β_c on a periodic {L}×{L} lattice"
    elif hasattr(datamodule, "teacher"):
        teacher = datamodule.teacher
        key = getattr(teacher, "key", type(teacher).__name__)
        if getattr(teacher, "periodic", True):
            target = f"samples of the exact teacher '{key}' on a periodic {L}×{L} lattice"
        else:
            target = f"samples of the exact 3D hard-valid teacher '{key}' in open boxes of side {L}"
    else:
        target = f"{type(datamodule).__name__} data (training size {L})"
    when = f"{steps} training step{'s' if steps != 1 else ''}"
    if resumed_from_step is not None:
        when += f" (resumed from step {resumed_from_step})"
    when += f"; {_duration(wall_s)} for training and the final evaluation"
    if resumed_from_step is not None:
        when += " in this session"
    return (f"Trained: {student} to denoise {target}, at noise levels σ from {hp.get('sigma_min'):g} to "
            f"{hp.get('sigma_max'):g} (denoising score matching); {when}.")


def _ising_section(results: dict[str, Any], train_L: int | None) -> str:
    rows = results["rows"]
    R = int(results.get("receptive_radius", 0))
    radii = sorted(int(k[len("response_ratio_r"):]) for k in rows[0] if k.startswith("response_ratio_r"))
    r = R if R in radii else max(radii)
    sizes = sorted({int(row["L"]) for row in rows})
    train_L = train_L if train_L in sizes else sizes[0]
    measured = (f"Measured at step {results['step']}: the boundary response ρ({r}) — how much the model's "
                f"score at one site moves when the noisy spins {r} sites away move (shell sum of the score's "
                f"Jacobian; r = {r} is the edge of the model's field of view) — learned (the model's own "
                f"Jacobian) against exact (the true smoothed score's, Eq. 22, by Monte Carlo with its "
                f"standard error), at noise levels σ = {', '.join(f'{s:g}' for s in sorted({row['sigma'] for row in rows}))} "
                f"on the training size L = {train_L}" + (f" and on L = {sizes[-1]}." if sizes[-1] != train_L else "."))
    table_rows, reading = [], {"reproduced": [], "below": [], "above": [], "unresolved": []}
    for row in rows:
        exact, err = float(row[f"response_exact_r{r}"]), float(row[f"response_exact_stderr_r{r}"])
        learned, ratio = float(row[f"response_learned_r{r}"]), float(row[f"response_ratio_r{r}"])
        resolved = abs(exact) > 2 * err
        table_rows.append([f"{row['sigma']:g}", str(row["L"]), f"{1e3 * exact:.3g} ± {1e3 * err:.2g}",
                           f"{1e3 * learned:.3g}", f"{ratio:.2f}" if resolved else f"({ratio:.2f})"])
        if int(row["L"]) != train_L:
            if resolved and int(row["L"]) == sizes[-1]:
                reading.setdefault("large", []).append((row["sigma"], ratio))
            continue
        if not resolved:
            reading["unresolved"].append(row["sigma"])
        elif RATIO_BAND[0] <= ratio <= RATIO_BAND[1]:
            reading["reproduced"].append((row["sigma"], ratio))
        elif ratio < RATIO_BAND[0]:
            reading["below"].append((row["sigma"], ratio))
        else:
            reading["above"].append((row["sigma"], ratio))
    table = _table(["σ", "L", f"exact ρ({r}) × 10³ ± s.e.", f"learned ρ({r}) × 10³", "learned / exact"], table_rows)
    parts = []
    if reading["reproduced"]:
        parts.append("reproduces it at σ = " + ", ".join(f"{s:g} ({q:.2f})" for s, q in reading["reproduced"]))
    if reading["below"]:
        parts.append("responds too weakly at σ = " + ", ".join(f"{s:g} ({q:.2f})" for s, q in reading["below"]))
    if reading["above"]:
        parts.append("responds too strongly at σ = " + ", ".join(f"{s:g} ({q:.2f})" for s, q in reading["above"]))
    if reading["unresolved"]:
        parts.append("at σ = " + ", ".join(f"{s:g}" for s in reading["unresolved"])
                     + " the exact response is zero within 2 standard errors (ratio not meaningful)")
    answer = (f"Reading: learned / exact = 1 means the model captures the critical response at the edge of its "
              f"field of view ({RATIO_BAND[0]:g}–{RATIO_BAND[1]:g} counts as captured; below, the local model misses "
              f"correlations it cannot see; in parentheses: not meaningful). At L = {train_L} the model "
              + "; ".join(parts) + ".")
    if reading.get("large"):
        answer += (f" On the larger lattice L = {sizes[-1]}: " + ", ".join(f"σ = {s:g}: {q:.2f}" for s, q in reading["large"])
                   + ".")
    return "\n\n".join([measured, table, answer])


def _fdlf_section(results: dict[str, Any], train_L: int | None) -> str:
    rows = sorted(results["rows"], key=lambda row: int(row["L"]))
    key = results["rmse_keys"][0]
    sigma = key.split("sigma", 1)[1]
    sizes = [int(row["L"]) for row in rows]
    first = next((row for row in rows if int(row["L"]) == train_L), rows[0])
    last = rows[-1]
    far = results.get("config", {}).get("far")
    far_text = f" (distances {far[0]}–{far[1]})" if far else ""
    measured = (f"Measured at step {results['step']}: the clean-score error — relative RMSE of the model's score "
                f"against the teacher's exact score at σ = {sigma} (0: exact; 1: no better than predicting 0) — "
                f"and how well the model's response to a change far from a site{far_text} matches the teacher's "
                f"(far-response error: 0 exact, 1 none of it), at L = {', '.join(map(str, sizes))}.")
    header = ["L", f"score RMSE (σ = {sigma})", "near-response error", "far-response error"]
    table = _table(header, [[str(row["L"]) + (" (train)" if row is first else ""), f"{float(row[key]):.4f}",
                             f"{float(row['near_response_error']):.3f}", f"{float(row['far_response_error']):.3f}"]
                            for row in rows])
    a, b = float(first[key]), float(last[key])
    ratio = b / a if a > 0 else math.nan
    if a >= 0.9:
        verdict = (f"score RMSE {a:.3f} at the training size L = {first['L']}: the model has not learned the "
                   f"score yet (1 is no better than predicting 0), so its size transfer cannot be judged.")
    elif int(last["L"]) == int(first["L"]):
        verdict = f"score RMSE {a:.3f} at L = {first['L']} (one size evaluated: no size comparison)."
    elif ratio <= FLAT_RATIO:
        verdict = (f"score RMSE {a:.3f} at the training size L = {first['L']} and {b:.3f} at L = {last['L']} "
                   f"(ratio {ratio:.2f}): the error does not grow with size — the model transfers across size, "
                   f"at its own error level.")
    else:
        verdict = (f"score RMSE {a:.3f} at the training size L = {first['L']} and {b:.3f} at L = {last['L']} "
                   f"(ratio {ratio:.2f}): the error grows by {100 * (ratio - 1):.0f}% with size — the model does "
                   f"not transfer across size.")
    far_error = float(last["far_response_error"])
    share = last.get("teacher_far_share")
    if share is not None and float(share) < FAR_SHARE_MIN:  # a short-range teacher: nothing far to miss
        verdict += (f" The teacher's far shells{far_text} hold {100 * float(share):.2g}% of its response at L = "
                    f"{last['L']} (< {FAR_SHARE_MIN:.0%}), so the far-response error ({far_error:.2f}) measures nothing.")
    elif far_error >= 0.9:
        verdict += (f" Its far-response error is {far_error:.2f} at L = {last['L']}: it misses the teacher's "
                    f"response{far_text}" + (f", which lies beyond its receptive radius R = {results['receptive_radius']}."
                                             if far and far[0] > int(results["receptive_radius"]) else "."))
    return "\n\n".join([measured, table, "Reading: " + verdict])


def _generation_section(gen: dict[str, Any]) -> str:
    rows = sorted(gen["rows"], key=lambda row: int(row["L"]))
    parts = [f"{float(row['mae']):.3f} at L = {row['L']} (teacher's own sampling floor {float(row['teacher_floor']):.3f})"
             for row in rows]
    return ("Generated samples (reverse diffusion from noise): mean absolute error of local observables (moments, "
            "neighbour correlations) against the teacher's, " + "; ".join(parts)
            + ". Close to the floor means the samples are as good as the teacher's own at these observables.")


def run_summary(model, datamodule, *, steps: int, wall_s: float, eval_dir: Path,
                resumed_from_step: int | None = None, fast_dev_run: bool = False) -> str:
    """The summary text (Markdown that reads as plain text): training, measurement, numbers, reading."""
    parts = ["# Run summary", describe_training(model, datamodule, steps=steps, wall_s=wall_s,
                                                 resumed_from_step=resumed_from_step)]
    results = _read(Path(eval_dir) / "metrics.json")
    train_L = getattr(datamodule, "train_size", None)
    if results is None or not results.get("rows"):
        parts.append(f"No final evaluation was found (expected {Path(eval_dir) / 'metrics.json'}); "
                     "nothing was measured.")
    elif results.get("target") == "ising":
        parts.append(_ising_section(results, train_L))
    else:
        parts.append(_fdlf_section(results, train_L))
    gen = _read(Path(eval_dir) / "generation.json")
    if gen and gen.get("rows"):
        parts.append(_generation_section(gen))
    if fast_dev_run:
        parts.append("This was a smoke test (fast_dev_run): the numbers above mean nothing.")
    elif results is not None and steps < 200:
        parts.append(f"Only {steps} training steps: a trial of the tool, not a trained model; the numbers show "
                     f"what is measured, not what a full run finds.")
    return "\n\n".join(parts)
