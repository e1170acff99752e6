"""Finite-depth local flow (FDLF) teachers on the periodic square lattice (paper Appendix B.2).

x = F(u) = M_κ ∘ T_flow ∘ S ∘ T_pre (u), u ~ N(0, I) on (Z/LZ)², fields (n, 1, L, L).
Every layer is a checkerboard *half-layer*: it updates the sites of one parity
P(i) = (i_1 + i_2) mod 2 from the sites of the other parity, so it is exactly invertible.
Depth k means k pairs of half-layers (parity 0, then parity 1). Exact log density (Eq. 15):
log p(x) = log N(F⁻¹(x); 0, I) + log|det ∂F⁻¹/∂x|; the clean score is its autograd gradient.
All parameters come from the teacher seed and are the same at every L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import nn

from sizetransfer.lattice import shell_sums


@lru_cache(maxsize=64)
def parity_mask(L: int, parity: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """1 on the sites with (i_1 + i_2) mod 2 == parity, else 0; shape (L, L) (cached: do not modify)."""
    i = torch.arange(L, device=device)
    return ((i[:, None] + i[None, :]) % 2 == parity).to(dtype)


class Conditioner(nn.Module):
    """Radius-1 local CNN: periodic 3×3 conv (1 → hidden) → tanh → 1×1 conv (hidden → 2), × gain.

    Applied to the conditioning parity B (the updated parity A masked out), the centre and
    diagonal taps of the 3×3 conv see only masked sites, so the conv reduces exactly to its 4
    nearest-neighbour taps, applied here as a matmul over the stacked neighbours (cheaper to
    differentiate than a padded conv). Those neighbours of an A site are all B sites, so the
    mask is implicit: the input is the full field (n, 1, L, L) and the outputs are used at A sites
    only. Output: the log-scale pre-activation a and the shift b, each (n, 1, L, L). Weights are
    fixed buffers drawn from ``generator``: taps and first bias N(0, 1/4), 1×1 conv N(0, 1/hidden),
    no output bias.
    """

    def __init__(self, generator: torch.Generator, hidden: int = 8, gain: float = 0.3):
        super().__init__()
        self.gain = float(gain)
        self.register_buffer("w1", torch.randn(4, hidden, generator=generator, dtype=torch.float64) / 2)
        self.register_buffer("b1", torch.randn(hidden, generator=generator, dtype=torch.float64) / 2)
        self.register_buffer("w2", torch.randn(hidden, 2, generator=generator, dtype=torch.float64)
                             * (self.gain / math.sqrt(hidden)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = x[:, 0]
        neighbours = torch.stack([f.roll(1, -2), f.roll(-1, -2), f.roll(1, -1), f.roll(-1, -1)], -1)
        h = torch.tanh(torch.addmm(self.b1, neighbours.reshape(-1, 4), self.w1))
        a, b = (h @ self.w2).reshape(*f.shape, 2).unbind(-1)
        return a.unsqueeze(1), b.unsqueeze(1)


class AffineCoupling(nn.Module):
    """Checkerboard affine half-layer (RealNVP): x_A ← x_A ⊙ exp(c·tanh(a(x_B)/c)) + b(x_B).

    A = sites of ``parity``, B = the others; c = ``clip`` bounds the log-scale.
    forward/inverse take (n, 1, L, L) and return (field, log|det| of that direction, shape (n,)).
    """

    def __init__(self, parity: int, conditioner: Conditioner, clip: float = 1.5):
        super().__init__()
        self.parity, self.conditioner, self.clip = parity, conditioner, float(clip)

    def _scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask_a = parity_mask(x.shape[-1], self.parity, dtype=x.dtype, device=x.device)
        a, b = self.conditioner(x)  # at A sites a function of x_B only
        return self.clip * torch.tanh(a / self.clip) * mask_a, b * mask_a

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._scale_shift(x)
        return x * torch.exp(log_scale) + shift, log_scale.sum((1, 2, 3))

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._scale_shift(y)  # y_B = x_B
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum((1, 2, 3))


class PowerLawKernel(nn.Module):
    """Smoother kernel K(a, b) = α (a² + b²)^{-p/2} on the opposite-parity offsets (a + b odd) with
    1 ≤ max(|a|, |b|) ≤ C, applied as a periodic convolution by FFT (spectrum cached per L).

    Requires L ≥ 2C + 1 so that offsets ±C do not alias. Σ K (α included) is the half-layer's
    low-frequency gain (0.97 for medium_range, 0.85 for complex_long).
    """

    def __init__(self, cutoff: int, power: float, alpha: float):
        super().__init__()
        self.cutoff, self.power, self.alpha = int(cutoff), float(power), float(alpha)
        r = torch.arange(-self.cutoff, self.cutoff + 1, dtype=torch.float64)
        a, b = r[:, None], r[None, :]
        odd = (a + b).remainder(2) == 1
        self.register_buffer("weights", torch.where(odd, self.alpha * (a ** 2 + b ** 2).clamp_min(1) ** (-self.power / 2),
                                                    torch.zeros(())))
        self._spectra: dict[tuple, torch.Tensor] = {}

    def spectrum(self, L: int, dtype, device) -> torch.Tensor:
        """rfft2 of the kernel placed at its offsets mod L, complex (L, L // 2 + 1), cached."""
        key = (L, dtype, str(device))
        if key not in self._spectra:
            idx = torch.arange(-self.cutoff, self.cutoff + 1) % L
            grid = torch.zeros(L, L, dtype=dtype, device=device)
            grid[idx[:, None], idx[None, :]] = self.weights.to(dtype=dtype, device=device)
            self._spectra[key] = torch.fft.rfft2(grid)
        return self._spectra[key]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(K ⊛ f)_i = Σ_j K(i − j) f_j for f (n, 1, L, L)."""
        return SymmetricCirculant.apply(f, self.spectrum(f.shape[-1], f.dtype, f.device))


class SymmetricCirculant(torch.autograd.Function):
    """f ↦ K ⊛ f by FFT for a symmetric kernel K (real spectrum up to rounding): the operator is
    self-adjoint, so its backward is the same convolution (one rfft2/irfft2 pair, differentiable
    again for Hessian rows) instead of autograd's complex-FFT chain."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(spectrum)
        L = f.shape[-1]
        return torch.fft.irfft2(torch.fft.rfft2(f) * spectrum, s=(L, L))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (spectrum,) = ctx.saved_tensors
        return SymmetricCirculant.apply(grad, spectrum), None


class AdditiveSmoother(nn.Module):
    """Parity-masked additive half-layer: x_A ← x_A + (K ⊛ φ(x))_A, φ = tanh or identity; log|det| = 0.

    K has only opposite-parity offsets, so sites of parity A see only sites of B.
    """

    def __init__(self, parity: int, kernel: PowerLawKernel, nonlinear: bool = True):
        super().__init__()
        self.parity, self.kernel, self.nonlinear = parity, kernel, bool(nonlinear)

    def _increment(self, x: torch.Tensor) -> torch.Tensor:
        mask_a = parity_mask(x.shape[-1], self.parity, dtype=x.dtype, device=x.device)
        return self.kernel(torch.tanh(x) if self.nonlinear else x) * mask_a

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + self._increment(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y - self._increment(y), y.new_zeros(y.shape[0])


class MeanMode(nn.Module):
    """Global mean mode M(y) = y + (a − 1)(m(y) − μ₀) 1, m = site mean, a = κ L^{d/2} / c₀.

    c₀ = √(N Var m(y)) and μ₀ = E m(y) are constants of the field before M, measured once when the
    teacher is built (the centring by μ₀ keeps E x size-uniform; the paper's M has μ₀ = 0). Then m(x)
    has standard deviation κ at every L. log|det ∂M/∂y| = log a.
    """

    def __init__(self, kappa: float, c0: float = 1.0, mu0: float = 0.0):
        super().__init__()
        self.kappa, self.c0, self.mu0 = float(kappa), float(c0), float(mu0)

    def amplitude(self, L: int) -> float:
        return self.kappa * L / self.c0

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.amplitude(y.shape[-1])
        m = y.mean((1, 2, 3), keepdim=True)
        return y + (a - 1) * (m - self.mu0), y.new_full((y.shape[0],), math.log(a))

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.amplitude(x.shape[-1])
        m_x = x.mean((1, 2, 3), keepdim=True)  # m(x) − μ₀ = a (m(y) − μ₀)
        return x - (1 - 1 / a) * (m_x - self.mu0), x.new_full((x.shape[0],), -math.log(a))


@dataclass(frozen=True)
class FDLFConfig:
    """Construction of one FDLF family (paper Appendix B.2; docs/teachers.md)."""

    key: str
    pre_depth: int              # T_pre: affine coupling pairs
    flow_depth: int             # T_flow: affine coupling pairs
    smoother_depth: int = 0     # S: additive smoother pairs
    cutoff: int = 0             # smoother cutoff C (Chebyshev)
    power: float = 2.0          # smoother distance power p
    alpha: float = 0.0          # smoother strength α
    nonlinear: bool = True      # φ = tanh (else identity)
    gain: float = 0.3           # conditioner output gain g
    clip: float = 1.5           # affine log-scale clip c
    hidden: int = 8             # conditioner width
    mean_mode: bool = False     # apply M_κ
    kappa: float = 0.2          # std of the global offset when mean_mode


# complex_long: α 0.09 and g 0.15 instead of a prototype's 0.08 and 0.3, which gave a tail
# beyond 8 of only 0.25–0.28 at L = 64 with these conditioner draws (now 0.28–0.30, α·ΣK = 0.85).
FAMILIES: dict[str, FDLFConfig] = {
    "simple_local": FDLFConfig("simple_local", pre_depth=1, flow_depth=1, gain=0.3),
    "complex_local": FDLFConfig("complex_local", pre_depth=1, flow_depth=1, smoother_depth=1, cutoff=1,
                                alpha=0.2, gain=0.3),
    "medium_range": FDLFConfig("medium_range", pre_depth=2, flow_depth=2, smoother_depth=3, cutoff=5,
                               power=2.0, alpha=0.12, gain=0.15),
    "complex_long": FDLFConfig("complex_long", pre_depth=2, flow_depth=2, smoother_depth=6, cutoff=8,
                               power=2.0, alpha=0.09, gain=0.15, mean_mode=True, kappa=0.2),
}

#: Sites per forward pass of :meth:`FDLFTeacher.sample` (at least one whole sample): bounds the memory of
#: sampling many samples at large L (one L = 1024 sample, 2^20 sites, peaks at about 260 MiB).
SAMPLE_CHUNK_SITES = 2 ** 20

# Size and sample count of the one-off measurement of the mean-mode constants (c₀, μ₀).
MEAN_MODE_CALIBRATION = dict(L=32, n=512)
_MEAN_MODE_CONSTANTS: dict[tuple, tuple[float, float]] = {}


class FDLFTeacher(nn.Module):
    """An FDLF teacher: exact samples, log density, clean score and score response on (Z/LZ)².

    Fields are (n, 1, L, L); computation in ``dtype`` (float64 by default); results of
    ``log_prob``/``score``/``hessian_row`` come back in the input's dtype.
    ``receptive_cutoff``: Chebyshev reach of one smoother half-layer (C, 0 without smoother);
    ``min_size``: the smallest allowed L (even, ≥ 4 for the radius-1 conditioner, ≥ 2C + 1).
    """

    dim, channels, periodic = 2, 1, True

    def __init__(self, config: FDLFConfig, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.config, self.seed, self.dtype = config, int(seed), dtype
        self.key = config.key
        gen = torch.Generator().manual_seed(self.seed)

        def couplings(depth: int) -> list[AffineCoupling]:
            return [AffineCoupling(parity, Conditioner(gen, config.hidden, config.gain), config.clip)
                    for _ in range(depth) for parity in (0, 1)]

        layers: list[nn.Module] = couplings(config.pre_depth)
        if config.smoother_depth:
            kernel = PowerLawKernel(config.cutoff, config.power, config.alpha)
            layers += [AdditiveSmoother(parity, kernel, config.nonlinear)
                       for _ in range(config.smoother_depth) for parity in (0, 1)]
        layers += couplings(config.flow_depth)
        self.layers = nn.ModuleList(layers)
        self.receptive_cutoff = config.cutoff if config.smoother_depth else 0
        self.min_size = max(4, 2 * self.receptive_cutoff + 1 + (2 * self.receptive_cutoff + 1) % 2)
        self.mean_mode = None
        self.to(dtype)
        if config.mean_mode:
            self.mean_mode = MeanMode(config.kappa, *self._measure_mean_mode())

    def __repr__(self) -> str:
        return f"FDLFTeacher({self.config}, seed={self.seed})"

    def _measure_mean_mode(self) -> tuple[float, float]:
        """(c₀, μ₀) of the field before M: √(N Var m(y)) and E m(y) from a fixed-seed batch
        (computed once per (family, seed, dtype) per process)."""
        cache_key = (self.config, self.seed, self.dtype)
        if cache_key not in _MEAN_MODE_CONSTANTS:
            _MEAN_MODE_CONSTANTS[cache_key] = self._mean_mode_statistics()
        return _MEAN_MODE_CONSTANTS[cache_key]

    def _mean_mode_statistics(self) -> tuple[float, float]:
        L, n = MEAN_MODE_CALIBRATION["L"], MEAN_MODE_CALIBRATION["n"]
        gen = torch.Generator().manual_seed(self.seed + 7919)
        u = torch.randn(n, 1, L, L, generator=gen, dtype=self.dtype)
        with torch.no_grad():
            m = self._flow(u).mean((1, 2, 3)).double()
        return math.sqrt(L * L * float(m.var())), float(m.mean())

    def check_size(self, L: int) -> None:
        """Raise ValueError unless L is an even integer ≥ ``min_size``."""
        if int(L) != L or L < self.min_size or L % 2:
            raise ValueError(
                f"L must be an even integer >= {self.min_size} for teacher {self.key!r} (checkerboard needs "
                f"even L, radius-1 conditioner L >= 4, smoother cutoff C = {self.receptive_cutoff} needs "
                f"L >= 2C + 1), got {L}")

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
            raise ValueError(f"x must have shape (n, 1, L, L), got {tuple(x.shape)}")
        self.check_size(x.shape[-1])
        return x.to(self.dtype)

    def _flow(self, u: torch.Tensor) -> torch.Tensor:
        """T_flow ∘ S ∘ T_pre (u), without the mean mode."""
        for layer in self.layers:
            u, _ = layer(u)
        return u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """x = F(u) for latent u (n, 1, L, L)."""
        x = self._flow(self._check_x(u))
        return x if self.mean_mode is None else self.mean_mode(x)[0]

    transform = forward

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u = F⁻¹(x), log|det ∂F⁻¹/∂x| of shape (n,))."""
        x = self._check_x(x)
        log_det = x.new_zeros(x.shape[0])
        if self.mean_mode is not None:
            x, ld = self.mean_mode.inverse(x)
            log_det = log_det + ld
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """u = F⁻¹(x), (n, 1, L, L)."""
        return self.inverse_and_log_det(x)[0]

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples (n, 1, L, L) in the teacher's dtype, on the generator's device.

        The latents of all n samples are drawn at once (one stream), then mapped in chunks of at most
        ``SAMPLE_CHUNK_SITES`` sites (at least one sample), so the result does not depend on the chunking."""
        self.check_size(L)
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        device = generator.device if generator is not None else next(self.buffers()).device
        u = torch.randn(int(n), 1, L, L, generator=generator, dtype=self.dtype, device=device)
        per = max(1, SAMPLE_CHUNK_SITES // (L * L))
        with torch.no_grad():
            if n <= per:
                return self.forward(u)
            return torch.cat([self.forward(u[a:a + per]) for a in range(0, int(n), per)])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p_L(x), shape (n,) in x's dtype."""
        u, log_det = self.inverse_and_log_det(x)
        lp = -0.5 * u.square().sum((1, 2, 3)) - 0.5 * u[0].numel() * math.log(2 * math.pi) + log_det
        return lp.to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact clean score ∇_x log p_L(x) by one backward pass, (n, 1, L, L) in x's dtype."""
        xd = self._check_x(x).detach().requires_grad_(True)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(self.log_prob(xd).sum(), xd)
        return s.to(x.dtype)

    def hessian_row(self, x: torch.Tensor, site: Sequence[int]) -> torch.Tensor:
        """Exact row ∂s_i/∂x_j (all j) of the score Jacobian at probe site i, (n, 1, L, L) in x's dtype."""
        xd = self._check_x(x).detach().requires_grad_(True)
        L = xd.shape[-1]
        i1, i2 = (int(c) for c in site)
        if len(site) != 2 or not (0 <= i1 < L and 0 <= i2 < L):
            raise ValueError(f"site must be two coordinates in [0, {L - 1}], got {tuple(site)}")
        with torch.enable_grad():
            (s,) = torch.autograd.grad(self.log_prob(xd).sum(), xd, create_graph=True)
            (row,) = torch.autograd.grad(s[:, 0, i1, i2].sum(), xd)
        return row.to(x.dtype)

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int) -> torch.Tensor:
        """ρ(r) = Σ_{d∞(i,j)=r} |∂s_i/∂x_j| for r = 0..r_max (r_max ≥ L/2 covers the lattice), (n, r_max + 1)."""
        return shell_sums(self.hessian_row(x, site)[:, 0], site, r_max, periodic=True)


def make_fdlf(key: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> FDLFTeacher:
    """The FDLF family ``key`` (one of ``FAMILIES``) with parameters drawn from ``seed``."""
    if key not in FAMILIES:
        raise ValueError(f"FDLF family must be one of {sorted(FAMILIES)}, got {key!r}")
    return FDLFTeacher(FAMILIES[key], seed=seed, dtype=dtype)
