"""Local CNN students (docs/method.md, "Students").

``LocalCNN`` is the raw network F_θ(x, c_noise, cond); :class:`~sizetransfer.models.precond.EDMPrecond`
wraps it into the EDM denoiser D_θ; ``LocalScoreCNN`` composes them and returns the score
s_θ(x, σ) = (D_θ(x, σ) − x) / σ².

Locality: an input conv, B residual blocks of two convs and an output conv, each of kernel 3^d or
1^d. The receptive radius R (Chebyshev distance, minimum image on a torus) is the number of 3^d
convs: ``radius=None`` makes them all 3^d (R = 2B + 2, the paper's students); ``radius=R`` keeps
the first R convs 3^d in order (input conv, block 1, ...) and makes the rest 1^d, so depth and
radius are set apart. Nothing pools over the lattice: the normalisation (``norm="site"``) is over
the channels of each site, and the noise level enters as a per-sample FiLM, so the same weights
run at any lattice size L and the output at site i depends only on the inputs within d∞ ≤ R of i.

Two layouts (``film``):
* ``"conv"`` (default): every conv, the output conv included, is preceded by
  site-norm → FiLM(σ) → SiLU (pre-activation), the FiLMs start at the identity and the output
  conv at zero, so the initial student is the Gaussian score −x/(σ² + σ_d²).
* ``"block"``: the first recipe's student: no norm, one FiLM after the first conv of each block,
  default initialisation (kept for the ablation in docs/training.md).
"""
from __future__ import annotations

import torch
from torch import nn

from .precond import EDMPrecond

FILM_LAYOUTS = ("conv", "block")
NORMS = ("site", "none")


def _conv(dim: int, c_in: int, c_out: int, periodic: bool, kernel: int = 3) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    return conv(c_in, c_out, kernel, padding=kernel // 2, padding_mode="circular" if periodic else "zeros")


class SiteNorm(nn.Module):
    """Normalise over the channels at each site: (h − mean_c h) / √(var_c h + eps), (n, C, *lattice).

    No statistic pools over the lattice (unlike GroupNorm/BatchNorm), so the layer is local."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
        return (h - mean) * torch.rsqrt(var + self.eps)


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

    def __init__(self, c_in: int, c_out: int, dim: int, periodic: bool, emb_width: int, kernel: int, norm: str):
        super().__init__()
        self.norm = SiteNorm() if norm == "site" else nn.Identity()
        self.film = FiLM(emb_width, c_in)
        self.conv = _conv(dim, c_in, c_out, periodic, kernel)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.film(self.norm(h), emb)))


class ResidualBlock(nn.Module):
    """h + unit2(unit1(h)); kernels (k1, k2) ∈ {1, 3}.

    ``film="conv"``: units are :class:`PreActConv`; with ``mlp_ratio`` r > 0 a per-site MLP follows,
    h + unit1ˣ¹(unit1ˣ¹(h)) with widths w → r·w → w (1^d kernels: more capacity, same radius).
    ``film="block"``: h + conv2(SiLU(FiLM(conv1(SiLU(h))))), the first recipe's block (no norm)."""

    def __init__(self, width: int, dim: int, periodic: bool, emb_width: int, kernels=(3, 3),
                 film: str = "conv", norm: str = "site", mlp_ratio: int = 0):
        super().__init__()
        self.layout = film
        self.mlp = None
        if film == "conv":
            self.unit1 = PreActConv(width, width, dim, periodic, emb_width, kernels[0], norm)
            self.unit2 = PreActConv(width, width, dim, periodic, emb_width, kernels[1], norm)
            if mlp_ratio:
                self.mlp = nn.ModuleList([PreActConv(width, mlp_ratio * width, dim, periodic, emb_width, 1, norm),
                                          PreActConv(mlp_ratio * width, width, dim, periodic, emb_width, 1, "none")])
        else:
            self.norm = SiteNorm() if norm == "site" else nn.Identity()
            self.conv1 = _conv(dim, width, width, periodic, kernels[0])
            self.conv2 = _conv(dim, width, width, periodic, kernels[1])
            self.film = FiLM(emb_width, width, identity_init=False)
            self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.layout == "conv":
            h = h + self.unit2(self.unit1(h, emb), emb)
            return h if self.mlp is None else h + self.mlp[1](self.mlp[0](h, emb), emb)
        y = self.film(self.conv1(self.act(self.norm(h))), emb)
        return h + self.conv2(self.act(y))


class LocalCNN(nn.Module):
    """Raw local network F_θ(x, c_noise, cond) → (n, out_channels, *lattice).

    x (n, in_channels, *lattice), c_noise (n,), cond (n, cond_channels, *lattice) or None
    (concatenated to x at the input). ``receptive_radius`` = ``radius`` or 2 * blocks + 2.
    ``emb_width``: width of the noise embedding (default ``width``).
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
                 radius: int | None = None, film: str = "conv", norm: str = "site",
                 emb_width: int | None = None, zero_init_output: bool | None = None, mlp_ratio: int = 0):
        super().__init__()
        emb_width = width if emb_width is None else emb_width
        for name, value, low in (("blocks", blocks, 0), ("width", width, 1),
                                 ("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("cond_channels", cond_channels, 0), ("emb_width", emb_width, 1),
                                 ("mlp_ratio", mlp_ratio, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        n_convs = 2 * blocks + 2
        if radius is None:
            radius = n_convs
        if int(radius) != radius or not 1 <= radius <= n_convs:
            raise ValueError(f"radius must be an integer in [1, 2*blocks+2 = {n_convs}] (one 3^d conv per "
                             f"unit of radius), got {radius}")
        if film not in FILM_LAYOUTS:
            raise ValueError(f"film must be one of {FILM_LAYOUTS}, got {film!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if mlp_ratio and film != "conv":
            raise ValueError(f"mlp_ratio={mlp_ratio} needs film='conv', got film={film!r}")
        self.blocks, self.width, self.dim, self.periodic = blocks, width, dim, periodic
        self.in_channels, self.out_channels, self.cond_channels = in_channels, out_channels, cond_channels
        self.radius, self.film, self.norm = int(radius), film, norm
        kernels = [3 if k < radius else 1 for k in range(n_convs)]  # the first R convs are 3^d
        self.noise_embed = nn.Sequential(nn.Linear(1, emb_width), nn.SiLU(), nn.Linear(emb_width, emb_width), nn.SiLU())
        self.conv_in = _conv(dim, in_channels + cond_channels, width, periodic, kernels[0])
        self.res = nn.ModuleList(ResidualBlock(width, dim, periodic, emb_width, kernels[1 + 2 * b: 3 + 2 * b], film, norm,
                                               mlp_ratio) for b in range(blocks))
        if film == "conv":
            self.head = PreActConv(width, out_channels, dim, periodic, emb_width, kernels[-1], norm)
            conv_out = self.head.conv
        else:
            self.head_act = nn.SiLU()
            self.conv_out = conv_out = _conv(dim, width, out_channels, periodic, kernels[-1])
        if zero_init_output if zero_init_output is not None else film == "conv":
            nn.init.zeros_(conv_out.weight)
            nn.init.zeros_(conv_out.bias)

    @property
    def receptive_radius(self) -> int:
        return self.radius

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
        for block in self.res:
            h = block(h, emb)
        if self.film == "conv":
            return self.head(h, emb)
        return self.conv_out(self.head_act(h))


class LocalScoreCNN(nn.Module):
    """Local score student s_θ(x, σ) = EDMPrecond(LocalCNN).score (docs/method.md, "Students").

    ``forward(x, sigma, cond=None)``: x (n, in_channels, *lattice), sigma (n,) (or a scalar),
    cond (n, cond_channels, *lattice) → score (n, out_channels, *lattice). The score has the
    channels of x, so ``out_channels`` must equal ``in_channels``. Architecture options as in
    :class:`LocalCNN`.
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
                 sigma_data: float = 1.0, radius: int | None = None, film: str = "conv", norm: str = "site",
                 emb_width: int | None = None, zero_init_output: bool | None = None, mlp_ratio: int = 0):
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(f"out_channels must equal in_channels ({in_channels}) for a score, "
                             f"got {out_channels}")
        self.denoiser = EDMPrecond(LocalCNN(blocks, width, dim, periodic, in_channels, out_channels,
                                            cond_channels, radius, film, norm, emb_width, zero_init_output,
                                            mlp_ratio),
                                   sigma_data)

    @property
    def net(self) -> LocalCNN:
        return self.denoiser.net

    @property
    def receptive_radius(self) -> int:
        return self.net.receptive_radius

    @property
    def geometry(self) -> dict:
        """What data this student takes: ``dim``, ``periodic``, ``in_channels``, ``cond_channels``."""
        net = self.net
        return {"dim": net.dim, "periodic": net.periodic, "in_channels": net.in_channels,
                "cond_channels": net.cond_channels}

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        return self.denoiser.score(x, sigma, cond)
