"""sizetransfer.diagnose: the verdict on known cases, its numbers against the project's metrics, bad input."""
import json
import math

import numpy as np
import pytest
import torch

import sizetransfer.diagnose
from helpers import fake_run as _fake_run
from helpers import wandb_summary
from sizetransfer.diagnose import DiagnoseConfig
from sizetransfer.diagnose.__main__ import main as cli_main, parser
from sizetransfer.diagnose.measure import trend
from sizetransfer.diagnose.target import TeacherData
from sizetransfer.evaluation.fdlf import FDLFEvalConfig, evaluate_fdlf
from sizetransfer.evaluation.metrics import clean_score_rmse
from sizetransfer.evaluation.score import model_score
from sizetransfer.lattice import response_range
from sizetransfer.models import LocalScoreCNN
from sizetransfer.teachers import make_teacher

#: A small, fast measurement (the defaults of DiagnoseConfig otherwise).
SMALL = DiagnoseConfig(n_samples=4, response_samples=2, n_probes=2, max_size=48)


def exact_score_model(key):
    """The teacher's exact clean score as a model ``(x, sigma) -> score``, differentiable in x."""
    teacher = make_teacher(key)

    def score(x, sigma):
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        with torch.enable_grad():
            (s,) = torch.autograd.grad(teacher.log_prob(x).sum(), x, create_graph=True)
        return s

    return score


class Pooling(torch.nn.Module):
    """A non-local model: the Gaussian score plus the lattice mean (every site responds to every site)."""

    def forward(self, x, sigma):
        return -x / (1 + sigma ** 2) + 0.5 * x.mean(dim=(2, 3), keepdim=True)


def test_exact_score_extrapolates_with_zero_error(tmp_path):
    d = sizetransfer.diagnose(exact_score_model("simple_local"), "simple_local", train_size=24, config=SMALL,
                              out=tmp_path)
    assert d["verdict"] == "extrapolates", d["headline"]
    assert d["headline"].startswith("extrapolates")
    assert d["sizes"] == [24, 32, 48]
    for row in d["rows"]:
        assert row["rmse"] == 0 and row["near_response_error"] < 1e-9 and row["far_response_error"] < 1e-9
    # the model declares no radius: its range is what is measured, and it equals the target's profile
    assert d["model"]["declared_radius"] is None and d["model"]["range"] == d["model"]["support"]
    assert d["model"]["response_range"] == d["rows"][-1]["response_range_teacher"]
    saved = json.loads((tmp_path / "diagnosis.json").read_text())
    assert saved["verdict"] == "extrapolates" and saved["reasons"] == d["reasons"]
    assert (tmp_path / "diagnosis.png").stat().st_size > 0
    assert d["headline"] in (tmp_path / "diagnosis.md").read_text()
    # with the exact score as its own oracle: floor 0, nothing left to split
    d = sizetransfer.diagnose(exact_score_model("simple_local"), "simple_local", train_size=24, sizes=[24, 32],
                              config=SMALL, oracle=exact_score_model("simple_local"))
    assert d["verdict"] == "extrapolates" and d["oracle_floor"] == 0 == d["training_part"]
    assert "against a range floor of 0" in d["headline"]


def test_radius_one_student_on_complex_long_is_range():
    torch.manual_seed(0)
    student = LocalScoreCNN(blocks=1, width=8, radius=1)
    d = sizetransfer.diagnose(student, "complex_long", train_size=24, sizes=[24, 48], config=SMALL)
    assert d["verdict"] == "range", d["headline"]
    assert d["model"]["range"] == 1 and d["model"]["support"] <= 1
    assert d["target"]["response_range"] > 1
    assert f"R_0.05 = {d['target']['response_range']} exceeds the model's 1" in d["headline"]


def test_undertrained_student_on_simple_local_is_training():
    torch.manual_seed(0)
    student = LocalScoreCNN(blocks=1, width=8)  # R = 4, never trained: the Gaussian score −x/(σ² + 1)
    d = sizetransfer.diagnose(student, "simple_local", train_size=24, sizes=[24, 32], config=SMALL)
    assert d["verdict"] == "training", d["headline"]
    assert d["target"]["response_range"] <= 4 == d["model"]["range"]
    assert d["rows"][0]["rmse"] > SMALL.rmse_max and d["oracle_floor"] is None
    assert any("unavailable" in r for r in d["reasons"])
    # with the exact score as the oracle the floor is 0 and all of the error is training
    d = sizetransfer.diagnose(student, "simple_local", train_size=24, sizes=[24, 32], config=SMALL,
                              oracle=exact_score_model("simple_local"))
    assert d["verdict"] == "training" and d["oracle_floor"] == 0
    assert d["training_part"] == pytest.approx(d["rows"][0]["rmse"])


def test_pooling_model_has_the_lattice_as_its_range():
    d = sizetransfer.diagnose(Pooling(), "medium_range", train_size=24, sizes=[24, 48], config=SMALL)
    assert d["model"]["declared_radius"] is None
    assert d["model"]["support"] == 48 // 2 == d["model"]["range"]
    assert d["verdict"] != "range"  # it sees the whole lattice


def test_numbers_agree_with_the_metric_functions():
    torch.manual_seed(1)
    student = LocalScoreCNN(blocks=1, width=8)
    d = sizetransfer.diagnose(student, "medium_range", train_size=24, sizes=[24, 32], config=SMALL)
    data = TeacherData(make_teacher("medium_range"), 24)
    econf = FDLFEvalConfig(n_samples=4, response_samples=2, n_probes=2, seed=SMALL.seed)
    ref = evaluate_fdlf(model_score(student), data, econf, receptive_radius=4, sizes=[24, 32])
    for got, want, prof in zip(d["rows"], ref["rows"], ref["profiles"]):
        for k in ("rmse_sigma0.05", "near_response_error", "far_response_error", "response_range_student",
                  "response_range_teacher"):
            assert got[k] == want[k], k
        assert got["rmse"] == want["rmse_sigma0.05"]
        assert got["response_range_teacher"] == int(response_range(torch.tensor(prof["teacher"]), 0.05))
    # per-sample RMSEs: Eq. 16 on one sample at a time, on the run's evaluation samples
    x = data.eval_batch(32, 4, seed=SMALL.seed)["x0"]
    with torch.no_grad():
        learned = model_score(student)(x, 0.05)
    want = [float(clean_score_rmse(learned[b:b + 1], data.teacher.score(x[b:b + 1]))) for b in range(4)]
    np.testing.assert_allclose(d["per_sample_rmse"][1], want, rtol=1e-12)
    assert d["rows"][1]["rmse_se"] == pytest.approx(np.std(want, ddof=1) / 2, rel=1e-12)


def test_teacher_data_draws_the_datamodules_evaluation_samples():
    from sizetransfer.data import FDLFDataModule

    dm = FDLFDataModule(teacher="complex_long", train_size=24, teacher_seed=0)
    ours = TeacherData(make_teacher("complex_long"), 24)
    torch.testing.assert_close(ours.eval_batch(32, 3, seed=5)["x0"], dm.eval_batch(32, 3, seed=5)["x0"],
                               rtol=0, atol=0)


def test_trend_recovers_a_known_slope():
    sizes = [24, 48, 96]
    rmse = [0.5 + 0.1 * math.log(L) for L in sizes]
    fit = trend(sizes, rmse, [0.01] * 3)
    assert fit["slope"] == pytest.approx(0.1, rel=1e-9)
    # equal weights: SE = s.e. / sqrt(Σ (ln L − mean)²)
    x = np.log(sizes)
    assert fit["slope_se"] == pytest.approx(0.01 / np.sqrt(((x - x.mean()) ** 2).sum()), rel=1e-9)
    assert fit["relative_change"] == pytest.approx(0.1 * math.log(4) / rmse[0], rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(score_fn=lambda x, s: x[:, :, :4], target="simple_local", train_size=24),
     "score_fn must return the shape of x"),
    (dict(score_fn=lambda x, s: x.detach(), target="simple_local", train_size=24), "differentiable"),
    (dict(score_fn=lambda x, s: -x, target="complex_long", train_size=12),
     "train_size = 12: L must be an even integer >= 18"),
    (dict(score_fn=lambda x, s: -x, target="simple_local", train_size=24, sizes=[12, 24]), "far"),
    (dict(score_fn=lambda x, s: -x, target="simple_longg", train_size=24), "target must be one of"),
    (dict(score_fn=lambda x, s: -x, target="simple_local"), "train_size"),
])
def test_bad_input_is_one_line_before_any_output(tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as err:
        sizetransfer.diagnose(config=SMALL, out=out, **kwargs)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_cli_writes_the_diagnosis_into_the_run_directory_and_its_wandb_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = _fake_run(tmp_path)
    (run / "wandb_id").write_text("diagtest1")
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--quick", "--max-size", "32",
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    d = json.loads((run / "diagnosis.json").read_text())
    assert d["verdict"] == "training" and d["sizes"] == [24, 32] and d["train_size"] == 24
    assert "step 0, receptive radius 4" in d["model"]["name"]
    assert printed.splitlines()[0] == d["headline"]
    assert (run / "diagnosis.md").is_file() and (run / "diagnosis.png").is_file()
    summary = wandb_summary(run)
    values = summary.get("summary", summary)
    assert values["diagnose/verdict"] == "training" and values["diagnose/headline"] == d["headline"]
    assert values["diagnose/size_curve"]["nrows"] == 2 and values["diagnose/figure"]["format"] == "png"


@pytest.mark.parametrize("content", [b"not a checkpoint", "torch"])
def test_cli_refuses_a_checkpoint_that_is_not_ours(tmp_path, capsys, content):
    path = tmp_path / "foreign.ckpt"
    if content == "torch":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    assert cli_main(["--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ckpt:") and "not a checkpoint of this project" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_size_below_what_the_target_allows(tmp_path, capsys):
    run = _fake_run(tmp_path, teacher="complex_long")
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--train-size", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "L must be an even integer >= 18" in err and "\n" not in err
    assert not (run / "diagnosis.json").exists()


@pytest.fixture
def ising_data(tmp_path, monkeypatch):
    from sizetransfer.data import IsingDataModule

    monkeypatch.setenv("SIZETRANSFER_CACHE", str(tmp_path / "cache"))  # exact responses: a fresh cache
    return IsingDataModule(beta_over_beta_c=0.95, L=16)


def test_ising_radius_one_student_is_range_and_numbers_agree(ising_data):
    from sizetransfer.evaluation.ising_eval import (exact_response_cached, learned_response_profile,
                                                    noisy_observations, score_rmse_against_mcmc)
    from sizetransfer.evaluation.score import bind_score
    from sizetransfer.seeding import batch_seed

    torch.manual_seed(0)
    student = LocalScoreCNN(blocks=1, width=8, radius=1)
    config = DiagnoseConfig(n_samples=4)
    d = sizetransfer.diagnose(student, ising_data, sizes=[16, 32], config=config)
    assert d["verdict"] == "range", d["headline"]
    assert d["target"]["kind"] == "ising" and d["target"]["response_range"] > 1 == d["model"]["range"]
    assert any("no exact score" in r for r in d["reasons"])
    # the numbers are those of the project's Ising functions on the same spins and observations
    L, beta = 32, ising_data.beta
    spins = ising_data.eval_batch(L, 4, seed=config.seed)["x0"]
    gen = torch.Generator().manual_seed(batch_seed(config.seed, L))
    y = noisy_observations(spins, 4.0, generator=gen)
    bound = bind_score(model_score(student), 4.0, None)
    learned, _ = learned_response_profile(bound, y, 8, generator=gen)
    exact, err = exact_response_cached(L, beta, 4.0, 8, n_observations=16, seed=config.seed)
    prof = d["profiles"][1]
    np.testing.assert_allclose(prof["exact"], exact, rtol=0, atol=0)
    np.testing.assert_allclose(prof["exact_stderr"], err, rtol=0, atol=0)
    np.testing.assert_allclose(prof["learned"], learned, rtol=1e-12, atol=1e-15)
    want = score_rmse_against_mcmc(bound, spins, y, beta, 4.0)["rmse"]
    assert d["rows"][1]["rmse"] == pytest.approx(want, rel=1e-12)


def test_ising_refuses_an_oracle_and_a_far_shell_beyond_the_profile(ising_data):
    with pytest.raises(ValueError, match="no exact clean score"):
        sizetransfer.diagnose(lambda x, s: -x, ising_data, sizes=[16], config=SMALL, oracle=lambda x, s: -x)
    with pytest.raises(ValueError, match=r"far\[1\] <= L // 2 = 4 at the training size L = 8"):
        sizetransfer.diagnose(lambda x, s: -x, ising_data, train_size=8, sizes=[8], config=SMALL)


def test_cli_checks_sizes_before_training_an_oracle(tmp_path, capsys):
    run = _fake_run(tmp_path)
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--train-oracle", "5", "--sizes", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: size L = 12") and "far" in err and "\n" not in err
    assert not (run / "oracle").exists() and not (run / "diagnosis.json").exists()
    assert parser().parse_args(["--ckpt", "x"]).oracle_lr == 1e-3  # the shipped oracle's rate
    for bad in ("0", "-1e-3", "nan"):
        assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--train-oracle", "5", f"--oracle-lr={bad}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--oracle-lr must be a finite number > 0" in err and "\n" not in err
    assert not (run / "oracle").exists()


def test_cli_oracle_checkpoint_gives_the_range_floor(tmp_path, capsys):
    run = _fake_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    dsm = _fake_run(tmp_path, name="dsm")
    assert cli_main(["--ckpt", ckpt, "--oracle-ckpt", str(dsm / "checkpoints" / "last.ckpt")]) == 2
    assert "model.objective='dsm'" in capsys.readouterr().err
    wide = _fake_run(tmp_path, name="wide", width=16, objective="exact_score")
    assert cli_main(["--ckpt", ckpt, "--oracle-ckpt", str(wide / "checkpoints" / "last.ckpt")]) == 2
    assert "model.width=16" in capsys.readouterr().err
    oracle = _fake_run(tmp_path, name="oracle", objective="exact_score")
    assert cli_main(["--ckpt", ckpt, "--oracle-ckpt", str(oracle / "checkpoints" / "last.ckpt"), "--quick",
                     "--max-size", "32", "--no-progress", "--no-wandb"]) == 0
    d = json.loads((run / "diagnosis.json").read_text())
    # the same untrained weights (seed 0): the floor is the model's own error, none of it is training, but
    # the floor is no range floor (the oracle is untrained) and the error is large
    assert d["oracle_floor"] == pytest.approx(d["rows"][0]["rmse"]) and d["training_part"] == pytest.approx(0)
    assert d["verdict"] == "training" and "the oracle itself is not trained enough" in d["headline"]


@pytest.mark.slow
def test_cli_trains_the_oracle_control(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = _fake_run(tmp_path)
    assert cli_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--train-oracle", "3", "--oracle-lr", "2e-3", "--quick",
                     "--max-size", "32", "--no-progress", "--no-wandb"]) == 0
    oracle = run / "oracle"
    saved = torch.load(oracle / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["objective"] == "exact_score" and saved["global_step"] == 3
    assert saved["hyper_parameters"]["width"] == 8  # the model's own student options
    assert saved["hyper_parameters"]["lr"] == pytest.approx(2e-3)  # --oracle-lr, not the run's 1e-3
    d = json.loads((run / "diagnosis.json").read_text())
    assert d["oracle_floor"] is not None and d["training_part"] is not None
