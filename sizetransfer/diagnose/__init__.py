"""``sizetransfer.diagnose``: will this score model extrapolate across lattice size, and why not?

    import sizetransfer.diagnose
    d = sizetransfer.diagnose(score_fn, "complex_long", train_size=24)   # the module is callable
    d["verdict"], d["headline"], d["reasons"]                          # "range" / "training" / "extrapolates"

or ``python -m sizetransfer.diagnose --ckpt runs/<name>/<time>/checkpoints/last.ckpt``. Measurements,
rules and thresholds: docs/diagnose.md; options: :class:`DiagnoseConfig`.
"""
from __future__ import annotations

import sys
import types

from sizetransfer.diagnose.config import DiagnoseConfig
from sizetransfer.diagnose.core import diagnose, load_student
from sizetransfer.diagnose.verdict import VERDICTS

__all__ = ["DiagnoseConfig", "VERDICTS", "diagnose", "load_student"]


class _CallableModule(types.ModuleType):
    """``sizetransfer.diagnose(...)`` calls :func:`diagnose` (the issue's spelling of the function)."""

    def __call__(self, *args, **kwargs):
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
