"""Hard-valid mixed 3D teacher (paper Appendix B.1): exact validity (independent numpy checker),
exact discrete normalisation (exhaustive enumeration), label-flow bijectivity, exact continuous
density and score (finite differences, Stein's identity, brute-force log-det), size uniformity,
response ranges of the short / long teachers, and bad input.

Monte Carlo checks compare a mean over independent samples with its target within Z_TOL standard
errors and require the SE to be small enough for the check to have power. Seeds are fixed.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from helpers import Z_TOL, assert_mc, generator  # noqa: F401

from sizetransfer.lattice import normalised_tail, response_range
from sizetransfer.teachers import HARD_VALID_KEYS, TEACHER_KEYS, make_teacher
from sizetransfer.teachers.hard_valid import AffineCoupling, _site_masks



@pytest.fixture(scope="module")
def teachers():
    return {key: make_teacher(key, seed=0) for key in HARD_VALID_KEYS}


gen = generator


# ---------------------------------------------------------------- independent validity checker (numpy only)

def check_valid(ports, types, x, n_types):
    """Hard-valid constraints, written independently of the teacher: every active port is matched by
    the opposite port of its neighbour, no port leaves the box, degree ∈ {0, 1, 2}, types in 0..K,
    empty ⇔ type 0 ⇔ x = 0. Returns a list of violated rules (empty if valid)."""
    P, T, X = np.asarray(ports), np.asarray(types), np.asarray(x)
    bad = []
    for a in range(3):
        plus, minus = P[:, 2 * a], P[:, 2 * a + 1]
        ax = 1 + a  # spatial axis in (n, L, L, L)
        last = [slice(None)] * 4
        last[ax] = slice(-1, None)
        first = [slice(None)] * 4
        first[ax] = slice(0, 1)
        if plus[tuple(last)].any() or minus[tuple(first)].any():
            bad.append(f"port leaves the box along axis {a}")
        lo = [slice(None)] * 4
        lo[ax] = slice(0, -1)
        hi = [slice(None)] * 4
        hi[ax] = slice(1, None)
        if (plus[tuple(lo)] != minus[tuple(hi)]).any():
            bad.append(f"unmatched port along axis {a}")
    degree = P.sum(1)
    if degree.max() > 2:
        bad.append("degree > 2")
    occ = degree > 0
    if ((T == 0) != ~occ).any() or T.min() < 0 or T.max() > n_types:
        bad.append("type 0 must mark exactly the empty sites")
    if (np.abs(X).sum(1)[~occ] != 0).any():
        bad.append("x nonzero on an empty site")
    if (np.abs(X).sum(1)[occ] == 0).any():
        bad.append("x exactly zero on an occupied site")
    return bad


def test_registry_and_api(teachers):
    assert set(HARD_VALID_KEYS) <= set(TEACHER_KEYS)
    for key, t in teachers.items():
        assert t.key == key and (t.dim, t.periodic, t.channels, t.n_types) == (3, False, 2, 3)
        assert t.cond_channels == 6 + t.n_types + 1
        ports, types, x = t.sample(3, 4, generator=gen(0))
        assert ports.dtype == torch.bool and ports.shape == (3, 6, 4, 4, 4)
        assert types.dtype == torch.int64 and types.shape == (3, 4, 4, 4)
        assert x.dtype == torch.float64 and x.shape == (3, 2, 4, 4, 4)
        occ = t.occupied(ports)
        assert occ.shape == (3, 1, 4, 4, 4) and occ.dtype == torch.bool
        cond = t.conditioning(ports, types)
        assert cond.shape == (3, t.cond_channels, 4, 4, 4) and cond.dtype == torch.float32
        assert torch.equal(cond[:, :6].bool(), ports)
        assert torch.equal(cond[:, 6:].argmax(1), types) and torch.all(cond[:, 6:].sum(1) == 1)
    # same seed: both keys share the discrete law and its samples
    a, b = (teachers[k].sample(2, 6, generator=gen(5)) for k in HARD_VALID_KEYS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_samples_are_hard_valid(teachers):
    """≥ 2000 boxes over L ∈ {2, 4, 6, 8}: the independent checker finds no violation and every
    sample has a finite discrete and joint log-likelihood."""
    total = 0
    for i, (L, n) in enumerate([(2, 1000), (4, 600), (6, 300), (8, 200)]):
        for key, t in teachers.items():
            m = n if key == "hard_valid_short" else n // 10
            ports, types, x = t.sample(m, L, generator=gen(100 + i))
            assert check_valid(ports, types, x, t.n_types) == [], (key, L)
            assert torch.isfinite(t.log_prob(ports, types, x)).all()
            total += m
    assert total >= 2000
    # the library is exercised: degrees 1 and 2 and all types occur
    ports, types, _ = teachers["hard_valid_short"].sample(50, 6, generator=gen(1))
    assert set(ports.sum(1).unique().tolist()) == {0, 1, 2}
    assert set(types.unique().tolist()) == set(range(teachers["hard_valid_short"].n_types + 1))


def test_invalid_configurations_have_zero_probability(teachers):
    t = teachers["hard_valid_short"]
    ports, types, x = t.sample(8, 4, generator=gen(2))
    assert torch.isfinite(t.log_prob_discrete(ports, types)).all()
    occ = ports.any(1)
    # (a) an unmatched port
    p = ports.clone()
    p[0, 0, 0, 0, 0] = ~p[0, 0, 0, 0, 0]
    # (b) a matched edge that crosses a block boundary (sites 1 and 2 along x)
    q = ports.clone()
    q[1, 0, 1, 0, 0], q[1, 1, 2, 0, 0] = True, True
    # (c) type 0 on an occupied site, (d) type ≠ 0 on an empty site
    i = occ[2].nonzero()[0].tolist()
    j = (~occ[3]).nonzero()[0].tolist()
    ty = types.clone()
    ty[2, i[0], i[1], i[2]] = 0
    ty[3, j[0], j[1], j[2]] = 1
    lp = t.log_prob_discrete(p, types)
    assert lp[0] == -math.inf and torch.isfinite(lp[1:]).all()
    assert t.log_prob_discrete(q, types)[1] == -math.inf
    lp = t.log_prob_discrete(ports, ty)
    assert lp[2] == -math.inf and lp[3] == -math.inf and torch.isfinite(lp[4:]).all()
    # (e) continuous mass on an empty site
    x2 = x.clone()
    x2[3, 0, j[0], j[1], j[2]] = 0.5
    assert t.log_prob(ports, types, x2)[3] == -math.inf


# ---------------------------------------------------------------- exact discrete normalisation

def cube_edge_configs():
    """Every set of ≤ 2 edges of the 2×2×2 cube, as port arrays (independent of the teacher's
    library): 1 + 12 + 66 configurations; the 66 − 24 = 42 pairs of edges sharing no vertex are valid configurations
    outside the library, which must get probability 0."""
    edges = []
    for v in itertools.product((0, 1), repeat=3):
        for a in range(3):
            if v[a] == 0:
                w = list(v)
                w[a] = 1
                edges.append((a, v, tuple(w)))
    configs = []
    for k in range(3):
        for subset in itertools.combinations(edges, k):
            p = np.zeros((6, 2, 2, 2), dtype=bool)
            for a, v, w in subset:
                p[(2 * a, *v)] = True
                p[(2 * a + 1, *w)] = True
            configs.append(p)
    return configs


def enumerate_types(ports, n_types):
    """All type fields (m, *box) consistent with one port array (6, *box): 0 on empty, 1..K on occupied."""
    occ = ports.any(0)
    idx = np.argwhere(occ)
    labels = np.array(list(itertools.product(range(1, n_types + 1), repeat=len(idx))), dtype=np.int64)
    types = np.zeros((len(labels), *occ.shape), dtype=np.int64)
    if len(idx):
        types[(slice(None), *idx.T)] = labels
    return types


def test_discrete_law_sums_to_one_on_one_block(teachers):
    """L = 2: Σ over all ≤2-edge port sets and all type assignments of P(ports, types) = 1."""
    t = teachers["hard_valid_short"]
    total, n_zero = 0.0, 0
    for p in cube_edge_configs():
        types = enumerate_types(p, t.n_types)
        ports = torch.from_numpy(np.broadcast_to(p, (len(types), *p.shape)).copy())
        lp = t.log_prob_discrete(ports, torch.from_numpy(types))
        n_zero += int((lp == -math.inf).all())
        total += float(lp.exp().sum())
    assert n_zero == 42  # edge pairs sharing no vertex are outside the library
    assert abs(total - 1) < 1e-12


@pytest.mark.parametrize("shape", [(4, 2, 2), (2, 4, 2), (2, 2, 4)])
def test_discrete_law_sums_to_one_on_two_blocks(teachers, shape):
    """Two blocks coupled by the label flow: Σ_ports P(ports) = 1 over all 37² block-pattern pairs
    and Σ_types P(types | ports) = 1 for 12 port configurations with two paths (6 occupied sites,
    3⁶ type fields each); the flow really couples the blocks (the joint is not a product)."""
    t = teachers["hard_valid_short"]
    lib = t.patterns
    n_pat = len(lib)
    axis = int(np.argmax(shape))

    def two_blocks(i, j):
        return torch.cat([lib[i], lib[j]], dim=1 + axis)  # (6, *shape)

    pairs = list(itertools.product(range(n_pat), repeat=2))
    ports = torch.stack([two_blocks(i, j) for i, j in pairs])
    lp_ports = t._pattern_log_p(ports).flatten(1).sum(1)
    assert abs(float(lp_ports.exp().sum()) - 1) < 1e-12
    rng = np.random.default_rng(0)
    paths = np.flatnonzero((lib.flatten(1).sum(1) == 4).numpy())  # two-edge paths have 4 ports
    coupled = False
    for _ in range(12):
        p = two_blocks(*rng.choice(paths, 2)).numpy()
        types = torch.from_numpy(enumerate_types(p, t.n_types))
        pp = torch.from_numpy(np.broadcast_to(p, (len(types), *p.shape)).copy())
        lp = t._log_prob_discrete(pp, types) - t._pattern_log_p(pp).flatten(1).sum(1)
        prob = lp.exp()
        assert abs(float(prob.sum()) - 1) < 1e-12
        # joint of (block 0 labels, block 1 labels) vs product of marginals
        half = [slice(None)] * 4
        half[1 + axis] = slice(0, 2)
        b0 = types[tuple(half)].flatten(1)
        _, k0 = torch.unique(b0, dim=0, return_inverse=True)
        half[1 + axis] = slice(2, 4)
        _, k1 = torch.unique(types[tuple(half)].flatten(1), dim=0, return_inverse=True)
        joint = torch.zeros(int(k0.max()) + 1, int(k1.max()) + 1, dtype=torch.float64)
        joint.index_put_((k0, k1), prob, accumulate=True)
        product = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
        coupled |= bool((joint - product).abs().max() > 1e-3)
    assert coupled, "the label flow should make the two blocks' types dependent"


def test_type_flow_is_a_bijection(teachers):
    t = teachers["hard_valid_short"]
    ports, types, _ = t.sample(64, 6, generator=gen(3))
    occ = ports.any(1)
    rnd = torch.randint(1, t.n_types + 1, types.shape, generator=gen(4)) * occ
    for field in (types, rnd):
        fwd = t.type_flow(field, ports)
        assert torch.equal(t.type_flow(fwd, ports, inverse=True), field)
        assert torch.equal(t.type_flow(t.type_flow(field, ports, inverse=True), ports), field)
        assert torch.equal(fwd == 0, ~occ)
    assert (t.type_flow(rnd, ports) != rnd)[occ].float().mean() > 0.3  # nontrivial
    # a permutation of the enumerable set of label fields on a 2-block box
    lib = t.patterns
    paths = np.flatnonzero((lib.flatten(1).sum(1) == 4).numpy())
    p = torch.cat([lib[paths[3]], lib[paths[17]]], dim=1).numpy()
    fields = torch.from_numpy(enumerate_types(p, t.n_types))
    pp = torch.from_numpy(np.broadcast_to(p, (len(fields), *p.shape)).copy())
    image = t.type_flow(fields, pp)
    codes = lambda f: set(map(tuple, f.flatten(1).tolist()))  # noqa: E731
    assert codes(image) == codes(fields) and len(codes(fields)) == len(fields) == 3 ** 6
    assert not torch.equal(image, fields)


# ---------------------------------------------------------------- continuous channel

@pytest.mark.parametrize("key", HARD_VALID_KEYS)
def test_score_matches_finite_differences(teachers, key):
    t = teachers[key]
    ports, types, x = t.sample(2, 4, generator=gen(6))
    s = t.score(x, ports, types)
    occ = t.occupied(ports).expand_as(x)
    assert torch.all(s[~occ] == 0) and torch.all(x[~occ] == 0)
    eps = 1e-5
    fd = torch.zeros_like(x)
    for idx in occ.nonzero().tolist():
        e = torch.zeros_like(x)
        e[tuple(idx)] = eps
        d = t.log_prob_continuous(x + e, ports, types) - t.log_prob_continuous(x - e, ports, types)
        fd[tuple(idx)] = d[idx[0]] / (2 * eps)
    assert torch.allclose(s, fd, atol=1e-6, rtol=1e-6), float((s - fd).abs().max())


@pytest.mark.parametrize("key", HARD_VALID_KEYS)
def test_stein_identity(teachers, key):
    """E[Σ_occ s_c x_c] = −(number of occupied sites) per channel c, per box given ports and types."""
    t = teachers[key]
    ports, types, x = t.sample(600, 4, generator=gen(7))
    s = t.score(x, ports, types)
    n_occ = t.occupied(ports).flatten(1).sum(1).double()
    for c in range(t.channels):
        stat = (s[:, c] * x[:, c]).flatten(1).sum(1) + n_occ
        assert_mc(stat, 0.0, max_se=0.3, name=f"{key} Stein channel {c}")


@pytest.mark.parametrize("key", HARD_VALID_KEYS)
def test_round_trip_and_log_det(teachers, key):
    t = teachers[key]
    ports, types, x = t.sample(4, 8, generator=gen(8))
    u, _ = t.inverse_and_log_det(x, ports, types)
    assert (t.transform(u, ports, types) - x).abs().max() < 1e-10
    occ = t.occupied(ports).expand_as(x)
    assert torch.all(u[~occ] == 0)
    # log|det ∂F⁻¹/∂x_occ| against slogdet of the autograd Jacobian (tiny box)
    ports, types, x = t.sample(3, 4, generator=gen(9))
    _, log_det = t.inverse_and_log_det(x, ports, types)
    for b in range(3):
        o = t.occupied(ports[b:b + 1]).expand_as(x[b:b + 1])[0]

        def inv(v, b=b, o=o):
            full = torch.zeros_like(x[b:b + 1])
            full[0][o] = v
            return t.inverse_and_log_det(full, ports[b:b + 1], types[b:b + 1])[0][0][o]

        jac = torch.autograd.functional.jacobian(inv, x[b][o])
        sign, ref = torch.linalg.slogdet(jac)
        assert sign > 0 and abs(float(ref - log_det[b])) < 1e-10


def test_conditioner_never_sees_updated_parity(teachers):
    """A coupling's (a, b) do not change when x changes at the updated parity A or at empty sites."""
    t = teachers["hard_valid_long"]
    ports, types, x = t.sample(2, 6, generator=gen(10))
    ctx = t._context(ports, types)
    parity = _site_masks((6, 6, 6))[0]
    occ = t.occupied(ports)
    for layer, e in zip(t.layers, ctx["e"]):
        if not isinstance(layer, AffineCoupling):
            continue
        noise = torch.randn(x.shape, generator=gen(11), dtype=x.dtype)
        hidden = ((parity == layer.parity) | ~occ).expand_as(x)  # A sites and empty sites
        ref = layer._scale_shift(x, ctx, e)
        out = layer._scale_shift(torch.where(hidden, x + noise, x), ctx, e)
        assert torch.equal(ref[0], out[0]) and torch.equal(ref[1], out[1])
        changed = layer._scale_shift(torch.where(hidden, x, x + noise), ctx, e)
        assert not torch.equal(ref[1], changed[1])


def test_smoother_kernel_matches_direct_sum(teachers):
    """The FFT open-box convolution equals the direct sum Σ_j K(i − j) f_j over the box."""
    kernel = teachers["hard_valid_long"].kernel
    C = kernel.cutoff
    f = torch.randn(1, 1, 6, 4, 8, generator=gen(12), dtype=torch.float64)
    out = kernel(f)[0, 0].numpy()
    w, fn = kernel.weights.numpy(), f[0, 0].numpy()
    ref = np.zeros_like(out)
    for i in itertools.product(*map(range, fn.shape)):
        for j in itertools.product(*map(range, fn.shape)):
            d = [a - b for a, b in zip(i, j)]
            if max(map(abs, d)) <= C:
                ref[i] += w[d[0] + C, d[1] + C, d[2] + C] * fn[j]
    assert np.abs(out - ref).max() < 1e-12
    assert (w[C, C, C] == 0) and all(w[tuple(np.add(d, C))] == 0 for d in [(1, 1, 0), (2, 0, 0)])


@pytest.mark.slow
def test_size_uniform_statistics(teachers):
    """Occupancy and the corner block's occupied-site moments of x agree at L = 6 and L = 12."""
    t = teachers["hard_valid_short"]
    stats = {}
    for L, n in [(6, 1200), (12, 200)]:
        ports, types, x = t.sample(n, L, generator=gen(13 + L))
        occ = t.occupied(ports)[:, 0]
        c = occ[:, :2, :2, :2].flatten(1).double()
        xc = x[:, :, :2, :2, :2].flatten(2)
        stats[L] = dict(occ=occ.flatten(1).double().mean(1),
                        mean=(xc.sum(1)).sum(1) / c.sum(1).clamp_min(1),
                        sq=(xc.square().sum(1)).sum(1) / c.sum(1).clamp_min(1),
                        type1=((types == 1).flatten(1).double().sum(1)) / occ.flatten(1).double().sum(1))
        stats[L]["w"] = c.sum(1)
    for name in ("occ", "mean", "sq", "type1"):
        a, b = stats[6][name], stats[12][name]
        if name in ("mean", "sq"):
            a, b = a[stats[6]["w"] > 0], b[stats[12]["w"] > 0]
        se = math.sqrt(float(a.var()) / len(a) + float(b.var()) / len(b))
        assert abs(float(a.mean() - b.mean())) <= Z_TOL * se, (name, float(a.mean()), float(b.mean()), se)


def mean_profile(t, L, n=4, seed=1):
    """Mean response profile over n samples and 4 central probe sites (open box, r ≤ L/2)."""
    ports, types, x = t.sample(n, L, generator=gen(seed))
    c = L // 2
    sites = [(c, c, c), (c - 1, c, c), (c, c - 1, c - 1), (c - 1, c - 1, c - 1)]
    return sum(t.response_profile(x, s, c, ports, types).sum(0) for s in sites)


def test_response_ranges(teachers):
    """Short: R_0.05 ≤ 3; long: R_0.05 ≥ 6 and tail beyond 4 ≥ 0.25 (L = 16, bulk probes); samples
    have finite moments at L = 16."""
    short, long_ = mean_profile(teachers["hard_valid_short"], 16), mean_profile(teachers["hard_valid_long"], 16)
    assert int(response_range(short)) <= 3 and float(normalised_tail(short)[4]) < 0.01
    assert int(response_range(long_)) >= 6 and float(normalised_tail(long_)[4]) >= 0.25
    for t in teachers.values():
        _, _, x = t.sample(16, 16, generator=gen(14))
        assert torch.isfinite(x).all() and float(x.pow(4).mean()) < 50


def test_response_profile_is_the_hessian_row(teachers):
    """ρ(0) is Σ_{c,c'} |∂s_{i,c}/∂x_{i,c'}| by finite differences of the score; empty probes give 0."""
    t = teachers["hard_valid_long"]
    ports, types, x = t.sample(6, 4, generator=gen(15))
    site = (1, 2, 1)
    prof = t.response_profile(x, site, 3, ports, types)
    occ = t.occupied(ports)[:, 0, 1, 2, 1]
    assert occ.any() and (~occ).any()
    assert torch.all(prof[~occ] == 0)
    eps, rho0 = 1e-5, torch.zeros(6, dtype=torch.float64)
    for c2 in range(t.channels):
        e = torch.zeros_like(x)
        e[:, c2, 1, 2, 1] = eps
        d = (t.score(x + e, ports, types) - t.score(x - e, ports, types))[:, :, 1, 2, 1] / (2 * eps)
        rho0 += d.abs().sum(1)
    assert torch.allclose(prof[:, 0], rho0 * occ, atol=1e-6)
    assert torch.allclose(prof.sum(1)[occ] > 0, torch.ones(int(occ.sum()), dtype=torch.bool))


# ---------------------------------------------------------------- bad input

def test_bad_input_raises(teachers):
    t = teachers["hard_valid_short"]
    with pytest.raises(ValueError, match=r"L must be an even integer >= 2.*got 5"):
        t.sample(2, 5)
    with pytest.raises(ValueError, match=r"L must .*got 0"):
        t.check_size(0)
    with pytest.raises(ValueError, match="n must be"):
        t.sample(0, 4)
    ports, types, x = t.sample(2, 4, generator=gen(0))
    with pytest.raises(ValueError, match="ports must"):
        t.log_prob_discrete(ports[:, :5], types)
    with pytest.raises(ValueError, match="ports must have dtype"):
        t.occupied(ports.float())
    with pytest.raises(ValueError, match="ports must have shape .*cubic"):
        t.score(x[..., :2], ports[..., :2], types[..., :2])
    with pytest.raises(ValueError, match=r"L must .*got 3"):
        t.log_prob_discrete(ports[..., :3, :3, :3], types[..., :3, :3, :3])
    with pytest.raises(ValueError, match="types must have shape"):
        t.log_prob_discrete(ports, types[:, :2])
    with pytest.raises(ValueError, match="types must be an integer"):
        t.conditioning(ports, types.double())
    with pytest.raises(ValueError, match="x must have shape"):
        t.score(x[:, :1], ports, types)
    with pytest.raises(ValueError, match="x must have shape"):
        t.log_prob(ports, types, x[:1])
    with pytest.raises(ValueError, match="site must be three"):
        t.response_profile(x, (1, 2), 2, ports, types)
    with pytest.raises(ValueError, match="site must be three"):
        t.response_profile(x, (1, 2, 4), 2, ports, types)
    with pytest.raises(ValueError, match="hard-valid teacher key"):
        from sizetransfer.teachers.hard_valid import make_hard_valid
        make_hard_valid("hard_valid_medium")
