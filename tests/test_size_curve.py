"""Size curve at large L: chunked evaluation equals unchunked, the flatness slope against a hand computation,
the CLI's files and table on a tiny checkpoint, and bad input refused in one line before any output."""
import csv
import json
import math

import pytest
import torch

import sizetransfer.teachers.fdlf as fdlf_teacher
from helpers import fake_run
from sizetransfer.diagnose.target import TeacherData
from sizetransfer.evaluation.fdlf import FDLFEvalConfig, evaluate_fdlf
from sizetransfer.diagnose.measure import trend
from sizetransfer.evaluation.flatness import flatness_over_runs, format_flatness, log_size_slope, seed_slope
from sizetransfer.size_curve.__main__ import main as cli_main
from sizetransfer.size_curve.core import SizeCurveConfig, per_size
from sizetransfer.teachers import make_teacher


def perturbed_exact_score(teacher):
    """(x, sigma) -> exact clean score + 0.1 tanh(x_{i+e_1}) + 0.02 x_{i+6e_2}: a float64 model with non-zero
    RMSE, near and far response errors, differentiable in x (the profile needs its Jacobian)."""

    def score(x, sigma, cond=None):
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(teacher.log_prob(x).sum(), x, create_graph=True)
        return s + 0.1 * torch.tanh(x.roll(1, -1)) + 0.02 * x.roll(6, -2)

    return score


def test_chunked_evaluation_equals_unchunked_to_round_off():
    teacher = make_teacher("complex_long")
    data = TeacherData(teacher, 24)
    base = FDLFEvalConfig(n_samples=5, response_samples=3, n_probes=2)
    one = evaluate_fdlf(perturbed_exact_score(teacher), data, base, receptive_radius=4, sizes=[24])
    # one sample per chunk: 24² sites
    many = evaluate_fdlf(perturbed_exact_score(teacher), data, FDLFEvalConfig(n_samples=5, response_samples=3,
                         n_probes=2, chunk_sites=24 * 24), receptive_radius=4, sizes=[24])
    assert base.chunks(5, (24, 24)) == [slice(0, 5)]
    assert FDLFEvalConfig(chunk_sites=1000).chunks(5, (24, 24)) == [slice(k, k + 1) for k in range(5)]
    a, b = one["rows"][0], many["rows"][0]
    assert min(a["rmse_sigma0.05"], a["near_response_error"], a["far_response_error"]) > 1e-4
    # float64 sums of ~3000 squared terms in another order: relative differences ~1e-15
    for key in ("rmse_sigma0.05", "near_response_error", "far_response_error"):
        assert b[key] == pytest.approx(a[key], rel=1e-12, abs=0), key
    torch.testing.assert_close(torch.tensor(many["profiles"][0]["teacher"]),
                               torch.tensor(one["profiles"][0]["teacher"]), rtol=1e-12, atol=1e-15)


def test_chunked_open_box_evaluation_equals_unchunked():
    """3D open boxes: per-sample probes, occupied masks and the bound discrete state follow the chunks."""
    from sizetransfer.data import HardValidDataModule
    from sizetransfer.evaluation.score import model_score
    from test_hard_valid_data import DecodingTeacherStudent

    dm = HardValidDataModule(train_size=6, eval_sizes=[10], batch_size=2)
    student = model_score(DecodingTeacherStudent(dm.teacher, 0.25).double())
    kw = dict(n_samples=3, response_samples=2, n_probes=2, bulk_margin=1, far=(3, 4))
    one, many = (evaluate_fdlf(student, dm, FDLFEvalConfig(**kw, chunk_sites=c), receptive_radius=4, sizes=[10])
                 for c in (2 ** 18, 1))
    for key, value in one["rows"][0].items():
        assert many["rows"][0][key] == pytest.approx(value, rel=1e-12), key
    assert one["rows"][0]["near_response_error"] == pytest.approx(0.25, rel=1e-6)
    assert many["profiles"][0]["student"] == pytest.approx(one["profiles"][0]["student"], rel=1e-12)


def test_chunked_teacher_sampling_and_float64_fft_smoothing(monkeypatch):
    teacher = make_teacher("complex_long")
    whole = teacher.sample(3, 24, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(fdlf_teacher, "SAMPLE_CHUNK_SITES", 24 * 24)  # one sample per forward pass
    chunked = teacher.sample(3, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=1e-13)
    assert whole.dtype == torch.float64 and teacher.score(whole).dtype == torch.float64
    kernel = next(layer.kernel for layer in teacher.layers if hasattr(layer, "kernel"))
    assert kernel.spectrum(24, torch.float64, "cpu").dtype == torch.complex128


def test_log_size_slope_matches_a_hand_computation():
    # x = ln 24 + (0, ln 2, 2 ln 2): centred ±ln 2, 0; S_xx = 2 ln²2; Σ dx (y − ȳ) = 0.04 ln 2
    fit = log_size_slope([24, 48, 96], [0.20, 0.23, 0.24])
    assert fit["slope"] == pytest.approx(0.02 / math.log(2), rel=1e-12)
    # residuals −1/300, +2/300, −1/300: SSR = 6/9e4, K − 2 = 1 → s.e. = sqrt(SSR / S_xx) = 0.01 / (√3 ln 2)
    assert fit["slope_se"] == pytest.approx(0.01 / (math.sqrt(3) * math.log(2)), rel=1e-12)
    assert fit["n_sizes"] == 3
    exact_line = log_size_slope([10, 100, 1000], [1 + 0.5 * math.log(L) for L in (10, 100, 1000)])
    assert exact_line["slope"] == pytest.approx(0.5, rel=1e-12)
    assert exact_line["slope_se"] == pytest.approx(0, abs=1e-12)
    assert math.isnan(log_size_slope([24, 48], [0.2, 0.3])["slope_se"])
    over = seed_slope([0.01, 0.03, 0.02])
    assert over["slope"] == pytest.approx(0.02) and over["slope_se"] == pytest.approx(0.01 / math.sqrt(3))
    runs = flatness_over_runs([([24, 48, 96], [0.20, 0.23, 0.24]), ([24, 48, 96], [0.30, 0.30, 0.30])])
    assert runs["slope"] == pytest.approx(0.01 / math.log(2)) and runs["n_runs"] == 2
    assert runs["slope_se"] == pytest.approx(0.01 / math.log(2))  # std of (0.02/ln2, 0) / √2
    # per-run s.e. 0.01 / (√3 ln 2) and 0: root mean square 0.01 / (√6 ln 2)
    assert runs["within_run_se"] == pytest.approx(0.01 / (math.sqrt(6) * math.log(2)), rel=1e-12)
    assert format_flatness(fit, "rmse").startswith("flatness: d rmse / d ln L = +0.0289 ± 0.0083")
    with pytest.raises(ValueError, match="at least 2 distinct sizes"):
        log_size_slope([24, 24], [0.1, 0.2])


def test_weighted_log_size_slope_is_the_known_error_fit():
    # se = (0.01, 0.02, 0.01): w = (1, 1/4, 1) / 1e-4; x = ln 24 + (0, ln 2, 2 ln 2), weighted mean of x at
    # ln 24 + ln 2, S_xx = 2 ln²2 / 1e-4; the middle point's weight does not enter the slope
    fit = log_size_slope([24, 48, 96], [0.20, 0.27, 0.24], se=[0.01, 0.02, 0.01])
    assert fit["slope"] == pytest.approx(0.02 / math.log(2), rel=1e-12)
    assert fit["slope_se"] == pytest.approx(0.01 / (math.sqrt(2) * math.log(2)), rel=1e-9)
    # diagnose's trend is this fit
    assert trend([24, 48, 96], [0.20, 0.27, 0.24], [0.01, 0.02, 0.01])["slope"] == pytest.approx(fit["slope"], rel=1e-12)
    with pytest.raises(ValueError, match="se must hold one standard error per size"):
        log_size_slope([24, 48, 96], [0.2, 0.2, 0.2], se=[0.01, 0.01])


def test_per_size_counts_keep_the_sites_bounded():
    config = SizeCurveConfig()
    base = FDLFEvalConfig()
    counts = {L: (e.n_samples, e.response_samples, e.n_probes) for L in (24, 64, 128, 1024)
              for e in [config.fdlf(base, L)]}
    # the run's 4 samples x 4 probes up to L = 64 (its own evaluation's), 16 probes on one sample, 8 at 1024
    assert counts == {24: (114, 4, 4), 64: (16, 4, 4), 128: (4, 1, 16), 1024: (1, 1, 8)}
    assert per_size(4096, 32, 2, 1, 4) == 4 and per_size(4096, 256, 2, 1, 4) == 1


def test_cli_writes_table_figure_and_flatness_line(tmp_path, capsys):
    run = fake_run(tmp_path)
    out = tmp_path / "curve"
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--sizes", "16", "24", "32",
                     "--sites", "1024", "--response-sites", "256", "--pairs", "2", "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    with open(out / "size_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["L"]) for r in rows] == [16, 24, 32]
    assert [int(r["n_samples"]) for r in rows] == [4, 2, 1] and [int(r["n_sites"]) for r in rows] == [1024, 1152, 1024]
    for r in rows:
        assert float(r["cpu_s"]) > 0 and float(r["peak_rss_MiB"]) > 50
        assert 0 < float(r["rmse_sigma0.05"]) and 0 <= float(r["near_response_error"])
    d = json.loads((out / "size_curve.json").read_text())
    assert d["complete"] is True
    fit = log_size_slope([16, 24, 32], [float(r["rmse_sigma0.05"]) for r in rows])
    assert d["flatness"]["slope"] == pytest.approx(fit["slope"], rel=1e-9)
    assert d["flatness_line"] in printed and "least squares over 3 sizes" in printed
    assert (out / "size_curve.png").read_bytes()[:4] == b"\x89PNG"
    # the sizes' metrics are evaluate_fdlf's with the per-size counts
    from sizetransfer.diagnose import load_student
    from sizetransfer.evaluation.score import model_score

    student = load_student(run / "checkpoints" / "last.ckpt")
    econf = SizeCurveConfig(sites=1024, response_sites=256, pairs=2).fdlf(FDLFEvalConfig(n_samples=4), 24)
    assert (econf.n_samples, econf.response_samples, econf.n_probes) == (2, 1, 2)
    want = evaluate_fdlf(model_score(student), TeacherData(make_teacher("simple_local"), 24), econf,
                         receptive_radius=4, sigma_min=0.01, sizes=[24])["rows"][0]
    for key in ("rmse_sigma0.01", "near_response_error", "far_response_error"):
        assert float(rows[1][key]) == pytest.approx(want[key], rel=1e-9), key


@pytest.mark.parametrize("options, message", [
    (["--sizes", "8", "24"], "--sizes: L = 8 must be > 2R = 8"),
    (["--sizes", "24", "2048"], "--sizes: L = 2048 is above 1024"),
    (["--sizes", "26", "27"], "--sizes: L = 27: L must be an even integer"),
    (["--sizes", "12"], "--sizes: L = 12: far = (5, 8) must satisfy far[1] <= L // 2"),
    (["--sites", "0"], "--sites must be an integer >= 1"),
    (["--pair-sites", "0"], "--pair-sites must be an integer >= 1"),
    (["--ckpt", "missing.ckpt"], "--ckpt: no checkpoint file at missing.ckpt"),
])
def test_bad_input_is_one_line_before_any_output(tmp_path, capsys, options, message):
    run = fake_run(tmp_path)
    out = tmp_path / "curve"
    args = ["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "--no-progress", *options]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_ising_sizes_above_256_are_refused(tmp_path, capsys):
    run = fake_run(tmp_path)
    cfg = (run / "config.yaml").read_text().replace("sizetransfer.data.FDLFDataModule",
                                                    "sizetransfer.data.IsingDataModule")
    cfg = cfg.replace("teacher: simple_local", "beta_over_beta_c: 0.95").replace("train_size: 24", "L: 16")
    (run / "config.yaml").write_text(cfg)
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--sizes", "32", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sizes: L = 512 is above 256" in err and "Ising" in err
    assert not (run / "size_curve").exists()


def test_ising_cli_runs_at_small_sizes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIZETRANSFER_CACHE", str(tmp_path / "cache"))  # exact responses: a fresh cache
    run = fake_run(tmp_path, radius=2)
    cfg = (run / "config.yaml").read_text().replace("sizetransfer.data.FDLFDataModule",
                                                    "sizetransfer.data.IsingDataModule")
    cfg = cfg.replace("teacher: simple_local", "beta_over_beta_c: 0.95").replace("train_size: 24", "L: 16")
    (run / "config.yaml").write_text(cfg)
    out = tmp_path / "curve"
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--sizes", "16", "32", "--out", str(out),
                     "--no-progress"]) == 0
    d = json.loads((out / "size_curve.json").read_text())
    assert [r["L"] for r in d["rows"]] == [16, 32] and d["headline"] == "score_rmse"
    # the per-size counts: exact observations 16384 / L² clipped to [4, 16], score observations 4096 / L² in [1, 4]
    assert [(r["exact_observations"], r["score_observations"]) for r in d["rows"]] == [(16, 4), (16, 4)]
    for r in d["rows"]:
        assert r["sigma"] == 4.0 and r["score_rmse"] > 0 and r["cpu_s"] > 0
        assert 0 <= r["near_response_error"] and r["far_response_error"] == pytest.approx(1.0)  # R = 2 < 5
    assert "flatness: d score_rmse / d ln L" in capsys.readouterr().out


def test_combine_gives_the_slope_over_runs(tmp_path, capsys):
    paths = []
    for k, values in enumerate(([0.20, 0.23, 0.24], [0.30, 0.30, 0.30])):
        d = {"headline": "rmse_sigma0.05", "target_name": "FDLF simple_local",
             "rows": [{"L": L, "rmse_sigma0.05": v} for L, v in zip((24, 48, 96), values)]}
        paths.append(tmp_path / f"run{k}.json")
        paths[-1].write_text(json.dumps(d))
    assert cli_main(["--combine", *map(str, paths)]) == 0
    line = capsys.readouterr().out.strip()
    se = 0.01 / math.log(2)  # per-run slopes 0.02 / ln 2 and 0: mean 0.01 / ln 2, s.e. the same
    assert line.startswith(f"flatness: d rmse_sigma0.05 / d ln L = {se:+.4f} ± {se:.4f} (mean over 2 runs")
    assert cli_main(["--combine", str(paths[0]), str(tmp_path / "missing.json")]) == 2
    assert "--combine:" in capsys.readouterr().err


def test_partial_results_after_each_size():
    from sizetransfer.size_curve import size_curve

    teacher = make_teacher("simple_local")
    seen = []
    res = size_curve(perturbed_exact_score(teacher), TeacherData(teacher, 16), kind="fdlf", sizes=[24, 16],
                     receptive_radius=1, evaluation=FDLFEvalConfig(n_probes=1, response_samples=1),
                     config=SizeCurveConfig(sites=512, pairs=1), on_size=lambda r: seen.append(r))
    assert [[row["L"] for row in r["rows"]] for r in seen] == [[16]] and seen[0]["complete"] is False
    assert [row["L"] for row in res["rows"]] == [16, 24] and res["complete"] is True
    assert res["rows"][0] == seen[0]["rows"][0]
