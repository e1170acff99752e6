"""LocalScoreCNN: exact receptive radius, size agnosticism, conditioning, EDM preconditioning."""
import pytest
import torch

from helpers import randomise_zero_init

from sizetransfer.models import EDMPrecond, LocalCNN, LocalScoreCNN, SiteNorm, edm_coefficients


def _model(blocks, dim=2, periodic=True, **kw):
    torch.manual_seed(blocks)
    return randomise_zero_init(LocalScoreCNN(blocks=blocks, width=8, dim=dim, periodic=periodic, **kw).double())


def _output_change(model, x, sigma, site, j):
    """|s(x + e_j)_site − s(x)_site| for a unit perturbation at site j."""
    xp = x.clone()
    xp[(0, 0) + tuple(j)] += 1.0
    with torch.no_grad():
        return (model(xp, sigma) - model(x, sigma))[(0, 0) + tuple(site)].abs().item()


def _gradient_support(model, x, sigma, site):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x, sigma)[(0, 0) + tuple(site)], x)
    return g[0, 0] != 0


def _chebyshev(shape, site, periodic):
    d = None
    for axis, (n, i) in enumerate(zip(shape, site)):
        a = (torch.arange(n) - i).abs()
        if periodic:
            a = torch.minimum(a, n - a)
        a = a.view([n if k == axis else 1 for k in range(len(shape))])
        d = a if d is None else torch.maximum(d, a)
    return d.expand(*shape)


@pytest.mark.parametrize("blocks,dim,periodic,kw", [(1, 2, True, {}), (2, 2, True, {}), (3, 2, True, {}),
                                                    (1, 2, False, {}), (2, 2, False, {}), (3, 2, False, {}),
                                                    (1, 3, False, {}), (2, 3, False, {}),
                                                    (3, 2, True, {"radius": 4}), (3, 2, True, {"radius": 5}),
                                                    (2, 2, False, {"radius": 2}), (1, 2, True, {"film": "block"}),
                                                    (2, 2, True, {"film": "block", "norm": "none", "radius": 3}),
                                                    (1, 2, True, {"mlp_ratio": 2}),
                                                    (3, 2, True, {"radius": 4, "mlp_ratio": 2}),
                                                    (1, 2, True, {"mlp_ratio": 1, "mlp_depth": 2}),
                                                    (1, 2, True, {"dilations": [1, 2, 4, 4]}),
                                                    (1, 2, False, {"dilations": [2, 1, 3, 1]}),
                                                    (2, 2, True, {"dilations": [1, 1, 2, 2, 3, 1], "film": "block"}),
                                                    (3, 2, True, {"dilations": [1, 2, 2, 3, 0, 0, 0, 0]}),
                                                    (1, 2, False, {"dilations": [0, 1, 0, 2]}),
                                                    (2, 2, True, {"stem_radius": 3}),
                                                    (2, 2, True, {"stem_radius": 6, "radius": 6}),
                                                    (1, 2, False, {"stem_radius": 2, "radius": 3}),
                                                    (1, 3, False, {"stem_radius": 2, "radius": 2}),
                                                    (1, 2, True, {"skip_radius": 6}),
                                                    (2, 2, False, {"skip_radius": 3}),
                                                    (1, 2, True, {"skip_radius": 5, "film": "block"})])
def test_receptive_radius_is_exact(blocks, dim, periodic, kw):
    """Dilated convs too: the support is the whole Chebyshev ball of radius Σ d (no gaps), nothing beyond."""
    model = _model(blocks, dim, periodic, **kw)
    R = model.receptive_radius
    conv_radius = (sum(kw["dilations"]) if "dilations" in kw
                   else kw.get("radius", kw.get("stem_radius", 1) + 2 * blocks + 1))
    assert R == max(conv_radius, kw.get("skip_radius", 0))
    L = 2 * R + 3  # distance R + 1 exists in both directions on the torus
    x = torch.randn((1, 1) + (L,) * dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.7], dtype=torch.float64)
    # periodic: probe at the origin, so the far sites are reached through the wrap-around
    site = (0,) * dim if periodic else (R + 1,) * dim
    for dist, nonzero in ((R, True), (R + 1, False)):
        for sign in ((1, -1) if periodic else (1,)):
            for offset in ((dist,) + (0,) * (dim - 1), (dist,) * dim):  # along an axis, diagonal
                j = tuple((s + sign * o) % L for s, o in zip(site, offset))
                change = _output_change(model, x, sigma, site, j)
                assert (change > 1e-12) if nonzero else (change == 0.0), (offset, sign, change)
    support = _gradient_support(model, x, sigma, site)
    assert torch.equal(support, _chebyshev((L,) * dim, site, periodic) <= R)


@pytest.mark.parametrize("kw, message", [
    (dict(stem_radius=0), "stem_radius must be an integer >= 1"),
    (dict(stem_radius=3, radius=2), r"radius must be an integer in \[stem_radius, stem_radius \+ 2\*blocks\+1\] = \[3, 6\]"),
    (dict(stem_radius=3, radius=7), r"= \[3, 6\]"),
    (dict(stem_radius=2, dilations=[1, 1, 1, 1]), "dilations cannot be set with stem_radius=2")])
def test_stem_radius_bad_values_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        LocalScoreCNN(blocks=1, width=4, **kw)


def test_stem_is_one_wide_conv_and_radius_checked_against_the_training_size():
    from sizetransfer.data import FDLFDataModule
    from sizetransfer.module import ScoreModule

    model = LocalScoreCNN(blocks=2, width=4, stem_radius=6, radius=6)
    assert model.net.conv_in.kernel_size == (13, 13)
    assert all(m.kernel_size == (1, 1) for name, m in model.net.named_modules()
               if isinstance(m, torch.nn.Conv2d) and name != "conv_in")
    module = ScoreModule(blocks=1, width=4, stem_radius=6)  # R = 6 + 3 = 9
    with pytest.raises(ValueError, match=r"model.stem_radius=6 and model.blocks=1 give receptive radius "
                                         r"stem_radius\+2\*blocks\+1 = 9, which must be < data.train_size/2 = 8"):
        module.check_fit(FDLFDataModule(teacher="simple_local", train_size=16), max_steps=10)


@pytest.mark.parametrize("kw, text", [
    ({"blocks": 1}, "model.blocks=1 gives receptive radius 2*blocks+2 = 4"),
    ({"blocks": 2, "radius": 3}, "model.radius=3"),
    ({"blocks": 1, "stem_radius": 6}, "model.stem_radius=6 and model.blocks=1 give receptive radius "
                                      "stem_radius+2*blocks+1 = 9"),
    ({"blocks": 2, "stem_radius": 6, "radius": 6}, "model.radius=6"),
    ({"blocks": 1, "dilations": [1, 2, 4, 4]}, "model.dilations=[1, 2, 4, 4] give receptive radius "
                                               "sum(dilations) = 11"),
    ({"blocks": 1, "skip_radius": 6}, "model.skip_radius=6"),
    ({"blocks": 3, "skip_radius": 6}, "model.blocks=3 gives receptive radius 2*blocks+2 = 8"),
])
def test_describe_radius_names_the_options_that_set_it(kw, text):
    from sizetransfer.models.local_cnn import LocalCNN

    net = LocalCNN(width=4, **kw)
    assert net.describe_radius("model.") == text
    assert text.endswith(str(net.receptive_radius))


def test_linear_skip_starts_at_zero_and_is_linear_in_x():
    torch.manual_seed(0)
    plain = LocalScoreCNN(blocks=1, width=8).double()
    torch.manual_seed(0)
    skipped = LocalScoreCNN(blocks=1, width=8, skip_radius=6).double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    sigma = torch.tensor([0.3, 4.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(skipped(x, sigma), plain(x, sigma), rtol=0, atol=0)  # zero gains at start
        skip = skipped.net.skip
        skip.gain.bias.normal_()
        emb = skipped.net.noise_embed(torch.log(sigma).mul(0.25).reshape(-1, 1))
        # linear in x: skip(a x + b y) = a skip(x) + b skip(y)
        y = torch.randn_like(x)
        torch.testing.assert_close(skip(2 * x - 3 * y, emb), 2 * skip(x, emb) - 3 * skip(y, emb))
    with pytest.raises(ValueError, match="skip_radius must be an integer >= 0"):
        LocalScoreCNN(blocks=1, width=4, skip_radius=-1)


def test_open_box_corner_sees_only_inside():
    model = _model(1, 2, periodic=False)
    L = 12
    x = torch.randn(1, 1, L, L, dtype=torch.float64)
    support = _gradient_support(model, x, torch.tensor([0.5], dtype=torch.float64), (0, 0))
    assert torch.equal(support, _chebyshev((L, L), (0, 0), periodic=False) <= model.receptive_radius)


@pytest.mark.parametrize("periodic", [True, False])
def test_size_agnostic_same_weights(periodic):
    """One set of weights runs at L = 16 and 24 and agrees wherever the R-neighbourhoods agree."""
    model = _model(1, 2, periodic)
    R = model.receptive_radius
    big = torch.randn(3, 1, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    small = big[..., :16, :16].clone()
    sigma = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    with torch.no_grad():
        out_big, out_small = model(big, sigma), model(small, sigma)
    assert out_big.shape == big.shape and out_small.shape == small.shape
    lo = 0 if not periodic else R  # open box: the crop shares the low boundary with the big box
    inner = (slice(None), slice(None), slice(lo, 16 - R), slice(lo, 16 - R))
    torch.testing.assert_close(out_small[inner], out_big[inner], rtol=0, atol=1e-12)
    assert (out_small[..., 15, 15] - out_big[..., 15, 15]).abs().max() > 1e-6  # edges do differ


def test_conditioning_channels_reach_the_network_unscaled():
    torch.manual_seed(0)
    model = randomise_zero_init(LocalScoreCNN(blocks=1, width=8, dim=3, periodic=False, in_channels=2,
                                               out_channels=2, cond_channels=3).double())
    x = torch.randn(2, 2, 6, 6, 6, dtype=torch.float64)
    cond = torch.randn(2, 3, 6, 6, 6, dtype=torch.float64)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    seen = {}
    model.net.conv_in.register_forward_hook(lambda mod, inp, out: seen.update(input=inp[0]))
    out = model(x, sigma, cond)
    assert out.shape == x.shape
    c_in = (sigma ** 2 + 1).rsqrt().view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(seen["input"][:, :2], c_in * x)
    torch.testing.assert_close(seen["input"][:, 2:], cond)
    with torch.no_grad():
        assert (model(x, sigma, cond + 1) - out).abs().max() > 1e-6
    with pytest.raises(ValueError, match="cond"):
        model(x, sigma)
    with pytest.raises(ValueError, match="cond"):
        model(x, sigma, cond[:, :2])


def test_site_norm_is_per_site():
    """SiteNorm normalises the channels of each site; changing one site changes that site only."""
    h = torch.randn(2, 16, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = SiteNorm()(h)
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 9, 9, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.var(1, correction=0), torch.ones(2, 9, 9, dtype=torch.float64), rtol=1e-4, atol=0)
    h2 = h.clone()
    h2[1, :, 4, 5] += torch.randn(16, dtype=torch.float64)
    changed = (SiteNorm()(h2) - out).abs().amax(1) > 0
    expected = torch.zeros(2, 9, 9, dtype=torch.bool)
    expected[1, 4, 5] = True
    assert torch.equal(changed, expected)


def test_default_student_starts_as_the_gaussian_score():
    """Zero output conv: s_θ(x, σ) = −x / (σ² + σ_d²) before training, at any σ."""
    model = LocalScoreCNN(blocks=2, width=8, sigma_data=0.5).double()
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 4.0], dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma), -x / (sigma.view(-1, 1, 1, 1) ** 2 + 0.25))


def test_edm_coefficients_named():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 2.0], dtype=torch.float64)
    c = edm_coefficients(sigma, x, sigma_data=0.5)
    s = sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(c.c_skip, 0.25 / (s ** 2 + 0.25))
    torch.testing.assert_close(c.c_out, 0.5 * s / (s ** 2 + 0.25).sqrt())
    torch.testing.assert_close(c.c_in, 1 / (s ** 2 + 0.25).sqrt())
    torch.testing.assert_close(c.c_noise, 0.25 * sigma.log())


def test_edm_preconditioning_formulas():
    torch.manual_seed(0)
    net = randomise_zero_init(LocalCNN(blocks=1, width=8).double())
    pre = EDMPrecond(net, sigma_data=0.7)
    model = LocalScoreCNN(blocks=1, width=8, sigma_data=0.7).double()
    model.denoiser.load_state_dict(pre.state_dict())
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 10.0], dtype=torch.float64)
    sd, s = 0.7, sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        f = net(x / (s ** 2 + sd ** 2).sqrt(), 0.25 * sigma.log())
        denoised = sd ** 2 / (s ** 2 + sd ** 2) * x + s * sd / (s ** 2 + sd ** 2).sqrt() * f
        torch.testing.assert_close(pre(x, sigma), denoised)
        torch.testing.assert_close(model(x, sigma), (denoised - x) / s ** 2)
        torch.testing.assert_close(model(x, 0.3), model(x, torch.full((4,), 0.3, dtype=torch.float64)))


def test_dilation_zero_is_a_1x1_conv():
    """dilations with zeros: [1, 1, 1, 1, 0, 0, 0, 0] is radius=4 at B = 3 (same weights from the same seed, same
    output), and [1, 2, 2, 3, 0, 0, 0, 0] reaches R = 8 with the same parameters (only the reach changes)."""
    def build(**kw):
        torch.manual_seed(3)
        return LocalScoreCNN(blocks=3, width=8, **kw).double()
    by_radius, by_dilation, dilated = build(radius=4), build(dilations=[1, 1, 1, 1, 0, 0, 0, 0]), \
        build(dilations=[1, 2, 2, 3, 0, 0, 0, 0])
    a, b, c = by_radius.state_dict(), by_dilation.state_dict(), dilated.state_dict()
    assert list(a) == list(b) == list(c)
    assert all(torch.equal(a[k], b[k]) for k in a) and all(a[k].shape == c[k].shape for k in a)
    assert (by_dilation.receptive_radius, dilated.receptive_radius) == (4, 8)
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    for m in (by_radius, by_dilation):  # every path live, so the outputs say more than the initial prior score
        randomise_zero_init(m)
    assert torch.equal(by_radius(x, sigma), by_dilation(x, sigma))


@pytest.mark.parametrize("kwargs,name", [({"dim": 4}, "dim"), ({"blocks": -1}, "blocks"),
                                         ({"width": 0}, "width"), ({"out_channels": 2}, "out_channels"),
                                         ({"blocks": 1, "radius": 5}, "radius"), ({"radius": 0}, "radius"),
                                         ({"film": "all"}, "film"), ({"norm": "group"}, "norm"),
                                         ({"emb_width": 0}, "emb_width"), ({"mlp_ratio": -1}, "mlp_ratio"),
                                         ({"film": "block", "mlp_ratio": 2}, "mlp_ratio"),
                                         ({"mlp_ratio": 1, "mlp_depth": 0}, "mlp_depth"),
                                         ({"dilations": [1, 2, 4]}, "dilations"),
                                         ({"dilations": [0, 0, 0, 0]}, "dilations"),
                                         ({"dilations": [1, -1, 1, 1]}, "dilations"),
                                         ({"dilations": [2, 2, 2, 2]}, "leave offsets"),
                                         ({"dilations": [1, 1, 1, 1], "radius": 3}, "dilations and radius")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LocalScoreCNN(**kwargs)


def test_bad_input_shape():
    model = LocalScoreCNN(blocks=1, width=4)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(1, 2, 8, 8), torch.ones(1))
    with pytest.raises(ValueError, match="sigma"):
        model(torch.zeros(2, 1, 8, 8), torch.ones(3))


def test_run_summary_names_the_stem_and_skip_with_the_lattice_dimension():
    from types import SimpleNamespace

    from sizetransfer.module import ScoreModule
    from sizetransfer.run_summary import describe_training

    data = SimpleNamespace(train_size=24)
    text = describe_training(ScoreModule(blocks=2, width=4, skip_radius=6), data, steps=10, wall_s=1.0,
                             resumed_from_step=None)
    assert "a linear skip of radius 6, receptive radius R = 6 sites" in text and "stem" not in text
    text = describe_training(ScoreModule(blocks=1, width=4, dim=3, periodic=False, stem_radius=2), data, steps=10,
                             wall_s=1.0, resumed_from_step=None)
    assert "a 5×5×5 input stem, receptive radius R = 5 sites" in text


def test_mlp_depth_stacks_residual_per_site_mlps():
    """``mlp_depth`` k: k residual MLPs after each block, units (2i, 2i + 1); depth 1 keeps the keys mlp.0, mlp.1
    (checkpoints from before the option load), and a second MLP whose last conv is zero is the depth-1 model."""
    torch.manual_seed(0)
    one = LocalScoreCNN(blocks=1, width=8, emb_width=8, mlp_ratio=2).double()
    two = LocalScoreCNN(blocks=1, width=8, emb_width=8, mlp_ratio=2, mlp_depth=2).double()
    def mlp_units(model):
        return {k.split(".")[5] for k in model.state_dict() if ".mlp." in k}

    assert mlp_units(one) == {"0", "1"} and mlp_units(two) == {"0", "1", "2", "3"}
    for p in one.parameters():  # break the zero-initialised output so the comparison means something
        torch.nn.init.normal_(p, std=0.2)
    missing, unexpected = two.load_state_dict(one.state_dict(), strict=False)
    assert not unexpected and all(".mlp.2." in k or ".mlp.3." in k for k in missing)
    last = two.net.res[0].mlp[3]
    torch.nn.init.normal_(two.net.res[0].mlp[2].conv.weight)
    torch.nn.init.zeros_(last.conv.weight), torch.nn.init.zeros_(last.conv.bias)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(two(x, 0.3), one(x, 0.3))
    torch.nn.init.normal_(last.conv.weight, std=0.1)
    assert not torch.allclose(two(x, 0.3), one(x, 0.3))
