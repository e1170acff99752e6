"""The verdict — ``extrapolates``, ``range`` or ``training`` — and its reasons, from measured numbers.

Rules (thresholds: :class:`~sizetransfer.diagnose.config.DiagnoseConfig`; docs/diagnose.md):

1. ``range`` when the target's response range R_q exceeds the model's range (its declared receptive
   radius; for a model that declares none, its measured support);
2. else ``training`` when the error at the training size is not small — above ``rmse_max``, or above
   ``training_ratio`` × the oracle floor and more than ``training_excess`` above it — or when it grows
   significantly with L although the range suffices;
3. else ``extrapolates`` (flat and small).
"""
from __future__ import annotations

from typing import Any

from sizetransfer.diagnose.config import DiagnoseConfig

VERDICTS = ("extrapolates", "range", "training")


def _num(v: float) -> str:
    return f"{v:.3g}"


def decide(m: dict[str, Any], model_range: int, range_source: str, config: DiagnoseConfig,
           kind: str = "fdlf") -> dict[str, Any]:
    """``{"verdict", "headline", "reasons", "flat", "grows", "training_part"}`` from :func:`measure`'s numbers."""
    rows, fit, q = m["rows"], m["trend"], config.q
    first, last = rows[0], rows[-1]
    L0, L1 = first["L"], last["L"]
    e0, e1 = first["rmse"], last["rmse"]
    ratio = e1 / e0 if e0 > 0 else 1.0
    significant = abs(fit["slope"]) > config.trend_z * fit["slope_se"]
    flat = abs(fit["relative_change"]) <= config.flat_tolerance or not significant
    grows = (not flat) and fit["slope"] > 0
    floor = m["oracle_floor"]
    R_t = m["target_range"]
    qs = f"R_{q:g}"
    reasons = []

    # the evidence, in a fixed order
    reasons.append(f"target response range {qs} = {R_t} (largest over L = {L0}..{L1}, at L = {m['target_range_L']}); "
                   f"model range {model_range} ({range_source}); model's measured support {m['model_support']}, "
                   f"its own {qs} = {m['model_range_q']} at L = {L1}")
    what = "RMSE against the MCMC smoothed score" if kind == "ising" else "clean-score RMSE"
    trend_txt = (f"{what} {_num(e0)} at L = {L0} → {_num(e1)} at L = {L1} (×{ratio:.3g}); slope "
                 f"{fit['slope']:+.3g} ± {fit['slope_se']:.2g} per unit ln L, fitted change "
                 f"{100 * fit['relative_change']:+.1f}% ({'flat' if flat else 'grows' if grows else 'falls'}: "
                 f"tolerance ±{100 * config.flat_tolerance:g}%, significance {config.trend_z:g} s.e.)")
    reasons.append(trend_txt)
    far_ok = m["target_far_share"] >= config.far_share_min
    far_txt = (f"near-response error {_num(last['near_response_error'])}, far-response error "
               f"{_num(last['far_response_error'])} at L = {L1} (far shells {config.far[0]}–{config.far[1]}; "
               f"0 = exact, 1 = as if the model had no far response)")
    if not far_ok:
        far_txt += (f"; the target's far shells hold {100 * m['target_far_share']:.2g}% of its response "
                    f"(< {100 * config.far_share_min:g}%): the far error is not meaningful")
    reasons.append(far_txt)
    if floor is not None:
        training_part = max(e0 - floor, 0.0)
        reasons.append(f"range floor (oracle trained on the exact score, same radius) {_num(floor)} at L = {L0}; "
                       f"training part {_num(training_part)} of the model's {_num(e0)}")
    elif kind == "ising":
        training_part = None
        reasons.append("the Ising target has no exact score, so no oracle floor: the split of the error into range "
                       "and training is unavailable; the RMSE is against the MCMC smoothed score at σ = "
                       f"{config.ising_sigma:g}")
    else:
        training_part = None
        reasons.append("no oracle floor given: the split of the error into range and training is unavailable "
                       "(--oracle-ckpt or --train-oracle)")

    if R_t > model_range:
        verdict = "range"
        head = (f"does not extrapolate (range): the target's response range {qs} = {R_t} exceeds the model's "
                f"{model_range}")
        if far_ok:
            head += f"; far-response error {_num(last['far_response_error'])}"
        head += f"; error ×{ratio:.3g} from L = {L0} to {L1}"
    else:
        above_floor = (floor is not None and e0 > config.training_ratio * floor
                       and e0 - floor > config.training_excess)
        big = e0 > config.rmse_max
        if above_floor:
            why = (f"its error {_num(e0)} is far above the range floor {_num(floor)} (training part "
                   f"{_num(training_part)})")
        elif floor is not None:
            why = (f"its error {_num(e0)} at L = {L0} exceeds rmse_max = {config.rmse_max:g}, and so does the "
                   f"oracle's ({_num(floor)}): the oracle itself is not trained enough to give a range floor")
        else:
            why = f"its error {_num(e0)} at L = {L0} exceeds rmse_max = {config.rmse_max:g} (no oracle floor)"
        if above_floor or big or grows:
            verdict = "training"
            head = f"training-limited: the model's range {model_range} covers the target's {qs} = {R_t}, but "
            head += why if above_floor or big else f"its error grows ×{ratio:.3g} from L = {L0} to {L1}"
        else:
            verdict = "extrapolates"
            head = f"extrapolates: error flat within {100 * abs(fit['relative_change']):.1f}% to L = {L1} ({_num(e1)})"
            if floor is not None:
                head += f"; remaining error is training ({_num(e0)} against a range floor of {_num(floor)})"
    return {"verdict": verdict, "headline": head, "reasons": reasons, "flat": bool(flat), "grows": bool(grows),
            "training_part": training_part}
