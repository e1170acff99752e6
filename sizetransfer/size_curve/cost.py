"""What one step of work costs: CPU seconds and the peak resident memory of the process.

CPU seconds are ``time.process_time()`` (all threads of the process, user + system; torch and numba
threads included). Peak memory is the process's peak resident set size (RSS) *while the block ran*: on
Linux the kernel's high-water mark VmHWM is reset before the block (``/proc/self/clear_refs`` ← 5) and read
after it, so it counts everything resident — torch tensors, numpy arrays, the model, earlier caches —
which ``tracemalloc`` would not see. Where that reset is unavailable the value is ``ru_maxrss``, the peak
since the process started (``method`` says which).
"""
from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float | None:
    """The process's resident set size now, MiB (None where /proc is unavailable)."""
    return _status_mib("VmRSS")


@contextmanager
def measured() -> Iterator[dict]:
    """Measure the block: yields a dict filled on exit with ``cpu_s``, ``wall_s``, ``peak_rss_MiB`` (the peak
    RSS while the block ran, or since process start, see ``method``), ``rss_start_MiB`` and ``method``
    (``"VmHWM reset"`` or ``"ru_maxrss (since process start)"``)."""
    cost: dict = {}
    reset = _reset_peak()
    start = rss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield cost
    finally:
        cost["cpu_s"] = time.process_time() - cpu
        cost["wall_s"] = time.perf_counter() - wall
        peak = _status_mib("VmHWM") if reset else None
        cost["method"] = "VmHWM reset" if peak is not None else "ru_maxrss (since process start)"
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
        cost["peak_rss_MiB"] = peak
        cost["rss_start_MiB"] = start if start is not None else float("nan")
