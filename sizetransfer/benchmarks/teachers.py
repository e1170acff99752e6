"""Teacher throughput at L = 64, batch 16, float64 on CPU: samples/s, exact scores/s, and the
ratio score-time / log_prob-time (an exact score should cost at most 3 log_prob evaluations).

``python -m sizetransfer.bench teachers [--quick]``; each time is the best of interleaved repeats
(robust to load from other processes on a shared machine).
"""
from __future__ import annotations

import time

import torch

L, BATCH = 64, 16


def best_times(fns: dict, repeats: int) -> dict[str, float]:
    """Fastest wall time (s) of each ``fns[name]()`` over ``repeats`` rounds after one warm-up round;
    the calls are interleaved round by round so that load from other processes hits all alike."""
    times = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


HEADER = (f"{'teacher':<17} {'sample ms':>9} {'samples/s':>10} {'log_prob ms':>11} {'score ms':>9} "
          f"{'scores/s':>9} {'score/log_prob':>14}")


def _row(key: str, sample, log_prob, score, repeats: int) -> dict:
    """Time the three calls (best of ``repeats``), print and return one table row."""
    t = best_times({"sample": sample, "log_prob": log_prob, "score": score}, repeats)
    row = dict(teacher=key, sample_s=t["sample"], samples_per_s=BATCH / t["sample"], log_prob_s=t["log_prob"],
               score_s=t["score"], scores_per_s=BATCH / t["score"], score_over_log_prob=t["score"] / t["log_prob"])
    print(f"{key:<17} {1e3 * t['sample']:>9.2f} {row['samples_per_s']:>10.0f} {1e3 * t['log_prob']:>11.2f} "
          f"{1e3 * t['score']:>9.2f} {row['scores_per_s']:>9.0f} {row['score_over_log_prob']:>14.2f}", flush=True)
    return row


def _teacher_row(key: str, size: int, repeats: int) -> dict:
    """Time one teacher at ``size``: 2D teachers sample x, hard-valid ones (ports, types, x), whose
    discrete state the log-likelihood and the score take as well."""
    from sizetransfer.teachers import make_teacher

    teacher = make_teacher(key, seed=0)
    gen = torch.Generator().manual_seed(0)
    drawn = teacher.sample(BATCH, size, generator=gen)
    *discrete, x = drawn if isinstance(drawn, tuple) else (drawn,)
    return _row(key, lambda: teacher.sample(BATCH, size, generator=gen), lambda: teacher.log_prob(*discrete, x),
                lambda: teacher.score(x, *discrete), repeats)


def run(quick: bool = False) -> list[dict]:
    """Print and return one row per teacher key (2D periodic teachers, then the 3D hard-valid ones)."""
    from sizetransfer.teachers import PERIODIC_2D_KEYS

    repeats = 3 if quick else 20
    print(f"teachers: L={L}, batch {BATCH}, float64, {torch.get_num_threads()} threads, best of {repeats}")
    print(HEADER)
    rows = [_teacher_row(key, L, repeats) for key in PERIODIC_2D_KEYS]
    return rows + run_hard_valid(repeats)


def run_hard_valid(repeats: int, L3: int = 16) -> list[dict]:
    """The 3D hard-valid teachers on open L3³ boxes (batch 16): sample (ports, types, x), the exact
    log-likelihood and the exact continuous score."""
    from sizetransfer.teachers import HARD_VALID_KEYS

    print(f"\nhard-valid 3D teachers: L={L3} open box, batch {BATCH}, float64, best of {repeats}")
    print(HEADER)
    return [_teacher_row(key, L3, repeats) for key in HARD_VALID_KEYS]
