"""Metrics against analytic values: Eq. 16, Eq. 17 on a linear (Gaussian) score, Jacobian
shell sums of known linear maps, local observables of known fields."""
import math

import pytest
import torch

from sizetransfer.evaluation.metrics import (absolute_response_profile, clean_score_rmse,
                                             finite_difference_response, local_observables, observables_mae,
                                             response_relative_error, signed_response_profile)
from sizetransfer.teachers.gaussian import GaussianTeacher

TEACHER = GaussianTeacher(seed=0)


def test_clean_score_rmse():
    x = TEACHER.sample(3, 8, generator=torch.Generator().manual_seed(0))
    s = TEACHER.score(x)
    assert clean_score_rmse(s, s).item() == 0
    assert clean_score_rmse(torch.zeros_like(s), s).item() == pytest.approx(1.0)
    assert clean_score_rmse(2 * s, s).item() == pytest.approx(1.0)
    bad = s.clone()
    bad[..., :2, :] += 5.0
    mask = torch.ones(3, 1, 8, 8)
    mask[..., :2, :] = 0
    assert clean_score_rmse(bad, s, mask).item() == 0
    assert clean_score_rmse(bad, s).item() > 1
    with pytest.raises(ValueError, match="same shape"):
        clean_score_rmse(s, s[:2])


@pytest.mark.parametrize("r_in,r_out", [(1, 2), (3, 4)])
def test_finite_difference_response_equals_hessian_region_sums(r_in, r_out):
    """The clean score −C⁻¹x is linear: Δ_A s_i = −Σ_{j∈A} (C⁻¹)_ij exactly."""
    L = 10
    x = TEACHER.sample(2, L, generator=torch.Generator().manual_seed(1))
    probes = [(0, 0), (4, 7), (9, 2)]
    resp = finite_difference_response(TEACHER.score, x, probes, r_in=r_in, r_out=r_out, eps=0.1)
    assert resp.shape == (2, 3, 1)
    c_inv_row = torch.fft.ifft2(1 / TEACHER.spectrum(L)).real  # (C⁻¹)_{0,a}
    for p, (i0, i1) in enumerate(probes):
        expected = 0.0
        for a0 in range(L):
            for a1 in range(L):
                d = max(min(abs(a0 - i0), L - abs(a0 - i0)), min(abs(a1 - i1), L - abs(a1 - i1)))
                if r_in <= d <= r_out:
                    expected -= c_inv_row[(a0 - i0) % L, (a1 - i1) % L].item()
        torch.testing.assert_close(resp[:, p, 0], torch.full((2,), expected, dtype=torch.float64))
    # a student with the smoothed (σ = 0.5) score instead of the clean one
    student = finite_difference_response(lambda y: TEACHER.smoothed_score(y, 0.5), x, probes,
                                         r_in=r_in, r_out=r_out, eps=0.1)
    err = response_relative_error(student, resp)
    assert 0 < err.item() < 1
    assert response_relative_error(resp, resp).item() == 0
    assert response_relative_error(torch.zeros_like(resp), resp).item() == pytest.approx(1.0)


def test_finite_difference_response_mask_and_open_box():
    """Open box: the region is clipped by the box; a mask removes sites from the region."""
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    total = lambda y: y.sum((2, 3), keepdim=True).expand_as(y)  # ∂s_i/∂x_j = 1 for all i, j
    resp = finite_difference_response(total, x, [(0, 0)], r_in=1, r_out=2, periodic=False)
    assert resp.item() == pytest.approx(8.0)  # 3×3 corner block minus the probe
    mask = torch.ones(1, 1, 6, 6)
    mask[..., 0, :] = 0
    resp = finite_difference_response(total, x, [(0, 0)], r_in=1, r_out=2, periodic=False, mask=mask)
    assert resp.item() == pytest.approx(6.0)
    resp = finite_difference_response(total, x, [(0, 0)], r_in=1, r_out=2, periodic=True)
    assert resp.item() == pytest.approx(24.0)
    with pytest.raises(ValueError, match="r_in"):
        finite_difference_response(total, x, [(0, 0)], r_in=3, r_out=2)
    with pytest.raises(ValueError, match="eps"):
        finite_difference_response(total, x, [(0, 0)], r_in=1, r_out=2, eps=0)


def test_score_response_profile_of_known_linear_map():
    """s(x)_i = Σ_a w_a x_{i+a} (two channels mixed by a matrix M): ∂s_{i,c}/∂x_{i+a,c'} = M_cc' w_a."""
    w = {(0, 0): -2.0, (1, 0): 0.5, (0, -1): -0.25, (2, 2): 0.125, (-3, 1): 1.0}
    M = torch.tensor([[1.0, -0.5], [0.0, 2.0]], dtype=torch.float64)

    def score_fn(x):
        y = sum(v * x.roll((-a0, -a1), (2, 3)) for (a0, a1), v in w.items())
        return torch.einsum("cd,nd...->nc...", M, y)

    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    prof = absolute_response_profile(score_fn, x, (8, 1), 4)  # wraps around the torus
    m = M.abs().sum().item()
    expected = torch.tensor([2.0, 0.75, 0.125, 1.0, 0.0], dtype=torch.float64) * m
    torch.testing.assert_close(prof, expected.expand(3, 5))
    signed = signed_response_profile(score_fn, x, (8, 1), 4)
    expected = torch.tensor([-2.0, 0.25, 0.125, 1.0, 0.0], dtype=torch.float64) * M.sum().item()
    torch.testing.assert_close(signed, expected.expand(3, 5))


def test_local_observables_of_known_fields():
    checker = (torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2 * 2.0 - 1  # ±1 checkerboard
    x = torch.stack([checker, -checker]).unsqueeze(1).double()
    obs = local_observables(x)
    assert set(obs) == {"mean", "variance", "skewness", "kurtosis", "nn_corr_0", "nn_corr_1"}
    expected = {"mean": 0.0, "variance": 1.0, "skewness": 0.0, "kurtosis": -2.0, "nn_corr_0": -1.0,
                "nn_corr_1": -1.0}
    for k, v in expected.items():
        assert obs[k].shape == (1,) and obs[k].item() == pytest.approx(v, abs=1e-12), k
    stripes = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 1, 5, 3).double()  # open box
    obs = local_observables(stripes, periodic=False)
    assert obs["mean"].item() == pytest.approx(2.0) and obs["variance"].item() == pytest.approx(2.0)
    # pairs along axis 0: (−2,−1), (−1,0), (0,1), (1,2): mean product 4/4 over variance 2
    assert obs["nn_corr_0"].item() == pytest.approx(0.5) and obs["nn_corr_1"].item() == pytest.approx(1.0)
    assert local_observables(torch.zeros(2, 1, 4, 4, 4) + 1).keys() >= {"nn_corr_2"}
    other = {k: v + 0.5 for k, v in obs.items()}
    assert observables_mae(obs, other).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="observable"):
        observables_mae(obs, {"mean": obs["mean"]})


def test_local_observables_of_teacher_samples():
    n, L = 500, 8
    x = TEACHER.sample(n, L, generator=torch.Generator().manual_seed(2))
    cov = torch.fft.ifft2(TEACHER.spectrum(L)).real
    obs = local_observables(x)
    per_var = x.square().mean((1, 2, 3))
    assert abs(obs["variance"].item() - cov[0, 0].item()) < 4 * per_var.std().item() / math.sqrt(n)
    for k in ("mean", "skewness", "kurtosis"):
        assert abs(obs[k].item()) < 0.05, k  # Gaussian: all three vanish
    nn = (x * x.roll(-1, 3)).mean((1, 2, 3)) / cov[0, 0]
    assert abs(obs["nn_corr_1"].item() - cov[0, 1].item() / cov[0, 0].item()) < 4 * nn.std().item() / math.sqrt(n)


def test_finite_difference_response_keeps_per_sample_conditioning_aligned():
    """A score function with per-sample conditioning bound to the n samples (as the callback binds a
    student's cond or a teacher's ports/types) must get whole aligned batches: s(x)_b = c_b · Σ x_b."""
    n, L = 5, 6
    c = torch.arange(1, n + 1, dtype=torch.float64)
    calls = []

    def conditioned(y):
        calls.append(y.shape[0])
        assert y.shape[0] == n, "score_fn must see the n samples its conditioning is bound to"
        return (c.view(n, 1, 1, 1) * y.sum((2, 3), keepdim=True)).expand_as(y)

    x = torch.randn(n, 1, L, L, dtype=torch.float64)
    probes = [(0, 0), (3, 3), (5, 2)]
    resp = finite_difference_response(conditioned, x, probes, r_in=1, r_out=1, periodic=False)
    sizes = torch.tensor([3.0, 8.0, 5.0], dtype=torch.float64)       # clipped d∞ = 1 shells
    torch.testing.assert_close(resp[..., 0], c[:, None] * sizes)
    assert calls == [n] * 2 * len(probes)
    # per-sample probes (n, P, d): sample b probed at its own sites
    per = torch.tensor([[[0, 0]], [[3, 3]], [[5, 2]], [[0, 0]], [[3, 3]]])
    resp = finite_difference_response(conditioned, x, per, r_in=1, r_out=1, periodic=False)
    torch.testing.assert_close(resp[:, 0, 0], c * torch.tensor([3.0, 8.0, 5.0, 3.0, 8.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="probes"):
        finite_difference_response(conditioned, x, per[:2], r_in=1, r_out=1)


def test_score_response_profile_per_sample_sites_and_mask():
    """Open box, s_i = Σ_j x_j: |∂s_i/∂x_j| = 1, so ρ(r) counts the (masked) sites of the clipped shell."""
    total = lambda y: y.sum((2, 3, 4), keepdim=True).expand_as(y)
    x = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    prof = absolute_response_profile(total, x, torch.tensor([[0, 0, 0], [1, 1, 1]]), 3, periodic=False)
    torch.testing.assert_close(prof, torch.tensor([[1.0, 7, 19, 37], [1.0, 26, 37, 0]], dtype=torch.float64))
    mask = torch.ones(2, 1, 4, 4, 4)
    mask[:, :, 3] = 0                                                 # the face i_0 = 3 empty
    prof = absolute_response_profile(total, x, (0, 0, 0), 3, periodic=False, mask=mask)
    torch.testing.assert_close(prof[0], torch.tensor([1.0, 7, 19, 21], dtype=torch.float64))
    with pytest.raises(ValueError, match="site"):
        absolute_response_profile(total, x, torch.zeros(3, 3, dtype=torch.int64), 3)


def test_open_box_bulk():
    from sizetransfer.evaluation.metrics import open_box_bulk

    assert open_box_bulk((6, 6, 6), 0).all()
    assert open_box_bulk((6, 6, 6), 1).sum() == 4 ** 3
    assert open_box_bulk((6, 8, 6), 3).sum() == 0 and open_box_bulk((8, 8, 8), 3).sum() == 8
    with pytest.raises(ValueError, match="margin"):
        open_box_bulk((6, 6), -1)


def test_evaluation_runs_without_lightning():
    """``evaluate_fdlf`` over a plain score function and a plain data object: a student (1 + a)·s_teacher
    has RMSE and response errors a, and nothing imports Lightning (subprocess: a clean module table)."""
    import subprocess
    import sys

    code = """
import sys, torch
from types import SimpleNamespace
from sizetransfer.evaluation import FDLFEvalConfig, evaluate_fdlf
from sizetransfer.teachers import make_teacher
t = make_teacher("gaussian")
data = SimpleNamespace(teacher=t, eval_sizes=[16],
                       eval_batch=lambda L, n, seed=0: {"x0": t.sample(n, L, generator=torch.Generator().manual_seed(seed))})
rows = evaluate_fdlf(lambda x, sigma, cond: 1.25 * t.score(x), data, FDLFEvalConfig(n_samples=2, response_samples=1),
                     receptive_radius=4, sigma_min=0.01)["rows"]
assert [r["L"] for r in rows] == [16]
for key in ("rmse_sigma0.05", "rmse_sigma0.01", "near_response_error", "far_response_error"):
    assert abs(rows[0][key] - 0.25) < 1e-9, (key, rows[0][key])
assert not [m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "wandb", "matplotlib")]
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_eval_sites_set_the_samples_per_size():
    """``sites``: max(n_samples, ceil(sites / L^d)) samples per size (about ``sites`` sites each, d from the
    teacher), ``None`` keeps n_samples at every size; the RMSE equals the one on that many samples."""
    import math
    from types import SimpleNamespace

    from sizetransfer.evaluation import FDLFEvalConfig, evaluate_fdlf
    from sizetransfer.teachers import make_teacher

    cfg = FDLFEvalConfig(n_samples=16, sites=16 * 96 ** 2)
    assert [cfg.samples_at(L) for L in (24, 32, 48, 64, 96, 128)] == [256, 144, 64, 36, 16, 16]
    assert cfg.samples_at(10, dim=3) == 148 and FDLFEvalConfig(n_samples=16).samples_at(24) == 16
    for bad in (0, -5, 1.5, True, "many"):
        with pytest.raises(ValueError, match=r"sites must be an integer >= 1 or None"):
            FDLFEvalConfig(sites=bad)

    t = make_teacher("gaussian")
    asked = []

    def eval_batch(L, n, seed=0):
        asked.append((L, n))
        return {"x0": t.sample(n, L, generator=torch.Generator().manual_seed(seed))}

    data = SimpleNamespace(teacher=t, eval_sizes=[16, 32], eval_batch=eval_batch)
    student = lambda x, sigma, cond: t.score(x) + 0.1 * torch.cos(x)  # noqa: E731 (an error that varies by sample)
    rows = evaluate_fdlf(student, data, FDLFEvalConfig(n_samples=2, sites=2000, response_samples=1),
                         receptive_radius=4)["rows"]
    assert asked == [(16, 8), (32, 2)]
    x = t.sample(8, 16, generator=torch.Generator().manual_seed(12345))
    s = t.score(x)
    expected = math.sqrt(float((0.1 * torch.cos(x)).square().sum() / s.square().sum()))
    assert rows[0]["rmse_sigma0.05"] == pytest.approx(expected, rel=1e-12)


def test_eval_scatter_between_sets_and_pooled():
    """``rmse_scatter``: one RMSE per independent set (seeds 0, 1, …), their mean / sd / s.e.m., and the pooled
    RMSE sqrt(Σ err / Σ ref) over all sets, against a direct computation; the CLI refuses one set before any work."""
    import math
    from types import SimpleNamespace

    from sizetransfer.benchmarks.eval_scatter import main, rmse_scatter
    from sizetransfer.teachers import make_teacher

    t = make_teacher("gaussian")
    draw = lambda L, n, seed=0: t.sample(n, L, generator=torch.Generator().manual_seed(100 + seed))  # noqa: E731
    data = SimpleNamespace(teacher=t, eval_batch=lambda L, n, seed=0: {"x0": draw(L, n, seed)})
    student = lambda x, sigma, cond: t.score(x) + sigma * torch.sin(3 * x)  # noqa: E731
    out = rmse_scatter(student, data, 12, n_samples=3, sets=4, sigma=0.5)
    errs, refs = [], []
    for k in range(4):
        x = draw(12, 3, k)
        errs.append(float((0.5 * torch.sin(3 * x)).square().sum()))
        refs.append(float(t.score(x).square().sum()))
    values = [math.sqrt(e / r) for e, r in zip(errs, refs)]
    assert out["values"] == pytest.approx(values, rel=1e-12)
    assert out["pooled"] == pytest.approx(math.sqrt(sum(errs) / sum(refs)), rel=1e-12)
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert (out["mean"], out["sd"], out["sem"]) == pytest.approx((mean, sd, sd / 2), rel=1e-12)
    assert (out["sites"], out["sets"], out["n_samples"]) == (3 * 144, 4, 3)
    assert main(["--ckpt", "missing.ckpt", "--sets", "1"]) == 2
