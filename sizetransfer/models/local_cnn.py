"""Local CNN students (docs/method.md, "Students").

``LocalCNN`` is the raw network F_θ(x, c_noise, cond); :class:`~sizetransfer.models.precond.EDMPrecond`
wraps it into the EDM denoiser D_θ; ``LocalScoreCNN`` composes them and returns the score
s_θ(x, σ) = (D_θ(x, σ) − x) / σ².

Locality: an input conv, B residual blocks of two convs and an output conv, each of kernel 3^d or
1^d. The receptive radius R (Chebyshev distance, minimum image on a torus) is the number of 3^d
convs: ``radius=None`` makes them all 3^d (R = 2B + 2, the paper's students); ``radius=R`` keeps
the first R convs 3^d in order (input conv, block 1, ...) and makes the rest 1^d, so depth and
radius are set apart; ``dilations=(d_1, ..., d_{2B+2})`` dilates the k-th conv by d_k (d_k = 0: a 1^d
conv), R = Σ d_k (reach at the cost of B, e.g. (1, 2, 4, 4): R = 11 at B = 1; (1, 2, 2, 3, 0, 0, 0, 0): R = 8
from the same four 3^d convs as ``radius=4`` at B = 3); ``stem_radius=s`` makes the input conv
(2s + 1)^d, a wide linear stem whose every offset is one weight away from the loss (R = s + the number
of later 3^d convs; it learns a broad response that a stack of 3^d convs reaches only at its rim,
docs/training.md); ``skip_radius=s`` adds a σ-modulated linear skip of radius s from the input to the output
(:class:`~sizetransfer.models.linear_skip.LinearSkip`; R = max(conv radius, s)). Nothing pools over the
lattice: the
normalisation (``norm="site"``) is over the channels of each site, and the noise level enters as a
per-sample FiLM, so the same weights run at any lattice size L and the output at site i depends only
on the inputs within d∞ ≤ R of i.

Global features (``global_features`` = k > 0, the remedy student of docs/method.md): after the input
conv and after every block a :class:`~sizetransfer.models.global_features.GlobalFiLM` modulates the
hidden state by k lattice means of learned per-site features. The model is then no longer local:
``receptive_radius`` stays the radius R of its convolutions (the local part, still checked against the
training size: it must not see its own periodic image), while every site also enters the output
through the intensive means, with weight O(1/N); ``is_local`` is False. Same weights at every L, cost
linear in the number of sites. k = 0 (default) builds exactly the local student.

Two layouts (``film``):
* ``"conv"`` (default): every conv, the output conv included, is preceded by
  site-norm → FiLM(σ) → SiLU (pre-activation), the FiLMs start at the identity and the output
  conv at zero, so the initial student is the Gaussian score −x/(σ² + σ_d²).
* ``"block"``: the first recipe's student: no norm, one FiLM after the first conv of each block,
  default initialisation (kept for the ablation in docs/training.md).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .precond import EDMPrecond

FILM_LAYOUTS = ("conv", "block")
NORMS = ("site", "none")


def _conv(dim: int, c_in: int, c_out: int, periodic: bool, kernel: int = 3, dilation: int = 1) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    return conv(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                padding_mode="circular" if periodic else "zeros")


def _check_dilations(dilations, n_convs: int, radius_given: bool) -> tuple[int, ...] | None:
    """``dilations`` as a tuple, or ValueError: one integer >= 0 per conv (2B + 2; 0 makes that conv 1^d), summing
    to >= 1, not with ``radius``, and covering: every offset |r| <= Σ d is a sum Σ c_k d_k with c_k ∈ {-1, 0, 1},
    so the receptive field is the whole Chebyshev ball of radius Σ d (dilations (1, 2, 4, 4): R = 11;
    (2, 2, 2, 2) reaches only even offsets; (1, 2, 2, 3, 0, 0, 0, 0): R = 8 from four 3^d convs)."""
    if dilations is None:
        return None
    d = tuple(dilations)
    if len(d) != n_convs or any(int(k) != k or k < 0 for k in d) or sum(d) < 1:
        raise ValueError(f"dilations must be {n_convs} integers >= 0 (one per conv: 2*blocks+2; 0 makes the conv "
                         f"1x1), at least one of them >= 1, got {list(d)}")
    if radius_given:
        raise ValueError("dilations and radius cannot both be set: with dilations the radius is their sum")
    reach = {0}
    for k in d:
        reach = {r + c * k for r in reach for c in (-1, 0, 1)}
    gaps = sorted(set(range(1, sum(d) + 1)) - reach)
    if gaps:
        raise ValueError(f"dilations {list(d)} leave offsets {gaps} out of the receptive field: use dilations whose "
                         f"signed sums cover every offset up to their sum, e.g. [1, 2, 4, 4]")
    return tuple(int(k) for k in d)


class SiteNorm(nn.Module):
    """Normalise over the channels at each site: (h − mean_c h) / √(var_c h + eps), (n, C, *lattice).

    No statistic pools over the lattice (unlike GroupNorm/BatchNorm), so the layer is local."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # two plain reductions: the same biased-variance formula as var_mean, 2x faster on CPU over the
        # strided channel axis of (n, C, *lattice)
        centred = h - h.mean(dim=1, keepdim=True)
        return centred * torch.rsqrt(centred.square().mean(dim=1, keepdim=True) + self.eps)


class FiLM(nn.Module):
    """h (1 + scale(emb)) + shift(emb), one (scale, shift) per sample and channel; ``identity_init``
    zeroes the projection so the layer starts as the identity."""

    def __init__(self, emb_width: int, width: int, identity_init: bool = True):
        super().__init__()
        self.proj = nn.Linear(emb_width, 2 * width)
        if identity_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(emb).view(h.shape[0], 2, h.shape[1], *([1] * (h.dim() - 2))).unbind(1)
        return h * (1 + scale) + shift


class PreActConv(nn.Module):
    """conv(SiLU(FiLM(norm(h), emb))): the unit of the ``film="conv"`` layout."""

    def __init__(self, c_in: int, c_out: int, dim: int, periodic: bool, emb_width: int, kernel: int, norm: str,
                 dilation: int = 1):
        super().__init__()
        self.norm = SiteNorm() if norm == "site" else nn.Identity()
        self.film = FiLM(emb_width, c_in)
        self.conv = _conv(dim, c_in, c_out, periodic, kernel, dilation)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.film(self.norm(h), emb)))


class ResidualBlock(nn.Module):
    """h + unit2(unit1(h)); kernels (k1, k2) ∈ {1, 3}, dilations (d1, d2) ≥ 1.

    ``film="conv"``: units are :class:`PreActConv`; with ``mlp_ratio`` r > 0 ``mlp_depth`` per-site MLPs
    follow, each h + unit1ˣ¹(unit1ˣ¹(h)) with widths w → r·w → w (1^d kernels: more capacity and depth, same
    radius).
    ``film="block"``: h + conv2(SiLU(FiLM(conv1(SiLU(h))))), the first recipe's block (no norm)."""

    def __init__(self, width: int, dim: int, periodic: bool, emb_width: int, kernels=(3, 3),
                 film: str = "conv", norm: str = "site", mlp_ratio: int = 0, dilations=(1, 1), mlp_depth: int = 1):
        super().__init__()
        self.layout = film
        self.mlp = None
        if film == "conv":
            self.unit1 = PreActConv(width, width, dim, periodic, emb_width, kernels[0], norm, dilations[0])
            self.unit2 = PreActConv(width, width, dim, periodic, emb_width, kernels[1], norm, dilations[1])
            if mlp_ratio:  # units 2k, 2k + 1 are the k-th MLP (depth 1: the keys mlp.0, mlp.1 of older checkpoints)
                self.mlp = nn.ModuleList(unit for _ in range(mlp_depth) for unit in (
                    PreActConv(width, mlp_ratio * width, dim, periodic, emb_width, 1, norm),
                    PreActConv(mlp_ratio * width, width, dim, periodic, emb_width, 1, "none")))
        else:
            self.norm = SiteNorm() if norm == "site" else nn.Identity()
            self.conv1 = _conv(dim, width, width, periodic, kernels[0], dilations[0])
            self.conv2 = _conv(dim, width, width, periodic, kernels[1], dilations[1])
            self.film = FiLM(emb_width, width, identity_init=False)
            self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.layout == "conv":
            h = h + self.unit2(self.unit1(h, emb), emb)
            for k in range(0, 0 if self.mlp is None else len(self.mlp), 2):
                h = h + self.mlp[k + 1](self.mlp[k](h, emb), emb)
            return h
        y = self.film(self.conv1(self.act(self.norm(h))), emb)
        return h + self.conv2(self.act(y))


class LocalCNN(nn.Module):
    """Raw local network F_θ(x, c_noise, cond) → (n, out_channels, *lattice).

    x (n, in_channels, *lattice), c_noise (n,), cond (n, cond_channels, *lattice) or None
    (concatenated to x at the input). ``receptive_radius`` = ``radius`` or 2 * blocks + 2, the radius of
    the convolutions (``dilations``: one dilation per conv, 3^d, or 1^d where it is 0; R = their sum);
    ``global_features``: number k of intensive lattice-mean features (0: a local network,
    ``is_local``; k > 0 needs ``periodic``). ``emb_width``: width of the noise embedding (default
    ``width``).
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
                 radius: int | None = None, film: str = "conv", norm: str = "site",
                 emb_width: int | None = None, zero_init_output: bool | None = None, mlp_ratio: int = 0,
                 global_features: int = 0, dilations: Sequence[int] | None = None, stem_radius: int = 1,
                 skip_radius: int = 0, mlp_depth: int = 1):
        super().__init__()
        emb_width = width if emb_width is None else emb_width
        for name, value, low in (("blocks", blocks, 0), ("width", width, 1),
                                 ("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("cond_channels", cond_channels, 0), ("emb_width", emb_width, 1),
                                 ("mlp_ratio", mlp_ratio, 0), ("mlp_depth", mlp_depth, 1),
                                 ("global_features", global_features, 0),
                                 ("stem_radius", stem_radius, 1), ("skip_radius", skip_radius, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        n_convs = 2 * blocks + 2
        stem_radius = int(stem_radius)
        self.full_radius = stem_radius + n_convs - 1  # every conv after the stem 3^d, undilated
        if radius is None:
            radius = self.full_radius
        if int(radius) != radius or not stem_radius <= radius <= self.full_radius:
            raise ValueError(f"radius must be an integer in [stem_radius, stem_radius + 2*blocks+1] = "
                             f"[{stem_radius}, {self.full_radius}] (the stem's radius plus one 3^d "
                             f"conv per further unit), got {radius}")
        if stem_radius > 1 and dilations is not None:
            raise ValueError(f"dilations cannot be set with stem_radius={stem_radius} (the stem is undilated)")
        dilations = _check_dilations(dilations, n_convs, radius != n_convs)
        if dilations is not None:
            radius = sum(dilations)
        if film not in FILM_LAYOUTS:
            raise ValueError(f"film must be one of {FILM_LAYOUTS}, got {film!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if mlp_ratio and film != "conv":
            raise ValueError(f"mlp_ratio={mlp_ratio} needs film='conv', got film={film!r}")
        if global_features and not periodic:
            raise ValueError(f"global_features={global_features} needs periodic=True (a lattice mean over an "
                             "open box depends on its boundary share), got periodic=False")
        self.blocks, self.width, self.dim, self.periodic = blocks, width, dim, periodic
        self.in_channels, self.out_channels, self.cond_channels = in_channels, out_channels, cond_channels
        self.radius, self.film, self.norm = int(radius), film, norm
        self.global_features = int(global_features)
        self.dilations, self.stem_radius = dilations, stem_radius
        if dilations is None:  # the stem (2 s + 1)^d, then the next R − s convs 3^d, the others 1^d
            kernels = [2 * stem_radius + 1] + [3 if k < radius - stem_radius else 1 for k in range(n_convs - 1)]
            dilations = [1] * n_convs
        else:  # dilation 0: a 1^d conv (reach 0)
            kernels = [3 if k else 1 for k in dilations]
            dilations = [max(k, 1) for k in dilations]
        self.noise_embed = nn.Sequential(nn.Linear(1, emb_width), nn.SiLU(), nn.Linear(emb_width, emb_width), nn.SiLU())
        self.conv_in = _conv(dim, in_channels + cond_channels, width, periodic, kernels[0], dilations[0])
        self.res = nn.ModuleList(ResidualBlock(width, dim, periodic, emb_width, kernels[1 + 2 * b: 3 + 2 * b], film,
                                               norm, mlp_ratio, dilations[1 + 2 * b: 3 + 2 * b], mlp_depth)
                                 for b in range(blocks))
        if film == "conv":
            self.head = PreActConv(width, out_channels, dim, periodic, emb_width, kernels[-1], norm, dilations[-1])
            conv_out = self.head.conv
        else:
            self.head_act = nn.SiLU()
            self.conv_out = conv_out = _conv(dim, width, out_channels, periodic, kernels[-1], dilations[-1])
        if zero_init_output if zero_init_output is not None else film == "conv":
            nn.init.zeros_(conv_out.weight)
            nn.init.zeros_(conv_out.bias)
        self.skip_radius = int(skip_radius)
        self.skip = None
        if skip_radius:
            from .linear_skip import LinearSkip

            self.skip = LinearSkip(in_channels + cond_channels, out_channels, self.skip_radius, emb_width, dim, periodic)
        self.global_films = None
        if global_features:  # built last: a local student (k = 0) draws exactly the same initial weights
            from .global_features import GlobalFiLM

            self.global_films = nn.ModuleList(GlobalFiLM(width, emb_width, global_features, dim, norm)
                                              for _ in range(blocks + 1))

    @property
    def receptive_radius(self) -> int:
        """Chebyshev radius of the convolutions and the linear skip (with global features: of the local part
        only)."""
        return max(self.radius, self.skip_radius)

    def describe_radius(self, prefix: str = "") -> str:
        """Which options set ``receptive_radius`` and how, for error messages, e.g.
        ``"blocks=1 gives receptive radius 2*blocks+2 = 4"``; option names carry ``prefix`` (``"model."``)."""
        p = prefix
        if self.skip_radius > self.radius:
            return f"{p}skip_radius={self.skip_radius}"
        if self.dilations is not None:
            return f"{p}dilations={list(self.dilations)} give receptive radius sum(dilations) = {self.radius}"
        if self.radius != self.full_radius:
            return f"{p}radius={self.radius}"
        if self.stem_radius > 1:
            return (f"{p}stem_radius={self.stem_radius} and {p}blocks={self.blocks} give receptive radius "
                    f"stem_radius+2*blocks+1 = {self.radius}")
        return f"{p}blocks={self.blocks} gives receptive radius 2*blocks+2 = {self.radius}"

    @property
    def is_local(self) -> bool:
        """True when the output at a site depends only on the inputs within ``receptive_radius`` of it."""
        return self.global_features == 0

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None):
        if x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (n, {self.in_channels}, " + ", ".join(["L"] * self.dim)
                             + f"), got {tuple(x.shape)}")
        if self.cond_channels:
            if cond is None or cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:]:
                raise ValueError(f"cond must have shape (n, {self.cond_channels}, {tuple(x.shape[2:])}), "
                                 f"got {None if cond is None else tuple(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("cond given but the network was built with cond_channels=0")
        emb = self.noise_embed(c_noise.to(x.dtype).reshape(-1, 1))
        h = self.conv_in(x)
        if self.global_films is not None:
            h = self.global_films[0](h, emb)
        for b, block in enumerate(self.res):
            h = block(h, emb)
            if self.global_films is not None:
                h = self.global_films[b + 1](h, emb)
        out = self.head(h, emb) if self.film == "conv" else self.conv_out(self.head_act(h))
        return out if self.skip is None else out + self.skip(x, emb)


class LocalScoreCNN(nn.Module):
    """Local score student s_θ(x, σ) = EDMPrecond(LocalCNN).score (docs/method.md, "Students").

    ``forward(x, sigma, cond=None)``: x (n, in_channels, *lattice), sigma (n,) (or a scalar),
    cond (n, cond_channels, *lattice) → score (n, out_channels, *lattice). The score has the
    channels of x, so ``out_channels`` must equal ``in_channels``. Architecture options as in
    :class:`LocalCNN` (``global_features`` > 0: the remedy student, local convs plus intensive global
    features).
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
                 sigma_data: float = 1.0, radius: int | None = None, film: str = "conv", norm: str = "site",
                 emb_width: int | None = None, zero_init_output: bool | None = None, mlp_ratio: int = 0,
                 global_features: int = 0, dilations: Sequence[int] | None = None, stem_radius: int = 1,
                 skip_radius: int = 0, mlp_depth: int = 1):
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(f"out_channels must equal in_channels ({in_channels}) for a score, "
                             f"got {out_channels}")
        self.denoiser = EDMPrecond(LocalCNN(blocks, width, dim, periodic, in_channels, out_channels,
                                            cond_channels, radius, film, norm, emb_width, zero_init_output,
                                            mlp_ratio, global_features, dilations, stem_radius, skip_radius,
                                            mlp_depth),
                                   sigma_data)

    @property
    def net(self) -> LocalCNN:
        return self.denoiser.net

    @property
    def receptive_radius(self) -> int:
        return self.net.receptive_radius

    @property
    def is_local(self) -> bool:
        return self.net.is_local

    @property
    def geometry(self) -> dict:
        """What data this student takes: ``dim``, ``periodic``, ``in_channels``, ``cond_channels``."""
        net = self.net
        return {"dim": net.dim, "periodic": net.periodic, "in_channels": net.in_channels,
                "cond_channels": net.cond_channels}

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        return self.denoiser.score(x, sigma, cond)
