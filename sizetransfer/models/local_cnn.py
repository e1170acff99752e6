"""Local CNN students (DESIGN.md section 4).

``LocalCNN`` is the raw network F_θ(x, c_noise, cond); ``EDMPrecond`` wraps any such network
into the EDM denoiser D_θ; ``LocalScoreCNN`` composes them and returns the score
s_θ(x, σ) = (D_θ(x, σ) − x) / σ².

Locality: an input conv 3^d, B residual blocks of two convs 3^d and an output conv 3^d give a
receptive radius R = 2B + 2 in Chebyshev distance (minimum image on a torus). Nothing pools
over the lattice (no normalisation layers; noise conditioning is a per-sample FiLM), so the
same weights run at any lattice size L and the output at site i depends only on the inputs
within d∞ ≤ R of i.
"""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion.noise import expand_sigma


def _conv(dim: int, c_in: int, c_out: int, periodic: bool) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    return conv(c_in, c_out, 3, padding=1, padding_mode="circular" if periodic else "zeros")


class ResidualBlock(nn.Module):
    """h + conv(SiLU(FiLM(conv(SiLU(h))))), FiLM (1 + scale, shift) per sample from the noise embedding."""

    def __init__(self, width: int, dim: int, periodic: bool, emb_width: int):
        super().__init__()
        self.conv1 = _conv(dim, width, width, periodic)
        self.conv2 = _conv(dim, width, width, periodic)
        self.film = nn.Linear(emb_width, 2 * width)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).view(h.shape[0], 2, h.shape[1], *([1] * (h.dim() - 2))).unbind(1)
        y = self.conv1(self.act(h))
        y = y * (1 + scale) + shift
        return h + self.conv2(self.act(y))


class LocalCNN(nn.Module):
    """Raw local network F_θ(x, c_noise, cond) → (n, out_channels, *lattice).

    x (n, in_channels, *lattice), c_noise (n,), cond (n, cond_channels, *lattice) or None
    (concatenated to x at the input). ``receptive_radius = 2 * blocks + 2``.
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0):
        super().__init__()
        for name, value, low in (("blocks", blocks, 0), ("width", width, 1),
                                 ("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("cond_channels", cond_channels, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.blocks, self.width, self.dim, self.periodic = blocks, width, dim, periodic
        self.in_channels, self.out_channels, self.cond_channels = in_channels, out_channels, cond_channels
        self.noise_embed = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.conv_in = _conv(dim, in_channels + cond_channels, width, periodic)
        self.res = nn.ModuleList(ResidualBlock(width, dim, periodic, width) for _ in range(blocks))
        self.conv_out = _conv(dim, width, out_channels, periodic)
        self.act = nn.SiLU()

    @property
    def receptive_radius(self) -> int:
        return 2 * self.blocks + 2

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
        return self.conv_out(self.act(h))


class EDMPrecond(nn.Module):
    """EDM preconditioning (Karras et al. 2022) around a raw network ``net(x, c_noise, cond)``:

    D_θ(x, σ) = c_skip x + c_out F_θ(c_in x, c_noise), c_skip = σ_d²/(σ² + σ_d²),
    c_out = σ σ_d / √(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), c_noise = ¼ ln σ.
    Conditioning channels go to the network unscaled. ``score`` returns (D_θ − x)/σ², written as
    −x/(σ² + σ_d²) + σ_d F / (σ √(σ² + σ_d²)) so it does not cancel at small σ.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 1.0):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def _parts(self, x, sigma, cond):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = expand_sigma(sigma, x)  # validates the shape (n,)
        if sigma.dim() == 0:
            sigma, s = sigma.expand(x.shape[0]), s.expand(x.shape[0], *([1] * (x.dim() - 1)))
        var = s ** 2 + self.sigma_data ** 2
        f = self.net(x / var.sqrt(), 0.25 * sigma.log(), cond)
        return s, var, f

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        """Denoiser D_θ(x, σ): x (n, C, *lattice), sigma (n,) → (n, C, *lattice)."""
        s, var, f = self._parts(x, sigma, cond)
        return self.sigma_data ** 2 / var * x + s * self.sigma_data / var.sqrt() * f

    def score(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        """Score (D_θ(x, σ) − x) / σ², same shapes as :meth:`forward`."""
        s, var, f = self._parts(x, sigma, cond)
        return -x / var + self.sigma_data / (s * var.sqrt()) * f


class LocalScoreCNN(nn.Module):
    """Local score student s_θ(x, σ) = EDMPrecond(LocalCNN).score (DESIGN.md section 4).

    ``forward(x, sigma, cond=None)``: x (n, in_channels, *lattice), sigma (n,) (or a scalar),
    cond (n, cond_channels, *lattice) → score (n, out_channels, *lattice). The score has the
    channels of x, so ``out_channels`` must equal ``in_channels``.
    """

    def __init__(self, blocks: int = 1, width: int = 64, dim: int = 2, periodic: bool = True,
                 in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
                 sigma_data: float = 1.0):
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(f"out_channels must equal in_channels ({in_channels}) for a score, "
                             f"got {out_channels}")
        self.denoiser = EDMPrecond(LocalCNN(blocks, width, dim, periodic, in_channels, out_channels,
                                            cond_channels), sigma_data)

    @property
    def net(self) -> LocalCNN:
        return self.denoiser.net

    @property
    def receptive_radius(self) -> int:
        return self.net.receptive_radius

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None):
        return self.denoiser.score(x, sigma, cond)
