"""Hard-valid mixed discrete-continuous teacher on the open cubic box {0..L-1}³ (paper Appendix B.1).

Every site i carries a port set P_i ⊆ {+x, -x, +y, -y, +z, -z}, a type label t_i ∈ {0..K}
(0 = empty) and a continuous vector x_i ∈ R^m. Tensor conventions (axis 0 of the box = x):

* ports  bool  (n, 6, L, L, L), port order +x, -x, +y, -y, +z, -z; box axis a is tensor dim 2 + a.
* types  int64 (n, L, L, L), 0 on empty sites (degree 0), 1..K on occupied sites (degree 1 or 2).
* x      float (n, m, L, L, L), exactly 0 on empty sites.

Joint law (all parameters drawn from the teacher seed, identical at every L, everything exact):

* Ports: the box is tiled into 2×2×2 blocks; each block independently picks a pattern from a fixed
  library of 37 = 1 + 12 + 24 patterns {empty; one edge of the block cube; a two-edge path (two
  cube edges sharing a vertex)} with fixed probabilities. Every active port is matched by its
  neighbour and none leaves the box, by construction. log P(ports) = Σ_blocks log p(pattern).
* Types: base labels from motif logits (the motif of a site is its port set) plus a per-block
  theme θ summed out exactly, then a finite-depth permutation flow on labels (each layer permutes
  the labels of the occupied sites of one block parity by a permutation chosen from conditioning
  the layer does not change), so P(t | ports) = P_base(flow⁻¹(t) | ports).
* Continuous: x = T_flow ∘ S ∘ T_pre (u), u ~ N(0, I) on the occupied coordinates, with 3D
  checkerboard affine couplings (conditioners see x of the other parity and embeddings of ports
  and types) and an additive power-law smoother (zero log-det); empty sites stay 0 at every stage.

``make_teacher("hard_valid_short" | "hard_valid_long", seed=0, dtype=torch.float64)``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sizetransfer.lattice import shell_sums

HARD_VALID_KEYS = ("hard_valid_short", "hard_valid_long")
PORT_NAMES = ("+x", "-x", "+y", "-y", "+z", "-z")  # port k points along box axis k // 2, sign + if k even
N_MOTIFS = 64  # a site's motif is its port set, encoded as Σ_k port_k 2^k


# ---------------------------------------------------------------- block geometry

def _blockify(t: torch.Tensor) -> torch.Tensor:
    """(n, C, L0, L1, L2) → (n, L0/2, L1/2, L2/2, C, 2, 2, 2): the 2×2×2 blocks of the box."""
    n, c, l0, l1, l2 = t.shape
    return t.reshape(n, c, l0 // 2, 2, l1 // 2, 2, l2 // 2, 2).permute(0, 2, 4, 6, 1, 3, 5, 7)


def _unblockify(b: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_blockify``."""
    n, b0, b1, b2, c = b.shape[:5]
    return b.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(n, c, 2 * b0, 2 * b1, 2 * b2)


def block_library() -> tuple[torch.Tensor, torch.Tensor]:
    """The 37 block patterns: (ports bool (37, 6, 2, 2, 2) in local block coordinates, kind int64 (37,)
    with 0 = empty, 1 = single edge (12), 2 = two-edge path (24, one per vertex and pair of axes)).

    An edge from local vertex v along axis a goes in direction + if v_a = 0 (else −), so it stays
    inside the block; it sets port 2a (+) at the lower end and 2a + 1 (−) at the upper end.
    """
    verts = list(itertools.product((0, 1), repeat=3))

    def edge(ports: torch.Tensor, v: tuple, a: int) -> None:
        lo = list(v)
        lo[a] = 0
        hi = list(lo)
        hi[a] = 1
        ports[2 * a][tuple(lo)] = True
        ports[2 * a + 1][tuple(hi)] = True

    patterns, kinds = [torch.zeros(6, 2, 2, 2, dtype=torch.bool)], [0]
    for a in range(3):
        for v in verts:
            if v[a] == 0:
                p = torch.zeros(6, 2, 2, 2, dtype=torch.bool)
                edge(p, v, a)
                patterns.append(p)
                kinds.append(1)
    for v in verts:
        for a1, a2 in itertools.combinations(range(3), 2):
            p = torch.zeros(6, 2, 2, 2, dtype=torch.bool)
            edge(p, v, a1)
            edge(p, v, a2)
            patterns.append(p)
            kinds.append(2)
    return torch.stack(patterns), torch.tensor(kinds)


_BIT_WEIGHTS = 2 ** torch.arange(48, dtype=torch.int64)  # block code = Σ bit_k 2^k over (6, 2, 2, 2)


def _block_codes(ports: torch.Tensor) -> torch.Tensor:
    """Integer code of every block's 48 port bits, int64 (n, L0/2, L1/2, L2/2)."""
    b = _blockify(ports)
    return (b.reshape(*b.shape[:4], 48).long() * _BIT_WEIGHTS).sum(-1)


def motif_ids(ports: torch.Tensor) -> torch.Tensor:
    """Motif of every site (its port set, Σ_k port_k 2^k ∈ 0..63), int64 (n, L0, L1, L2)."""
    return (ports.long() * (2 ** torch.arange(6, device=ports.device)).view(1, 6, 1, 1, 1)).sum(1)


@lru_cache(maxsize=64)
def _site_masks(shape: tuple, device=None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(site parity (i0+i1+i2) mod 2, block parity (⌊i0/2⌋+⌊i1/2⌋+⌊i2/2⌋) mod 2, per-axis local
    coordinate i_a mod 2 broadcastable), int64, shapes (L0, L1, L2) (cached: do not modify)."""
    idx = [torch.arange(n, device=device) for n in shape]
    i0, i1, i2 = idx[0].view(-1, 1, 1), idx[1].view(1, -1, 1), idx[2].view(1, 1, -1)
    site = ((i0 + i1 + i2) % 2).expand(*shape)
    block = ((i0 // 2 + i1 // 2 + i2 // 2) % 2).expand(*shape)
    return site, block, (i0 % 2, i1 % 2, i2 % 2)


def _outer_neighbours(t: torch.Tensor) -> list[torch.Tensor]:
    """For each box axis a, the value of ``t`` (n, L0, L1, L2) at the face neighbour outside the site's
    own 2×2×2 block along a (i_a − 1 if i_a is even, else i_a + 1), 0 beyond the box."""
    shape = tuple(t.shape[1:])
    local = _site_masks(shape, t.device)[2]
    tp = F.pad(t, (1, 1, 1, 1, 1, 1))
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    out = []
    for a in range(3):
        lo, hi = list(inner), list(inner)
        lo[1 + a] = slice(0, shape[a])
        hi[1 + a] = slice(2, shape[a] + 2)
        out.append(torch.where(local[a].bool(), tp[tuple(hi)], tp[tuple(lo)]))
    return out


# offsets d ∈ {−1, 0, 1}³ of odd parity (6 faces + 8 corners): an A site's neighbours of parity B
ODD_OFFSETS = [d for d in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, d)) % 2 == 1]
FACE_OFFSETS = [(0, 0, 0)] + [d for d in ODD_OFFSETS if sum(map(abs, d)) == 1]


def _gather(f: torch.Tensor, offsets: Sequence[tuple]) -> torch.Tensor:
    """f (n, L0, L1, L2, C) (channels last) at site i + d for each offset d (zero beyond the open box):
    (n, L0, L1, L2, len(offsets) · C), ordered (offset, channel)."""
    l0, l1, l2 = f.shape[1:4]
    fp = F.pad(f, (0, 0, 1, 1, 1, 1, 1, 1))
    return torch.cat([fp[:, 1 + a:1 + a + l0, 1 + b:1 + b + l1, 1 + c:1 + c + l2] for a, b, c in offsets], -1)


# ---------------------------------------------------------------- continuous layers

class Conditioner(nn.Module):
    """Radius-1 local 3D conditioner of one coupling half-layer (open box, zero padding).

    hidden = tanh(W_x · [x_B at the 14 odd-parity offsets of the 3×3×3 cube] + e), output
    (a, b) = W_2 · hidden (× gain), each (n, m, L0, L1, L2). The x input is masked to the
    conditioning parity B (and occupancy) and only odd offsets are gathered, so at an A site the
    conditioner never sees x_A (each of the two guarantees suffices alone; tested). e (the ports/types part, computed once per call by the teacher) is
    W_e · [embedding at the centre and 6 face neighbours] + bias. Weights are fixed buffers drawn
    from ``generator``: W_x N(0, 1/4), W_e N(0, 1/(7·embed)), bias N(0, 1/4), W_2 N(0, gain²/hidden).
    """

    def __init__(self, generator: torch.Generator, channels: int, embed: int, hidden: int, gain: float):
        super().__init__()
        kw = dict(generator=generator, dtype=torch.float64)
        self.channels, self.hidden = channels, hidden
        self.register_buffer("w_x", torch.randn(channels * len(ODD_OFFSETS), hidden, **kw) / 2)
        self.register_buffer("w_e", torch.randn(embed * len(FACE_OFFSETS), hidden, **kw)
                             / math.sqrt(embed * len(FACE_OFFSETS)))
        self.register_buffer("bias", torch.randn(hidden, **kw) / 2)
        self.register_buffer("w_2", torch.randn(hidden, 2 * channels, **kw) * (gain / math.sqrt(hidden)))

    def embedding_part(self, emb_gathered: torch.Tensor) -> torch.Tensor:
        """e = W_e · gathered embeddings + bias, (n, L0, L1, L2, hidden)."""
        return torch.addmm(self.bias, emb_gathered.reshape(-1, emb_gathered.shape[-1]), self.w_e
                           ).reshape(*emb_gathered.shape[:-1], self.hidden)

    def forward(self, x_b: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = _gather(x_b.permute(0, 2, 3, 4, 1), ODD_OFFSETS)
        h = torch.tanh(g @ self.w_x + e)
        ab = (h @ self.w_2).permute(0, 4, 1, 2, 3)
        return ab[:, :self.channels], ab[:, self.channels:]


class AffineCoupling(nn.Module):
    """Checkerboard affine half-layer on occupied sites: x_A ← x_A ⊙ exp(c·tanh(a/c)) + b, with
    A = occupied sites of site parity ``parity``, (a, b) = conditioner(x_B, ports/types embedding).
    Empty sites are untouched. log|det| = Σ_A c·tanh(a/c)."""

    def __init__(self, parity: int, conditioner: Conditioner, clip: float = 1.5):
        super().__init__()
        self.parity, self.conditioner, self.clip = parity, conditioner, float(clip)

    def _scale_shift(self, x: torch.Tensor, ctx: dict, e: torch.Tensor):
        mask_a, mask_b = ctx["occ_parity"][self.parity], ctx["occ_parity"][1 - self.parity]
        a, b = self.conditioner(x * mask_b, e)
        return self.clip * torch.tanh(a / self.clip) * mask_a, b * mask_a

    def forward(self, x, ctx, e):
        log_scale, shift = self._scale_shift(x, ctx, e)
        return x * torch.exp(log_scale) + shift, log_scale.sum((1, 2, 3, 4))

    def inverse(self, y, ctx, e):
        log_scale, shift = self._scale_shift(y, ctx, e)  # y_B = x_B
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum((1, 2, 3, 4))


class OpenBoxConvolution(torch.autograd.Function):
    """f ↦ K ⊛ f on the open box (zero padding) by FFT on an (L + C)-padded grid, for a symmetric
    kernel K: the operator is self-adjoint, so its backward is the same convolution (differentiable
    again, for Hessian rows)."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, spectrum: torch.Tensor, grid: tuple) -> torch.Tensor:
        ctx.save_for_backward(spectrum)
        ctx.grid = grid
        return _fft_conv(f, spectrum, grid)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (spectrum,) = ctx.saved_tensors
        return OpenBoxConvolution.apply(grad, spectrum, ctx.grid), None, None


def _fft_conv(f: torch.Tensor, spectrum: torch.Tensor, grid: tuple) -> torch.Tensor:
    l0, l1, l2 = f.shape[-3:]
    out = torch.fft.irfftn(torch.fft.rfftn(f, s=grid, dim=(-3, -2, -1)) * spectrum, s=grid, dim=(-3, -2, -1))
    return out[..., :l0, :l1, :l2]


class PowerLawKernel3D(nn.Module):
    """K(d) = α |d|₂^{-p} on the opposite-parity offsets (d0 + d1 + d2 odd) with 1 ≤ d∞ ≤ C,
    applied per channel as an open-box convolution (zero padding) by FFT (spectrum cached per shape)."""

    def __init__(self, cutoff: int, power: float, alpha: float):
        super().__init__()
        self.cutoff, self.power, self.alpha = int(cutoff), float(power), float(alpha)
        r = torch.arange(-self.cutoff, self.cutoff + 1, dtype=torch.float64)
        a, b, c = r.view(-1, 1, 1), r.view(1, -1, 1), r.view(1, 1, -1)
        odd = (a + b + c).remainder(2) == 1
        w = self.alpha * (a ** 2 + b ** 2 + c ** 2).clamp_min(1) ** (-self.power / 2)
        self.register_buffer("weights", torch.where(odd, w, torch.zeros(())))
        self._spectra: dict[tuple, tuple] = {}

    def total_weight(self) -> float:
        """Σ_d K(d) (α included): the half-layer's gain on a fully occupied constant field."""
        return float(self.weights.sum())

    def spectrum(self, shape: tuple, dtype, device) -> tuple[torch.Tensor, tuple]:
        key = (shape, dtype, str(device))
        if key not in self._spectra:
            grid = tuple(n + self.cutoff for n in shape)
            idx = [torch.arange(-self.cutoff, self.cutoff + 1) % g for g in grid]
            k = torch.zeros(grid, dtype=dtype, device=device)
            k[idx[0].view(-1, 1, 1), idx[1].view(1, -1, 1), idx[2].view(1, 1, -1)] = \
                self.weights.to(dtype=dtype, device=device)
            self._spectra[key] = (torch.fft.rfftn(k), grid)
        return self._spectra[key]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        spectrum, grid = self.spectrum(tuple(f.shape[-3:]), f.dtype, f.device)
        return OpenBoxConvolution.apply(f, spectrum, grid)


class AdditiveSmoother(nn.Module):
    """x_A ← x_A + (K ⊛ tanh(x ⊙ occ))_A on the occupied sites A of ``parity``; log|det| = 0 (K has
    only opposite-parity offsets, so A sites see only B sites)."""

    def __init__(self, parity: int, kernel: PowerLawKernel3D):
        super().__init__()
        self.parity, self.kernel = parity, kernel

    def _increment(self, x, ctx):
        return self.kernel(torch.tanh(x * ctx["occ"])) * ctx["occ_parity"][self.parity]

    def forward(self, x, ctx, e=None):
        return x + self._increment(x, ctx), x.new_zeros(x.shape[0])

    def inverse(self, y, ctx, e=None):
        return y - self._increment(y, ctx), y.new_zeros(y.shape[0])


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class HardValidConfig:
    """Construction of one hard-valid teacher (paper Appendix B.1; docs/teachers.md)."""

    key: str
    channels: int = 2            # m, continuous dimension per site
    n_types: int = 3             # K, occupied types 1..K
    n_themes: int = 3            # T, per-block themes (summed out exactly)
    p_empty: float = 0.3         # P(block pattern = empty)
    p_edge: float = 0.3          # P(single edge), split over the 12 edges by seed logits
    pattern_temperature: float = 0.5   # std of the seed logits within the edge / path groups
    type_flow_depth: int = 2     # label permutation flow: pairs of layers (block parity 0, then 1)
    pre_depth: int = 1           # T_pre: affine coupling pairs (site parity 0, then 1)
    flow_depth: int = 1          # T_flow: affine coupling pairs
    smoother_depth: int = 0      # S: additive smoother pairs
    cutoff: int = 0              # smoother cutoff C (Chebyshev)
    power: float = 2.0           # smoother distance power p
    alpha: float = 0.0           # smoother strength α
    gain: float = 0.3            # conditioner output gain g
    clip: float = 1.5            # affine log-scale clip c
    hidden: int = 16             # conditioner width
    embed: int = 8               # port-motif / type embedding dimension


# Measured (seed 0, L = 16, 4 samples × 4 bulk probes, mean normalised profile, 3 sample seeds):
# short R_0.05 = 3 (tail beyond 2: 0.07-0.09, beyond 4 ≤ 0.004); long R_0.05 = 7 (tail beyond 4:
# 0.48-0.52, beyond 6 ≈ 0.16) (α·ΣK = 3.9 on a fully occupied box;
# ≈ 22% of sites are occupied). x is a bounded-gain map of u (clipped log-scales, bounded shifts and
# tanh-smoothed increments), so every moment is finite at every L.
HARD_VALID_FAMILIES: dict[str, HardValidConfig] = {
    "hard_valid_short": HardValidConfig("hard_valid_short", smoother_depth=1, cutoff=1, alpha=0.2),
    "hard_valid_long": HardValidConfig("hard_valid_long", smoother_depth=4, cutoff=5, power=2.0, alpha=0.1),
}


# ---------------------------------------------------------------- the teacher

class HardValidTeacher(nn.Module):
    """Hard-valid mixed teacher: exact samples, exact joint log-likelihood, exact continuous score.

    Attributes: ``key``; ``dim = 3``; ``periodic = False``; ``channels`` = m (continuous dimension
    per site); ``n_types`` = K (occupied types 1..K, 0 = empty); ``cond_channels`` = 6 + K + 1
    (the student's conditioning channels: 6 port indicators, then the one-hot type with index 0 =
    empty). Continuous computations run in ``dtype`` (float64 by default); discrete log-probabilities
    are float64. All parameters come from ``seed`` (discrete ones first, so both keys share the
    discrete law for a given seed) and are identical at every L.
    """

    dim, periodic = 3, False

    def __init__(self, config: HardValidConfig, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.config, self.seed, self.dtype, self.key = config, int(seed), dtype, config.key
        self.channels, self.n_types = config.channels, config.n_types
        self.cond_channels = 6 + self.n_types + 1
        K, T = self.n_types, config.n_themes
        gen = torch.Generator().manual_seed(self.seed)
        kw = dict(generator=gen, dtype=torch.float64)

        # ports: block pattern probabilities
        patterns, kinds = block_library()
        self.register_buffer("patterns", patterns)
        group_p = torch.tensor([config.p_empty, config.p_edge, 1 - config.p_empty - config.p_edge],
                               dtype=torch.float64)
        if not (group_p > 0).all():
            raise ValueError(f"p_empty and p_edge must be positive with sum < 1, got {config.p_empty}, {config.p_edge}")
        logits = config.pattern_temperature * torch.randn(len(kinds), **kw)
        log_p = torch.empty(len(kinds), dtype=torch.float64)
        for k in range(3):
            sel = kinds == k
            log_p[sel] = torch.log_softmax(logits[sel], 0) + math.log(group_p[k])
        self.register_buffer("pattern_log_p", log_p)
        codes = (patterns.reshape(len(kinds), 48).long() * _BIT_WEIGHTS).sum(-1)
        sorted_codes, order = codes.sort()
        self.register_buffer("pattern_codes", sorted_codes)
        self.register_buffer("pattern_order", order)

        # types: motif logits, themes, permutation flow
        self.register_buffer("motif_logits", torch.randn(N_MOTIFS, K, **kw))
        self.register_buffer("theme_bias", 1.5 * torch.randn(T, K, **kw))
        self.register_buffer("theme_log_prior", torch.log_softmax(0.5 * torch.randn(T, **kw), 0))
        perms = torch.tensor(list(itertools.permutations(range(K))), dtype=torch.int64)
        self.register_buffer("perms", perms)
        self.register_buffer("inverse_perms", perms.argsort(-1))
        self.register_buffer("perm_table", torch.randint(len(perms), (2 * config.type_flow_depth, N_MOTIFS,
                                                                       3 * K + 1, 4), generator=gen))

        # continuous: embeddings and flow layers
        self.register_buffer("motif_embedding", torch.randn(N_MOTIFS, config.embed, **kw))
        self.register_buffer("type_embedding", torch.randn(K + 1, config.embed, **kw))

        def couplings(depth: int) -> list[AffineCoupling]:
            return [AffineCoupling(parity, Conditioner(gen, self.channels, config.embed, config.hidden, config.gain),
                                   config.clip) for _ in range(depth) for parity in (0, 1)]

        layers: list[nn.Module] = couplings(config.pre_depth)
        self.kernel = None
        if config.smoother_depth:
            self.kernel = PowerLawKernel3D(config.cutoff, config.power, config.alpha)
            layers += [AdditiveSmoother(parity, self.kernel) for _ in range(config.smoother_depth) for parity in (0, 1)]
        layers += couplings(config.flow_depth)
        self.layers = nn.ModuleList(layers)
        self.to(dtype)
        for name in ("pattern_log_p", "motif_logits", "theme_bias", "theme_log_prior"):
            setattr(self, name, getattr(self, name).double())  # discrete law stays float64

    def __repr__(self) -> str:
        return f"HardValidTeacher({self.config}, seed={self.seed})"

    # ------------------------------------------------------------ input checks

    def check_size(self, L: int) -> None:
        """Raise ValueError naming L unless L is an even integer ≥ 2 (the box tiles into 2×2×2 blocks)."""
        if int(L) != L or L < 2 or L % 2:
            raise ValueError(f"L must be an even integer >= 2 for teacher {self.key!r} (the open box is tiled "
                             f"into 2x2x2 blocks), got {L}")

    def _check_ports(self, ports: torch.Tensor, *, cubic: bool = True) -> tuple:
        if not isinstance(ports, torch.Tensor) or ports.dim() != 5 or ports.shape[1] != 6:
            raise ValueError(f"ports must be a bool tensor of shape (n, 6, L, L, L), got "
                             f"{tuple(ports.shape) if isinstance(ports, torch.Tensor) else type(ports)}")
        if ports.dtype != torch.bool:
            raise ValueError(f"ports must have dtype torch.bool, got {ports.dtype}")
        shape = tuple(ports.shape[2:])
        if cubic:
            if len(set(shape)) != 1:
                raise ValueError(f"ports must have shape (n, 6, L, L, L) with a cubic box, got {tuple(ports.shape)}")
            self.check_size(shape[0])
        elif any(n < 2 or n % 2 for n in shape):
            raise ValueError(f"ports box sides must be even and >= 2, got {shape}")
        return shape

    def _check_types(self, types: torch.Tensor, ports: torch.Tensor) -> torch.Tensor:
        want = (ports.shape[0], *ports.shape[2:])
        if not isinstance(types, torch.Tensor) or tuple(types.shape) != want:
            raise ValueError(f"types must have shape (n, L, L, L) = {want} matching ports, got "
                             f"{tuple(types.shape) if isinstance(types, torch.Tensor) else type(types)}")
        if types.dtype.is_floating_point or types.dtype == torch.bool:
            raise ValueError(f"types must be an integer tensor, got {types.dtype}")
        return types.long()

    def _check_x(self, x: torch.Tensor, ports: torch.Tensor) -> torch.Tensor:
        want = (ports.shape[0], self.channels, *ports.shape[2:])
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
            raise ValueError(f"x must have shape (n, m, L, L, L) = {want} matching ports, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        return x.to(self.dtype)

    # ------------------------------------------------------------ ports

    def occupied(self, ports: torch.Tensor) -> torch.Tensor:
        """Occupancy mask (degree ≥ 1), bool (n, 1, L, L, L)."""
        self._check_ports(ports, cubic=False)
        return ports.any(1, keepdim=True)

    def _sample_ports(self, n: int, shape: tuple, gen) -> torch.Tensor:
        blocks = tuple(s // 2 for s in shape)
        probs = self.pattern_log_p.exp().to(gen.device if gen is not None else "cpu")
        idx = torch.multinomial(probs, n * math.prod(blocks), replacement=True, generator=gen)
        b = self.patterns.to(idx.device)[idx].reshape(n, *blocks, 6, 2, 2, 2)
        return _unblockify(b)

    def _pattern_log_p(self, ports: torch.Tensor) -> torch.Tensor:
        """log p(pattern) per block, (n, L0/2, L1/2, L2/2) float64, -inf where no library pattern matches."""
        codes = _block_codes(ports)
        pos = torch.searchsorted(self.pattern_codes, codes).clamp(max=len(self.pattern_codes) - 1)
        match = self.pattern_codes[pos] == codes
        return torch.where(match, self.pattern_log_p[self.pattern_order[pos]], -math.inf)

    # ------------------------------------------------------------ types

    def _base_type_log_probs(self, ports: torch.Tensor) -> torch.Tensor:
        """log softmax(motif logits + theme bias), (n, L0, L1, L2, T, K) float64."""
        m = motif_ids(ports)
        return torch.log_softmax(self.motif_logits[m].unsqueeze(-2) + self.theme_bias, -1)

    def _sample_base_types(self, ports: torch.Tensor, gen) -> torch.Tensor:
        n, shape = ports.shape[0], tuple(ports.shape[2:])
        blocks = tuple(s // 2 for s in shape)
        theme = torch.multinomial(self.theme_log_prior.exp(), n * math.prod(blocks), replacement=True,
                                  generator=gen).reshape(n, 1, *blocks, 1, 1, 1).expand(n, 1, *blocks, 2, 2, 2)
        theme = _unblockify(theme.permute(0, 2, 3, 4, 1, 5, 6, 7))[:, 0]  # (n, L0, L1, L2)
        logits = self.motif_logits[motif_ids(ports)] + self.theme_bias[theme]
        flat = torch.multinomial(torch.softmax(logits, -1).reshape(-1, self.n_types), 1, generator=gen)
        t = flat.reshape(theme.shape) + 1
        return torch.where(ports.any(1), t, torch.zeros_like(t))

    def _type_flow_layer(self, types: torch.Tensor, ports: torch.Tensor, layer: int, inverse: bool) -> torch.Tensor:
        """One label-permutation layer: occupied sites of block parity ``layer % 2`` get
        t ← π(t), π = perms[table[layer, own motif, Σ outer-neighbour types, # occupied outer neighbours]].
        The conditioning lies in blocks of the other parity (or is ports), which the layer leaves
        unchanged, so the layer is a bijection with inverse π⁻¹ under the same conditioning."""
        occ = ports.any(1)
        shape = tuple(types.shape[1:])
        block_parity = _site_masks(shape, types.device)[1]
        nb_types = _outer_neighbours(types)
        nb_occ = _outer_neighbours(occ.long())
        s = (nb_types[0] + nb_types[1] + nb_types[2]).clamp(0, 3 * self.n_types)
        c = nb_occ[0] + nb_occ[1] + nb_occ[2]
        idx = self.perm_table[layer][motif_ids(ports), s, c]
        table = self.inverse_perms if inverse else self.perms
        label = (types - 1).clamp(0, self.n_types - 1)
        new = table[idx, label] + 1
        act = occ & (block_parity == layer % 2) & (types >= 1) & (types <= self.n_types)
        return torch.where(act, new, types)

    def type_flow(self, types: torch.Tensor, ports: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
        """Apply the label permutation flow (or its inverse) to ``types`` (n, L0, L1, L2) given ``ports``;
        labels outside 1..K and empty sites are left unchanged. Works on any even box shape."""
        n_layers = len(self.perm_table)
        order = range(n_layers - 1, -1, -1) if inverse else range(n_layers)
        for layer in order:
            types = self._type_flow_layer(types, ports, layer, inverse)
        return types

    def _log_prob_types(self, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        occ = ports.any(1)
        valid = torch.where(occ, (types >= 1) & (types <= self.n_types), types == 0).flatten(1).all(1)
        base = self.type_flow(types, ports, inverse=True)
        lp = self._base_type_log_probs(ports)  # (n, L0, L1, L2, T, K)
        label = (base - 1).clamp(0, self.n_types - 1)
        site = lp.gather(-1, label[..., None, None].expand(*label.shape, lp.shape[-2], 1))[..., 0]
        site = site * occ[..., None]  # (n, L0, L1, L2, T)
        per_block = _blockify(site.permute(0, 4, 1, 2, 3)).sum((-3, -2, -1))  # (n, b0, b1, b2, T)
        out = torch.logsumexp(per_block + self.theme_log_prior, -1).flatten(1).sum(1)
        return torch.where(valid, out, torch.full_like(out, -math.inf))

    def _log_prob_discrete(self, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """log_prob_discrete on any even box shape (no cubic-box check)."""
        return self._pattern_log_p(ports).flatten(1).sum(1) + self._log_prob_types(ports, types)

    def _sample_discrete(self, n: int, shape: tuple, gen) -> tuple[torch.Tensor, torch.Tensor]:
        ports = self._sample_ports(n, shape, gen)
        types = self.type_flow(self._sample_base_types(ports, gen), ports)
        return ports, types

    # ------------------------------------------------------------ continuous

    def _context(self, ports: torch.Tensor, types: torch.Tensor) -> dict:
        """Per-call constants of the continuous flow: occupancy masks and the embedding part of every
        coupling conditioner (computed once; ports and types are never differentiated)."""
        occ = ports.any(1, keepdim=True).to(self.dtype)
        site_parity = _site_masks(tuple(ports.shape[2:]), ports.device)[0].to(self.dtype)
        ctx = {"occ": occ, "occ_parity": (occ * (1 - site_parity), occ * site_parity)}
        emb = (self.motif_embedding[motif_ids(ports)] + self.type_embedding[types.clamp(0, self.n_types)])
        gathered = _gather(emb, FACE_OFFSETS)
        ctx["e"] = [layer.conditioner.embedding_part(gathered) if isinstance(layer, AffineCoupling) else None
                    for layer in self.layers]
        return ctx

    def _forward_flow(self, u: torch.Tensor, ctx: dict) -> torch.Tensor:
        x = u * ctx["occ"]
        for layer, e in zip(self.layers, ctx["e"]):
            x, _ = layer(x, ctx, e)
        return x

    def _inverse_flow(self, x: torch.Tensor, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = x * ctx["occ"]
        log_det = x.new_zeros(x.shape[0])
        for layer, e in zip(reversed(self.layers), reversed(ctx["e"])):
            x, ld = layer.inverse(x, ctx, e)
            log_det = log_det + ld
        return x, log_det

    def transform(self, u: torch.Tensor, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """x = T_flow ∘ S ∘ T_pre (u ⊙ occ) for latent u (n, m, L, L, L) (any even box shape)."""
        self._check_ports(ports, cubic=False)
        types = self._check_types(types, ports)
        return self._forward_flow(self._check_x(u, ports), self._context(ports, types))

    def inverse_and_log_det(self, x: torch.Tensor, ports: torch.Tensor, types: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(u = F⁻¹(x ⊙ occ), log|det ∂F⁻¹/∂x_occ| of shape (n,)) (any even box shape)."""
        self._check_ports(ports, cubic=False)
        types = self._check_types(types, ports)
        return self._inverse_flow(self._check_x(x, ports), self._context(ports, types))

    # ------------------------------------------------------------ public API

    def sample(self, n: int, L: int, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n exact joint samples (ports bool (n, 6, L, L, L), types int64 (n, L, L, L),
        x (n, m, L, L, L) in the teacher's dtype, exactly 0 on empty sites). CPU generator."""
        self.check_size(L)
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        n = int(n)
        ports, types = self._sample_discrete(n, (L, L, L), generator)
        u = torch.randn(n, self.channels, L, L, L, generator=generator, dtype=self.dtype)
        with torch.no_grad():
            x = self._forward_flow(u, self._context(ports, types))
        return ports, types, x

    def log_prob(self, ports: torch.Tensor, types: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Exact joint log-likelihood log P(ports) + log P(types | ports) + log p(x_occ | ports, types),
        shape (n,) in x's dtype; -inf where the discrete part is invalid or x ≠ 0 on an empty site."""
        lp = self.log_prob_discrete(ports, types).to(self.dtype) + self.log_prob_continuous(x, ports, types).to(self.dtype)
        empty_ok = (x.to(self.dtype) * (1 - self._context_occ(ports))).flatten(1).abs().amax(1) == 0
        return torch.where(empty_ok, lp, torch.full_like(lp, -math.inf)).to(x.dtype)

    def _context_occ(self, ports: torch.Tensor) -> torch.Tensor:
        """Occupancy (n, 1, L, L, L) in the teacher's dtype."""
        return ports.any(1, keepdim=True).to(self.dtype)

    def log_prob_discrete(self, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """log P(ports) + log P(types | ports), shape (n,) float64; -inf for invalid configurations
        (ports not a tiling by library patterns, type 0 on an occupied or ≠ 0 on an empty site)."""
        self._check_ports(ports)
        return self._log_prob_discrete(ports, self._check_types(types, ports))

    def log_prob_continuous(self, x: torch.Tensor, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Flow log density of the occupied coordinates of x (a density on R^{m · #occupied}), shape (n,)
        in x's dtype. x at empty sites is ignored (it never enters the flow)."""
        self._check_ports(ports)
        types = self._check_types(types, ports)
        ctx = self._context(ports, types)
        u, log_det = self._inverse_flow(self._check_x(x, ports), ctx)
        n_coords = ctx["occ"].flatten(1).sum(1) * self.channels
        lp = -0.5 * (u * ctx["occ"]).square().flatten(1).sum(1) - 0.5 * n_coords * math.log(2 * math.pi) + log_det
        return lp.to(x.dtype)

    def score(self, x: torch.Tensor, ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Exact clean score ∇ log_prob_continuous with respect to the occupied coordinates,
        (n, m, L, L, L) in x's dtype, exactly 0 on empty sites."""
        self._check_ports(ports)
        xd = self._check_x(x, ports).detach().requires_grad_(True)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(self.log_prob_continuous(xd, ports, types).sum(), xd)
        return (s * self._context_occ(ports)).to(x.dtype)

    def response_profile(self, x: torch.Tensor, site: Sequence[int], r_max: int,
                         ports: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """ρ(r) = Σ_{j: d∞(i, j) = r} Σ_{c, c'} |∂s_{i,c} / ∂x_{j,c'}| at probe site i (3-tuple) on the
        open box (no wrap), r = 0..r_max, shape (n, r_max + 1); zero for samples where i is empty."""
        shape = self._check_ports(ports)
        xd = self._check_x(x, ports).detach().requires_grad_(True)
        if len(site) != 3 or not all(0 <= int(c) < shape[0] for c in site):
            raise ValueError(f"site must be three coordinates in [0, {shape[0] - 1}], got {tuple(site)}")
        if int(r_max) != r_max or r_max < 0:
            raise ValueError(f"r_max must be a non-negative integer, got {r_max}")
        i = tuple(int(c) for c in site)
        occ = self._context_occ(ports)
        total = xd.new_zeros(xd.shape[0], *shape)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(self.log_prob_continuous(xd, ports, types).sum(), xd, create_graph=True)
            for c in range(self.channels):
                (row,) = torch.autograd.grad(s[:, c, i[0], i[1], i[2]].sum(), xd, retain_graph=True)
                total = total + (row * occ).abs().sum(1)
        total = total * occ[:, 0, i[0], i[1], i[2]].view(-1, 1, 1, 1)
        return shell_sums(total.detach(), i, int(r_max), periodic=False).to(x.dtype)

    def conditioning(self, ports: torch.Tensor, types: torch.Tensor, dtype: torch.dtype = torch.float32
                     ) -> torch.Tensor:
        """The student's conditioning channels (n, cond_channels, L, L, L) in ``dtype``: the 6 port
        indicators (order +x, -x, +y, -y, +z, -z), then the one-hot type (K + 1 channels, index 0 = empty)."""
        self._check_ports(ports)
        types = self._check_types(types, ports)
        if types.min() < 0 or types.max() > self.n_types:
            raise ValueError(f"types must lie in [0, {self.n_types}], got range [{int(types.min())}, {int(types.max())}]")
        onehot = F.one_hot(types, self.n_types + 1).permute(0, 4, 1, 2, 3)
        return torch.cat([ports.to(dtype), onehot.to(dtype)], 1)


def make_hard_valid(key: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> HardValidTeacher:
    """The hard-valid teacher ``key`` (one of ``HARD_VALID_KEYS``) with parameters drawn from ``seed``."""
    if key not in HARD_VALID_FAMILIES:
        raise ValueError(f"hard-valid teacher key must be one of {list(HARD_VALID_KEYS)}, got {key!r}")
    return HardValidTeacher(HARD_VALID_FAMILIES[key], seed=seed, dtype=dtype)
