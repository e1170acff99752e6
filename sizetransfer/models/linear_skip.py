"""Wide linear skip: a σ-modulated linear response of radius s from the input to the output
(docs/method.md, "Students"; docs/training.md, "Wide linear skip").

A stack of 3^d convs reaches the rim of its receptive field only through products of as many weights, so a
broad, weak response (the critical Ising boundary response at σ ≥ 2) stays near zero there after training.
:class:`LinearSkip` adds to the network output k linear filters of radius s of the (preconditioned) input,
mixed per sample by gains read from the noise embedding:

    F(x) ← F(x) + Σ_c a_c(emb) (K_c ∗ x),   K_c a (2s + 1)^d kernel,  c = 1 … k,

so every offset up to s is one weight away from the loss, and the σ-dependence of the response's shape is a
mix of k kernels. The gains start at zero: the student starts as the same function as without the skip.
Local (the output at a site depends on the inputs within d∞ ≤ s), translation-equivariant, the same weights
at every L, cost k (2s + 1)^d per site and input channel.
"""
from __future__ import annotations

import torch
from torch import nn

#: Number k of linear filters the noise embedding mixes.
SKIP_FILTERS = 8


class LinearSkip(nn.Module):
    """x (n, in_channels, *lattice), emb (n, emb_width) → (n, out_channels, *lattice): Σ_c a_c(emb) K_c ∗ x."""

    def __init__(self, in_channels: int, out_channels: int, radius: int, emb_width: int, dim: int, periodic: bool,
                 filters: int = SKIP_FILTERS):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.out_channels, self.filters = out_channels, filters
        self.conv = conv(in_channels, out_channels * filters, 2 * radius + 1, padding=radius, bias=False,
                         padding_mode="circular" if periodic else "zeros")
        self.gain = nn.Linear(emb_width, out_channels * filters)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        n, lattice = x.shape[0], x.shape[2:]
        y = self.conv(x).view(n, self.out_channels, self.filters, *lattice)
        a = self.gain(emb).view(n, self.out_channels, self.filters, *([1] * len(lattice)))
        return (a * y).sum(dim=2)
