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

from helpers import TINY_FIT, wandb_summary
from sizetransfer.fit import cli_main, find_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: A tiny FDLF run: simple_local at L = 12 (R = 4 < 6), a cheap evaluation at L = 12 and 16.
TINY = ["--config", "fdlf_size_sweep.yaml", *TINY_FIT, "--generation.sizes", "null"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and any stray output land in tmp_path
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "stray_wandb"))


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


@pytest.mark.parametrize("args, message", [
    (["--model.widht", "8"], "widht"),
    (["--model.blocks", "2"], "data.train_size"),  # R = 6 >= 12 / 2
    (["--model.sigma_min", "0"], "sigma_min"),
    (["--model.sigma_min", "2.0"], "sigma_min"),  # >= sigma_max = 1
    (["--data.eval_sizes", "[12, 13]"], "eval_sizes"),  # simple_local needs even L
    (["--trainer.max_steps", "1", "--model.warmup_steps", "5"], "warmup_steps"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, capsys, args, message):
    with pytest.raises((ValueError, SystemExit)) as err:
        cli_main(TINY + ["--trainer.max_steps", "4"] + args)
    assert message in str(err.value) + capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "stray_wandb").exists()


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    cfg = yaml.safe_load((CONFIGS / "fdlf_size_sweep.yaml").read_text())
    cfg["model"]["widht"] = 8
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        cli_main(["--config", str(tmp_path / "bad.yaml")])
    assert "widht" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_fit_wandb_offline_and_resume(tmp_path, capsys):
    """A short fit: own run dir (config, checkpoints, eval, W&B offline run) and the eval metrics and config
    in the W&B run; then a resumed fit from its last checkpoint into a new run dir."""
    cli = cli_main(TINY + ["--trainer.max_steps", "4", "--run.name", "first"])
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
    resumed = cli_main(TINY + ["--trainer.max_steps", "6", "--run.name", "first", "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 6 and resumed.run_dir != cli.run_dir
    assert len(list((tmp_path / "runs" / "first").iterdir())) == 2


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
def test_ddp_two_cpu_processes(tmp_path):
    """``strategy: ddp`` with 2 CPU processes (gloo), launched as a user would: Lightning re-runs the
    command for rank 1. Ranks draw different batches and end with identical weights."""
    cfg = {"trainer": {"callbacks": [{"class_path": "test_fit.RankProbe", "init_args": {"out_dir": str(tmp_path)}}]}}
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sizetransfer.fit", *TINY, "--config", str(tmp_path / "probe.yaml"),
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
    assert "Results of this run" in proc.stdout


def test_model_that_does_not_fit_the_2d_data_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="model.dim=3 .*model.dim: 2"):
        cli_main(TINY + ["--trainer.max_steps", "4", "--model.dim", "3"])
    with pytest.raises(ValueError, match="model.in_channels=2"):
        cli_main(TINY + ["--trainer.max_steps", "4", "--model.in_channels", "2"])
    assert not (tmp_path / "runs").exists()
