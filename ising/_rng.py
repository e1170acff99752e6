"""Counter-free per-chain random numbers for numba kernels (xoshiro256**).

Every chain owns a ``uint64[4]`` state row, seeded by splitmix64 from
``(seed, chain index)``, so results are bit-for-bit reproducible from the seed
whatever the number of threads and however chains are scheduled.

Usage inside ``@njit`` code::

    st = states[c]          # view of shape (4,), uint64
    u = uniform(st)          # float64 in [0, 1)
    k = randint(st, n)       # int in [0, n)
    z = normal(st)           # standard normal (Box-Muller, one of the pair)
"""
from __future__ import annotations

import numpy as np
from numba import njit

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(inline="always", cache=True)
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True)
def _splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    z = x
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x, z ^ (z >> np.uint64(31))


@njit(cache=True)
def _seed_states(seed, n_chains, stream):
    states = np.empty((n_chains, 4), dtype=np.uint64)
    for c in range(n_chains):
        x = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(c) * np.uint64(0xD1B54A32D192ED03)
        x = x ^ (np.uint64(stream) * np.uint64(0x8CB92BA72F3D8DD7))
        for k in range(4):
            x, z = _splitmix64(x)
            states[c, k] = z
        # warm up
        for _ in range(8):
            next_u64(states[c])
    return states


def seed_states(seed: int, n_chains: int, stream: int = 0) -> np.ndarray:
    """Independent xoshiro256** states, shape (n_chains, 4) uint64.

    ``seed`` and ``stream`` (a tag per use: prior sampler, observation noise, ...)
    must be non-negative integers below 2**63.
    """
    if int(seed) < 0 or int(stream) < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={seed!r}, stream={stream!r}")
    return _seed_states(np.uint64(int(seed)), int(n_chains), np.uint64(int(stream)))


@njit(inline="always", cache=True)
def xoshiro_step(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in four uint64 scalars (kept in registers by hot
    loops): returns ``(output, s0, s1, s2, s3)``."""
    result = _rotl((s1 * np.uint64(5)) & _MASK, 7) * np.uint64(9) & _MASK
    t = (s1 << np.uint64(17)) & _MASK
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@njit(inline="always", cache=True)
def next_u64(s):
    result, s[0], s[1], s[2], s[3] = xoshiro_step(s[0], s[1], s[2], s[3])
    return result


@njit(inline="always", cache=True)
def uniform(s):
    """float64 uniform in [0, 1) from the top 53 bits."""
    return np.float64(next_u64(s) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always", cache=True)
def randint(s, n):
    """Integer uniform in [0, n) (Lemire's multiply-shift on the top 32 bits; n < 2**32)."""
    return np.int64(((next_u64(s) >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


@njit(inline="always", cache=True)
def normal(s):
    """Standard normal variate (Box-Muller)."""
    u1 = 1.0 - uniform(s)
    u2 = uniform(s)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
