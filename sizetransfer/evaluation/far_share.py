"""The teacher's far share: is a far-response error (Eq. 17) meaningful? (numpy only, no torch)

A relative error divides by the teacher's response in the far shells; for a short-range teacher that
response is ~0 and the ratio measures nothing. Tables, figures and verdicts show the far error only
where the far shells hold at least ``FAR_SHARE_MIN`` of the teacher's off-diagonal response.
"""
from __future__ import annotations

import numpy as np

#: Smallest fraction of the teacher's off-diagonal response in the far shells for which the far-response
#: error is shown (tables, figures) and used (diagnose's ``far_share_min`` default).
FAR_SHARE_MIN = 0.01


def far_share(profile, far: tuple[int, int]) -> float:
    """Σ_{r_in ≤ r ≤ r_out} ρ(r) / Σ_{r ≥ 1} ρ(r) of an absolute response profile ``profile`` (entries
    r = 0, 1, ..., r_max; a sequence, array or CPU tensor; NaN entries count as 0) over the Chebyshev shells
    ``far = (r_in, r_out)``; shells beyond r_max add nothing. 0 when there is no off-diagonal response (nothing to compare)."""
    p = np.nan_to_num(np.asarray(profile, dtype=np.float64), nan=0.0)
    off = float(p[1:].sum())
    return float(p[int(far[0]): int(far[1]) + 1].sum()) / off if off > 0 else 0.0
