"""``sizetransfer.size_curve``: the size-extrapolation metrics of a trained student at large L — up to 1024 for
the FDLF teachers, 256 for the Ising target — with CPU seconds and peak memory per size and the flatness slope
of the error against ln L (docs/size_curve.md).

    python -m sizetransfer.size_curve --ckpt runs/<name>/<time>/checkpoints/last.ckpt --sizes 24 64 256 1024

or, as functions: :func:`size_curve` (the rows), :func:`write_size_curve` (csv, json, png); the slope statistics
are in :mod:`sizetransfer.evaluation.flatness`.
"""
from sizetransfer.size_curve.core import DEFAULT_SIZES, MAX_SIZE, SizeCurveConfig, check_curve_sizes, size_curve
from sizetransfer.size_curve.output import summary, write_size_curve

__all__ = ["DEFAULT_SIZES", "MAX_SIZE", "SizeCurveConfig", "check_curve_sizes", "size_curve", "summary",
           "write_size_curve"]
