"""Statistics of Markov-chain output: autocorrelation times and honest error bars.

Conventions
-----------
* Integrated autocorrelation time ``τ_int = 1/2 + Σ_{t≥1} ρ(t)`` (Sokal), so that for a
  stationary series of n samples with variance σ² the mean has
  ``Var(mean) ≈ 2 τ_int σ² / n``; independent samples give τ_int = 1/2.
* Layout: time runs along ``axis`` (default: last). Independent chains of equal length
  may run along ``chain_axis``; they are pooled (autocorrelation averaged over chains,
  means over all samples). By default a 2-D array is ``(n_chains, n_steps)``; give
  ``chain_axis=None`` to treat its first axis as separate observables instead. Every
  other axis is an independent observable and appears in the output shape.
* Blocking (batch means, jackknife): each chain is cut into
  ``max(1, round(n_blocks / n_chains))`` contiguous time blocks (a remainder at the
  start of each chain is dropped); every (chain, block) is one unit, so with many chains
  a unit is a whole chain (exactly independent) and with one chain it is a time slice
  (independent enough when its length is ≫ τ_int).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["autocorrelation", "integrated_autocorr_time", "mean_stderr", "batch_means", "jackknife"]

_AUTO = "auto"


def _layout(x, axis, chain_axis):
    """Return x as float64 ``(*obs, n_chains, n_steps)`` and the observable shape."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis (time); got a scalar")
    axis = _check_axis(axis, x.ndim, "axis")
    if isinstance(chain_axis, str) and chain_axis == _AUTO:
        chain_axis = 0 if (x.ndim == 2 and axis == 1) else None
    if chain_axis is None:
        x = np.moveaxis(x, axis, -1)[..., None, :]
    else:
        chain_axis = _check_axis(chain_axis, x.ndim, "chain_axis")
        if chain_axis == axis:
            raise ValueError(f"chain_axis must differ from axis (both are {axis})")
        x = np.moveaxis(x, (chain_axis, axis), (-2, -1))
    if x.shape[-1] < 2:
        raise ValueError(f"need at least 2 samples along the time axis; got {x.shape[-1]}")
    return x, x.shape[:-2]


def _check_axis(ax, ndim, name):
    if not isinstance(ax, (int, np.integer)) or isinstance(ax, bool) or not -ndim <= ax < ndim:
        raise ValueError(f"{name} must be an integer in [{-ndim}, {ndim - 1}]; got {ax!r}")
    return int(ax) % ndim


def _autocovariance(x):
    """Pooled autocovariance C(t), t = 0..n-1, of ``x (*obs, n_chains, n)``.

    Each chain's own mean is removed; C(t) = Σ_s (x_s − x̄)(x_{s+t} − x̄) / n (FFT, zero padded),
    averaged over chains. Returns ``(*obs, n)``.
    """
    n = x.shape[-1]
    d = x - x.mean(axis=-1, keepdims=True)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(d, n=nfft, axis=-1)
    acov = np.fft.irfft(f * f.conj(), n=nfft, axis=-1)[..., :n] / n
    return acov.mean(axis=-2)


def _sokal_tau(acov, c):
    """τ_int with Sokal's window: smallest M with M ≥ c τ(M), τ(M) = 1/2 + Σ_{t=1}^M ρ(t)."""
    c0 = acov[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(c0 > 0, acov / np.where(c0 > 0, c0, 1.0), 0.0)
    n = acov.shape[-1]
    tau_m = 0.5 + np.cumsum(rho[..., 1:], axis=-1)  # τ(M) for M = 1..n-1
    m = np.arange(1, n)
    ok = m >= c * tau_m  # holds at M = n−1 at the latest, where τ(M) = 0 (Σ_t C(t) = 0)
    idx = np.where(ok.any(axis=-1), ok.argmax(axis=-1), n - 2)
    if np.any(idx + 1 > n // 4):
        warnings.warn(
            f"integrated_autocorr_time: window M > n_steps/4 (n_steps = {n}): the series is too "
            "short for its autocorrelation time and τ_int is underestimated",
            RuntimeWarning,
            stacklevel=3,
        )
    return np.take_along_axis(tau_m, idx[..., None], axis=-1)[..., 0]


def autocorrelation(x, *, axis=-1, chain_axis=_AUTO):
    """Normalised autocorrelation ρ(t), t = 0..n_steps-1, pooled over chains.

    Returns an array of shape ``(*obs, n_steps)`` with ρ(0) = 1 (0 for a constant series).
    """
    xs, _ = _layout(x, axis, chain_axis)
    acov = _autocovariance(xs)
    c0 = acov[..., :1]
    return np.where(c0 > 0, acov / np.where(c0 > 0, c0, 1.0), 0.0)


def integrated_autocorr_time(x, c=5.0, *, axis=-1, chain_axis=_AUTO):
    """Integrated autocorrelation time τ_int = 1/2 + Σ_{t≥1} ρ(t) by Sokal's windowing.

    x: ``(n_steps,)`` or ``(n_chains, n_steps)`` (autocorrelation pooled over chains), or
    any layout described in the module docstring. c: window factor (Sokal: 4–10); the sum
    runs to the smallest M with M ≥ c τ(M). Returns a float (or an array over observables).
    A constant series gives 1/2. Warns (RuntimeWarning) when M > n_steps/4: the series is too
    short (≲ 20 τ_int) for a reliable estimate.
    """
    if not np.isfinite(c) or c <= 0:
        raise ValueError(f"c must be a positive finite number; got {c!r}")
    xs, obs = _layout(x, axis, chain_axis)
    tau = _sokal_tau(_autocovariance(xs), c)
    return float(tau) if obs == () else tau


def _units(xs, n_blocks, name):
    """Means of the (chain, block) units of ``xs (*obs, n_chains, n_steps)`` → ``(n_units, *obs)``."""
    if not isinstance(n_blocks, (int, np.integer)) or isinstance(n_blocks, bool) or n_blocks < 2:
        raise ValueError(f"{name} must be an integer ≥ 2; got {n_blocks!r}")
    n_chains, n = xs.shape[-2:]
    per_chain = max(1, int(round(n_blocks / n_chains)))
    if n_chains * per_chain < 2:
        raise ValueError("need at least 2 blocks in all")
    b = n // per_chain
    if b < 1:
        raise ValueError(f"{name}={n_blocks} gives blocks shorter than one sample ({n} steps per chain)")
    blocks = xs[..., n - per_chain * b:].reshape(*xs.shape[:-1], per_chain, b).mean(axis=-1)
    blocks = blocks.reshape(*xs.shape[:-2], n_chains * per_chain)
    return np.moveaxis(blocks, -1, 0)


def batch_means(x, n_batches=32, *, axis=-1, chain_axis=_AUTO):
    """Mean and its standard error from the spread of batch (block) means.

    stderr = std(unit means, ddof=1) / sqrt(n_units); valid when the batch length is ≫ τ_int.
    Returns ``(mean, stderr)``: the mean over all samples, floats or arrays over observables.
    """
    xs, obs = _layout(x, axis, chain_axis)
    u = _units(xs, n_batches, "n_batches")
    mean = xs.mean(axis=(-2, -1))
    err = u.std(axis=0, ddof=1) / np.sqrt(u.shape[0])
    return (float(mean), float(err)) if obs == () else (mean, err)


def mean_stderr(x, axis=-1, *, chain_axis=_AUTO, method="sokal", c=5.0, n_batches=32):
    """Mean over all samples and its standard error accounting for autocorrelation.

    method="sokal": stderr = sqrt(2 τ_int σ² / n_total), σ² the pooled within-chain variance,
    τ_int from :func:`integrated_autocorr_time`; method="batch": :func:`batch_means`.
    x: ``(n_steps,)``, ``(n_chains, n_steps)`` or the layout of the module docstring.
    Returns ``(mean, stderr)``, floats or arrays over observables.
    """
    if method == "batch":
        return batch_means(x, n_batches, axis=axis, chain_axis=chain_axis)
    if method != "sokal":
        raise ValueError(f"method must be 'sokal' or 'batch'; got {method!r}")
    if not np.isfinite(c) or c <= 0:
        raise ValueError(f"c must be a positive finite number; got {c!r}")
    xs, obs = _layout(x, axis, chain_axis)
    acov = _autocovariance(xs)
    tau = _sokal_tau(acov, c)
    n_total = xs.shape[-2] * xs.shape[-1]
    mean = xs.mean(axis=(-2, -1))
    err = np.sqrt(2.0 * tau * acov[..., 0] / n_total)
    return (float(mean), float(err)) if obs == () else (mean, err)


def jackknife(func, *series, n_blocks=32, axis=-1, chain_axis=_AUTO):
    """Blocked jackknife for a smooth function of means, e.g. C = β² N (⟨e²⟩ − ⟨e⟩²).

    func(*means) -> float or array, called with the means of the series (each of the
    observable shape). series: arrays of the same layout (time along ``axis``, chains along
    ``chain_axis``), e.g. ``jackknife(lambda m1, m2: b*b*N*(m2 - m1**2), e, e**2)``.
    Leave-one-unit-out estimates θ_(u) over the (chain, block) units give
    stderr = sqrt((U−1)/U Σ_u (θ_(u) − θ̄)²) and the bias-corrected estimate
    U θ̂ − (U−1) θ̄, θ̂ = func(means of the used samples). Returns ``(estimate, stderr)``.
    """
    if not series:
        raise ValueError("series: give at least one data array")
    arrays = [_layout(s, axis, chain_axis)[0] for s in series]
    for k, xs in enumerate(arrays):
        if xs.shape != arrays[0].shape:
            raise ValueError(f"series must share one shape; series 0 is {arrays[0].shape}, series {k} is {xs.shape}")
    units = [_units(xs, n_blocks, "n_blocks") for xs in arrays]
    n_units = units[0].shape[0]
    full = [u.mean(axis=0) for u in units]
    theta = np.asarray(func(*full), dtype=np.float64)
    loo = np.stack(
        [np.asarray(func(*[(f * n_units - u[i]) / (n_units - 1) for f, u in zip(full, units)]), dtype=np.float64)
         for i in range(n_units)]
    )
    loo_mean = loo.mean(axis=0)
    err = np.sqrt((n_units - 1) / n_units * ((loo - loo_mean) ** 2).sum(axis=0))
    est = n_units * theta - (n_units - 1) * loo_mean
    return (float(est), float(err)) if est.ndim == 0 else (est, err)
