"""Intensive global features: the remedy student's non-local part (docs/method.md, "Remedy student").

:class:`GlobalFiLM` reads k features out of every site (a 1^d conv and a SiLU on the site-normalised
hidden state), averages them over the whole lattice and turns the k lattice means, together with the
noise embedding, into a per-sample, per-channel FiLM of the hidden state:

    g = mean_i SiLU(W · norm(h)_i + b)                      (n, k), one value per sample and feature
    h ← h (1 + scale(z)) + shift(z),  z = SiLU(A [emb, g] + c)

The means are intensive: they are O(1) at every lattice size L, each site enters them with weight
1/N (N = L^d sites), and a configuration tiled periodically (2×2 copies of an L×L torus on a 2L×2L
one) has exactly the same means, so the same weights run at any L and the cost stays linear in N.
This is what a long-range teacher with a global mode needs (complex_long: pair couplings O(1/N), whose
sum over the lattice is O(1)) and what a local model of any radius cannot represent. The FiLM starts at
the identity, so a student with global features starts as the same function as the local one.
"""
from __future__ import annotations

import torch
from torch import nn

from .local_cnn import FiLM, SiteNorm


class GlobalFiLM(nn.Module):
    """FiLM of h (n, width, *lattice) by k lattice means of learned per-site features and the noise
    embedding emb (n, emb_width). ``norm``: ``"site"`` normalises h over channels per site before the
    readout (``"none"``: raw h)."""

    def __init__(self, width: int, emb_width: int, features: int, dim: int, norm: str = "site"):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.norm = SiteNorm() if norm == "site" else nn.Identity()
        self.readout = conv(width, features, 1)
        self.act = nn.SiLU()
        self.mix = nn.Sequential(nn.Linear(emb_width + features, emb_width), nn.SiLU())
        self.film = FiLM(emb_width, width)

    def lattice_means(self, h: torch.Tensor) -> torch.Tensor:
        """The k intensive features (n, k): lattice means of SiLU(readout(norm(h)))."""
        return self.act(self.readout(self.norm(h))).mean(dim=tuple(range(2, h.dim())))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.film(h, self.mix(torch.cat([emb, self.lattice_means(h)], dim=1)))
