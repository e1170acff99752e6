"""``python -m sizetransfer.fit``: config lookup, overrides, bad input, run directories, W&B offline run
read back with wandb's own reader, resume, and 2-process DDP (tiny models, FDLF teachers, CPU)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from helpers import wandb_summary
from sizetransfer.fit import OptionError, cli_main, find_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.usefixtures("isolated")  # runs/ and any stray output land in tmp_path


@pytest.fixture
def tiny(tiny_run):
    """The tiny FDLF run: simple_local at L = 12 (R = 4 < 6), a cheap evaluation at L = 12 and 16."""
    return tiny_run.args("fdlf_size_sweep.yaml", {"generation.sizes": None})


def test_every_shipped_config_parses_from_another_directory(tmp_path, capsys):
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"ising_critical.yaml", "fdlf_size_sweep.yaml", "fdlf_radius_sweep.yaml", "fdlf_generation.yaml"} <= set(names)
    for name in names:
        assert Path(find_config(name)).resolve() == (CONFIGS / name).resolve()  # cwd is tmp_path: package copy
        with pytest.raises(SystemExit) as exit_:
            cli_main(["--config", name, "--print_config", "--trainer.max_steps", "50"])
        assert exit_.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["trainer"]["max_steps"] == 50
        assert printed["model"]["sigma_min"] < printed["model"]["sigma_max"]
    assert not any(tmp_path.iterdir())  # --print_config writes nothing


def test_ising_config_matches_the_experiment(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--config", "ising_critical", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["blocks"] == 2 and (cfg["model"]["sigma_min"], cfg["model"]["sigma_max"]) == (0.05, 10.0)
    assert cfg["data"]["init_args"]["L"] == 32 and cfg["data"]["init_args"]["beta_over_beta_c"] == 0.95
    assert cfg["data"]["init_args"]["eval_sizes"] == [32, 64]
    assert cfg["evaluation"]["probe_sigmas"] == [1.0, 2.0, 4.0, 8.0]
    # the student: 3 x 3 convs and a linear skip of radius 6, R = 6 = the probed boundary r (Fig. 4)
    from sizetransfer.module import ScoreModule

    student = ScoreModule(**cfg["model"]).student
    assert student.receptive_radius == 6 and student.net.radius == 6 and student.net.skip_radius == 6
    assert student.net.conv_in.kernel_size == (3, 3) and student.net.skip.conv.kernel_size == (13, 13)
    assert cfg["model"]["antithetic"] and cfg["model"]["lr"] == 3e-3 and cfg["model"]["emb_width"] == 128


@pytest.mark.parametrize("args, message", [
    (["--model.widht", "8"], "widht"),
    (["--model.blocks", "2"], "data.train_size"),  # R = 6 >= 12 / 2
    (["--model.sigma_min", "0"], "sigma_min"),
    (["--model.sigma_min", "2.0"], "sigma_min"),  # >= sigma_max = 1
    (["--data.eval_sizes", "[12, 13]"], "eval_sizes"),  # simple_local needs even L
    (["--trainer.devices", "0"], "trainer.devices must be a positive number"),
    (["--model.widht", "8"], "did you mean --model.width?"),
    (["--trainer.max_stesp", "8"], "did you mean --trainer.max_steps?"),
    (["--ckpt_path", "no_such.ckpt"], "ckpt_path: no checkpoint file"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, capsys, args, message, tiny):
    with pytest.raises((ValueError, SystemExit)) as err:
        cli_main(tiny + ["--trainer.max_steps", "4"] + args)
    assert message in str(err.value) + capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "stray_wandb").exists()


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    cfg = yaml.safe_load((CONFIGS / "fdlf_size_sweep.yaml").read_text())
    cfg["model"]["widht"] = 8
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(OptionError, match="widht"):
        cli_main(["--config", str(tmp_path / "bad.yaml")])
    assert not (tmp_path / "runs").exists()


def _user_env(**changes) -> dict:
    """The environment of a user's shell: without the test suite's W&B silencing (conftest)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_DISABLE_GIT")}
    return {**env, "OMP_NUM_THREADS": "1", **changes}


@pytest.mark.slow  # subprocesses of the console command
def test_bad_options_end_with_one_line_from_the_command_line(tmp_path):
    """The console command: a misspelled option, a device count of 0, a corrupted checkpoint and a
    file that is no checkpoint of this project each give one short error line (exit status 2) before
    anything is written — no usage dump, no traceback, no advice to unpickle with weights_only=False."""
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 4)
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 0}, tmp_path / "foreign.ckpt")
    for args, message in [(["--model.widht", "8"], "did you mean --model.width?"),
                          (["--trainer.devices", "0"], "trainer.devices"),
                          (["--ckpt_path", "garbage.ckpt"], "is not a checkpoint of this project"),
                          (["--ckpt_path", "foreign.ckpt"], "is not a checkpoint of this project")]:
        proc = subprocess.run([sys.executable, "-m", "sizetransfer.fit", "--config", "fdlf_size_sweep.yaml", *args],
                              cwd=tmp_path, env=_user_env(), capture_output=True, text=True, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Seed set")]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])
        assert "weights_only" not in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.ckpt", "garbage.ckpt"]  # nothing written


def test_checkpoint_of_another_architecture_is_named(tmp_path, tiny):
    cli = cli_main(tiny + ["--trainer.max_steps", "2", "--run.name", "a"])
    last = cli.run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(OptionError, match="model.width=8.*model.width=16"):
        cli_main(tiny + ["--trainer.max_steps", "4", "--model.width", "16", "--ckpt_path", str(last)])


@pytest.mark.slow  # subprocesses of the console command
def test_short_runs_work_from_the_command_line(tmp_path, tiny):
    """A run shorter than the configured warm-up (README's short runs) trains with a shortened warm-up
    and a one-line notice, ends with the plain-words summary (also summary.md), and the console carries
    none of the libraries' noise (litlogger tip, W&B anonymous/git-root warnings, Lightning deprecation)."""
    cmd = [sys.executable, "-m", "sizetransfer.fit", *tiny, "--trainer.max_steps", "3", "--model.warmup_steps", "50"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_user_env(WANDB_MODE="offline"), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "model.warmup_steps=50 is not below trainer.max_steps=3; warming up over 0 steps" in out
    for noise in ("litlogger", "anonymous", "git root", "LeafSpec", "Run history"):
        assert noise not in out, noise
    (run_dir,) = (tmp_path / "runs" / "fdlf_size_sweep").iterdir()
    summary = (run_dir / "summary.md").read_text()
    assert summary.strip() in proc.stdout  # printed at the end, and kept in the run directory
    assert "Trained: a local score model" in summary and "simple_local" in summary and "3 training steps" in summary
    assert "score RMSE" in summary and "L = 12" in summary and "Reading:" in summary
    metrics = json.loads((run_dir / "eval" / "step=3" / "metrics.json").read_text())
    assert f"{metrics['rows'][0]['rmse_sigma0.05']:.4f}" in summary  # the key number, as measured


def test_fast_dev_run(tmp_path, capsys, tiny):
    """Lightning's own smoke test: one step (warm-up shortened), one evaluation at the training size."""
    cli = cli_main(tiny + ["--trainer.fast_dev_run", "true"])
    assert cli.trainer.global_step == 1
    assert "smoke test (fast_dev_run)" in capsys.readouterr().out


def test_print_config_shows_the_effective_wandb_mode(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        cli_main(["--config", "fdlf_size_sweep.yaml", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]["offline"] is True
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(SystemExit):
        cli_main(["--config", "fdlf_size_sweep.yaml", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]["offline"] is False


def test_fit_wandb_offline_and_resume(tmp_path, capsys, tiny):
    """A short fit: own run dir (config, checkpoints, eval, W&B offline run) and the eval metrics and config
    in the W&B run; then a resumed fit from its last checkpoint continues in the same run dir and W&B run."""
    cli = cli_main(tiny + ["--trainer.max_steps", "4", "--run.name", "first", "--checkpoint.every_n_train_steps", "3"])
    printed = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs" / "first").iterdir()
    for path in ["config.yaml", "checkpoints/last.ckpt", "eval/step=4/metrics.csv", "eval/step=4/response_profiles.png"]:
        assert (run_dir / path).is_file(), path
        assert str(run_dir / path.split("/")[0]) in printed  # the closing summary says where results are
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "stray_wandb").exists()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["width"] == 8 and saved["run"]["name"] == "first"
    assert saved["checkpoint"]["dirpath"] is None and saved["trainer"]["default_root_dir"] is None  # re-runnable

    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished"
    for L in (12, 16):
        assert summary["summary"][f"eval/rmse_sigma0.05/L={L}"] > 0
    assert "val/loss" in summary["summary"] and "train/loss" in summary["summary"]
    assert summary["config"]["width"] == 8 and summary["config"]["trainer"]["max_steps"] == 4
    assert summary["config"]["evaluation"]["n_samples"] == 2

    last = run_dir / "checkpoints" / "last.ckpt"
    # periodic checkpoints every 3 steps missed step 4: last.ckpt still holds the final weights
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    run_id = (run_dir / "wandb_id").read_text().strip()
    resumed = cli_main(tiny + ["--trainer.max_steps", "6", "--run.name", "first", "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 6 and resumed.run_dir.resolve() == cli.run_dir.resolve()
    assert [p.name for p in (tmp_path / "runs" / "first").iterdir()] == [run_dir.name]  # no new run dir
    assert (run_dir / "eval" / "step=6" / "metrics.csv").is_file() and (run_dir / "wandb_id").read_text().strip() == run_id
    assert len(list(run_dir.glob("config.resumed-*.yaml"))) == 1  # the first config is kept
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and {p.name.rsplit("-", 1)[1] for p in segments} == {run_id}  # one W&B run
    latest = json.loads(subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--summary",
                                        "--json", str(run_dir / "wandb")], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)  # the README's command: the run's wandb/ dir
    assert latest["summary"]["trainer/global_step"] == 6
    assert "(resumed from step 4" in (run_dir / "summary.md").read_text()


class RankProbe(pl.Callback):
    """Test probe for the DDP run: per rank, hashes of the training batches and the final weights."""

    def __init__(self, out_dir: str):
        self.out_dir, self.hashes = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.hashes.append(hashlib.sha1(batch["x0"].numpy().tobytes()).hexdigest())

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        torch.save(pl_module.state_dict(), self.out_dir / f"weights_rank{rank}.pt")
        (self.out_dir / f"batches_rank{rank}.json").write_text(json.dumps(self.hashes))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny):
    """``strategy: ddp`` with 2 CPU processes (gloo), launched as a user would: Lightning re-runs the
    command for rank 1. Ranks draw different batches and end with identical weights."""
    cfg = {"trainer": {"callbacks": [{"class_path": "test_fit.RankProbe", "init_args": {"out_dir": str(tmp_path)}}]}}
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sizetransfer.fit", *tiny, "--config", str(tmp_path / "probe.yaml"),
           "--trainer.max_steps", "4", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.logger", "false", "--run.name", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b0, b1 = (json.loads((tmp_path / f"batches_rank{r}.json").read_text()) for r in (0, 1))
    assert len(b0) == len(b1) == 4 and not set(b0) & set(b1)
    w0, w1 = (torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    (run_dir,) = (tmp_path / "runs" / "ddp").iterdir()  # one run dir shared by both ranks
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    assert "# Run summary" in proc.stdout and "Files of this run" in proc.stdout


def test_model_that_does_not_fit_the_2d_data_is_named(tmp_path, capsys, tiny):
    with pytest.raises(ValueError, match="model.dim=3 .*model.dim: 2"):
        cli_main(tiny + ["--trainer.max_steps", "4", "--model.dim", "3"])
    with pytest.raises(ValueError, match="model.in_channels=2"):
        cli_main(tiny + ["--trainer.max_steps", "4", "--model.in_channels", "2"])
    assert not (tmp_path / "runs").exists()


def test_ising_summary_states_the_boundary_response_ratio(tmp_path):
    """The closing summary of an Ising run names the learned / exact boundary response at r = R per σ and
    reads it: captured, too weak, or not resolved (exact response zero within 2 standard errors)."""
    from types import SimpleNamespace

    import ising
    from sizetransfer.run_summary import run_summary

    rows = []
    for L in (32, 64):
        for sigma, exact, err, learned in ((1.0, 1e-5, 2e-5, 3e-5), (4.0, 3.0e-3, 1e-4, 0.33e-3), (8.0, 1e-3, 1e-4, 0.9e-3)):
            rows.append({"L": L, "sigma": sigma, "response_exact_r6": exact, "response_exact_stderr_r6": err,
                         "response_learned_r6": learned, "response_ratio_r6": learned / exact})
    (tmp_path / "metrics.json").write_text(json.dumps({"target": "ising", "rows": rows, "step": 1500,
                                                       "receptive_radius": 6}))
    model = SimpleNamespace(hparams={"blocks": 2, "width": 64, "sigma_min": 0.05, "sigma_max": 10.0}, receptive_radius=6)
    data = SimpleNamespace(beta=0.95 * ising.BETA_C, train_size=32)
    text = run_summary(model, data, steps=1500, wall_s=115.0, eval_dir=tmp_path)
    assert "β = 0.95 β_c on a periodic 32×32 lattice" in text and "1500 training steps; 1 min 55 s for training and the final evaluation" in text
    assert "boundary response ρ(6)" in text and "| 4 | 32 |" in text.replace("  ", " ")
    assert "reproduces it at σ = 8 (0.90)" in text and "too weakly at σ = 4 (0.11)" in text
    assert "at σ = 1 the exact response is zero within 2 standard errors" in text
    assert "On the larger lattice L = 64: σ = 4: 0.11, σ = 8: 0.90." in text


@pytest.mark.parametrize("share, reads", [
    (1e-4, "hold 0.01% of its response at L = 96 (< 1%), so the far-response error (1.00) measures nothing"),
    (0.27, "it misses the teacher's response (distances 5–8), which lies beyond its receptive radius R = 4"),
])
def test_fdlf_summary_reads_the_far_error_only_where_the_teacher_has_a_far_response(tmp_path, share, reads):
    """A far-response error of 1 means 'misses the teacher's far response' only where the teacher has one:
    for a short-range teacher (far share < 1%) the summary says the error measures nothing."""
    from types import SimpleNamespace

    from sizetransfer.run_summary import run_summary

    rows = [{"L": L, "rmse_sigma0.05": 0.19, "near_response_error": 0.3, "far_response_error": 1.0,
             "teacher_far_share": share} for L in (24, 96)]
    (tmp_path / "metrics.json").write_text(json.dumps({"target": "fdlf", "rows": rows, "rmse_keys": ["rmse_sigma0.05"],
                                                       "step": 10, "receptive_radius": 4, "config": {"far": [5, 8]}}))
    model = SimpleNamespace(hparams={"blocks": 1, "width": 32, "sigma_min": 0.01, "sigma_max": 1.0}, receptive_radius=4)
    data = SimpleNamespace(teacher=SimpleNamespace(key="simple_local"), train_size=24)
    text = " ".join(run_summary(model, data, steps=10, wall_s=5.0, eval_dir=tmp_path).split())
    assert reads in text
    assert ("misses the teacher's response" in text) == (share >= 0.01)


def test_bf16_mixed_trains_in_bfloat16_and_evaluates_in_float32(monkeypatch, tmp_path, tiny):
    """``--trainer.precision bf16-mixed`` (Lightning's CPU autocast): the training step's network runs in
    bfloat16; the end-of-fit evaluation (the only forward passes at the evaluation size L = 16) does not,
    so the metrics are float32 numbers of the EMA student, whatever the training precision."""
    from sizetransfer.models.local_cnn import LocalCNN

    calls, forward = [], LocalCNN.forward

    def recording(self, x, *args, **kwargs):
        out = forward(self, x, *args, **kwargs)
        calls.append((x.shape[-1], self.training, torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(LocalCNN, "forward", recording)
    cli_main(tiny + ["--trainer.max_steps", "2", "--trainer.precision", "bf16-mixed"])
    training = [c for c in calls if c[1]]  # the student in train mode; validation and evaluation use the EMA
    evaluation = [c for c in calls if c[0] == 16]
    assert training and all(c[0] == 12 and c[2] and c[3] == torch.bfloat16 for c in training)
    assert evaluation and not any(c[2] for c in evaluation) and all(c[3] == torch.float32 for c in evaluation)
    (run_dir,) = (tmp_path / "runs" / "fdlf_size_sweep").iterdir()
    assert (run_dir / "eval" / "step=2" / "metrics.csv").is_file()


def test_size_sweep_configs_run_the_fast_line(capsys):
    """Fig. 1 / Table 5 configs: the fast line (docs/training.md) — width 32 with a per-site MLP, λ(σ) = σ,
    a compiled bf16 step, 16000 steps — on a B = 1 student of receptive radius exactly 2B + 2 = 4."""
    from sizetransfer.module import ScoreModule

    printed = {}
    for name in ("fdlf_size_sweep.yaml", "fdlf_generation.yaml"):
        with pytest.raises(SystemExit):
            cli_main(["--config", name, "--print_config"])
        printed[name] = yaml.safe_load(capsys.readouterr().out)
    cfg = printed["fdlf_size_sweep.yaml"]
    m = cfg["model"]
    assert (m["blocks"], m["width"], m["mlp_ratio"], m["lambda_power"], m["compile"]) == (1, 32, 2, 1.0, True)
    assert (m["antithetic"], m["lr"], m["emb_width"]) == (True, 3e-3, 128)
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["max_steps"] == 16000
    assert ScoreModule(**m).receptive_radius == 4
    generation = printed["fdlf_generation.yaml"]
    assert generation["model"] == m and generation["trainer"] == cfg["trainer"]
    # the RMSE on the sites of 16 samples at L = 96 at every size (docs/metrics.md): 256 samples at L = 24
    assert cfg["evaluation"]["sites"] == generation["evaluation"]["sites"] == 16 * 96 ** 2


def test_ddp_stride_warning_is_silenced_only_for_size_one_dims():
    """DDP's "Grad strides do not match bucket view strides" is dropped for a (C_out, C_in, 1, 1) grad whose strides
    differ from its bucket view's only on the size-1 dims (the same memory: the compiled backward writes such
    grads); another layout (transposed first two dims, a 3×3 kernel) still warns."""
    import warnings

    from sizetransfer.fit import quiet_libraries

    head = ("Grad strides do not match bucket view strides. This may indicate grad was not created according to "
            "the gradient layout contract, or that the param's strides changed since DDP was constructed.  This is "
            "not an error, but may impair performance.\n")
    benign = head + ("grad.sizes() = [32, 64, 1, 1], strides() = [64, 1, 64, 64]\n"
                     "bucket_view.sizes() = [32, 64, 1, 1], strides() = [64, 1, 1, 1]")
    transposed = head + ("grad.sizes() = [32, 64, 1, 1], strides() = [1, 32, 64, 64]\n"
                         "bucket_view.sizes() = [32, 64, 1, 1], strides() = [64, 1, 1, 1]")
    kernel = head + ("grad.sizes() = [32, 32, 3, 3], strides() = [288, 1, 96, 32]\n"
                     "bucket_view.sizes() = [32, 32, 3, 3], strides() = [288, 9, 3, 1]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_libraries()
        for message in (benign, transposed, kernel):
            warnings.warn(message, UserWarning)
    assert [str(w.message) for w in caught] == [transposed, kernel]
