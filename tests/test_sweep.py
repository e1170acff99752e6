"""``python -m sizetransfer.sweep``: sweep configs, run keys, option checks before any run, a tiny real
sweep (subprocess fits), skipping finished runs, resuming an interrupted one, aggregation, W&B grouping
read back from the offline runs, and the shipped W&B sweep definitions."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import wandb_run_record

from sizetransfer import sweep
from sizetransfer.sweep import SweepError, expand, load_spec, main

SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"


@pytest.fixture
def tiny_overrides(tiny_run):
    """The shared tiny run as a sweep's overrides: 2 steps, a checkpoint every step, no generation."""
    return tiny_run.options({"trainer.max_steps": 2, "checkpoint.every_n_train_steps": 1, "generation.sizes": None,
                             "trainer.log_every_n_steps": tiny_run.DROP, "trainer.accelerator": tiny_run.DROP})


@pytest.fixture(autouse=True)
def _isolated(isolated, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)  # as a user's sweep: W&B's default directory


@pytest.fixture
def write_spec(tiny_overrides):
    """``write_spec(path, **changes)``: a tiny sweep config (simple_local × 2 seeds) at ``path``."""
    def write(path: Path, **changes) -> Path:
        spec = {"name": "tiny", "fit_config": "fdlf_size_sweep.yaml",
                "grid": {"data.init_args.teacher": ["simple_local"], "seed": [0, 1]},
                "overrides": dict(tiny_overrides), "figures": []}
        spec.update(changes)
        path.write_text(yaml.safe_dump(spec))
        return path
    return write


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_keys_and_arguments(tmp_path, write_spec):
    spec = load_spec(write_spec(tmp_path / "s.yaml", grid={"data.init_args.teacher": ["simple_local", "complex_long"],
                                                           "model.blocks": [1, 2], "seed": [3]}))
    runs = expand(spec)
    assert [r.key for r in runs] == [f"teacher={t}-blocks={b}-seed=3" for t in ("simple_local", "complex_long")
                                     for b in (1, 2)]
    args = runs[1].args
    assert args[:2] == ["--config", "fdlf_size_sweep.yaml"]
    pairs = dict(zip(args[2::2], args[3::2]))
    assert pairs["--model.blocks"] == "2" and pairs["--data.init_args.teacher"] == "simple_local"
    assert pairs["--seed_everything"] == "3" and pairs["--data.init_args.seed"] == "3"  # the seed axis sets both
    assert pairs["--data.init_args.eval_sizes"] == "[12,16]"
    assert pairs["--run.dir"] == str(Path("runs/sweeps/tiny") / runs[1].key)
    assert runs[0].values == {"teacher": "simple_local", "blocks": 1, "seed": 3}


def test_tied_option_takes_its_grid_value_outside_the_key(tmp_path, write_spec):
    spec = load_spec(write_spec(tmp_path / "s.yaml", grid={"model.radius": [4, 8], "seed": [0]},
                                tied={"model.skip_radius": "model.radius"}))
    runs = expand(spec)
    assert [r.key for r in runs] == ["radius=4-seed=0", "radius=8-seed=0"]
    for run, radius in zip(runs, ("4", "8")):
        pairs = dict(zip(run.args[2::2], run.args[3::2]))
        assert pairs["--model.radius"] == pairs["--model.skip_radius"] == radius


def test_when_sets_an_option_only_where_its_grid_option_has_the_value(tmp_path, write_spec):
    """``when: {model.objective: {exact_score: {model.lr: 1.0e-3}}}`` (the shipped radius_isolated's oracle
    learning rate): the option is passed at the matching points only, outside the run key, and the W&B
    sweep definition's parameters stay the grid axes (the agent's ``--point`` expands the same way)."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", grid={"model.objective": ["dsm", "exact_score"], "seed": [0]},
                                when={"model.objective": {"exact_score": {"model.lr": 1.0e-3}}}))
    runs = expand(spec)
    assert [r.key for r in runs] == ["objective=dsm-seed=0", "objective=exact_score-seed=0"]
    pairs = [dict(zip(r.args[2::2], r.args[3::2])) for r in runs]
    assert "--model.lr" not in pairs[0] and float(pairs[1]["--model.lr"]) == 1e-3
    assert list(sweep.wandb_definition(spec, "s.yaml")["parameters"]) == ["objective", "seed"]


@pytest.mark.parametrize("changes, message", [
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": {"model.blocks": {1: {"model.lr": 1}}}},
     "when.model.blocks: not an option of the grid"),
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": {"seed": {0: {"model.lr": 1}}}}, "when.seed"),
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": {"model.objective": {"exact_score": {"model.lr": 1}}}},
     r"when.model.objective.exact_score: not a value of grid.model.objective; allowed: \['dsm'\]"),
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": {"model.objective": {"dsm": {"seed": 1}}}},
     "when.model.objective.dsm.seed: the option is already set"),
    ({"grid": {"model.objective": ["dsm"], "model.blocks": [1], "seed": [0]},
      "when": {"model.objective": {"dsm": {"model.blocks": 2}}}}, "already set by the grid"),
    ({"grid": {"model.objective": ["dsm"], "model.blocks": [1], "seed": [0]},
      "when": {"model.objective": {"dsm": {"model.lr": 1}}, "model.blocks": {1: {"model.lr": 2}}}},
     r"when\.model\.\w+\.\w+\.model\.lr: the option is also set under when\.model\."),
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": {"model.objective": {"dsm": 1e-3}}},
     "when.model.objective.dsm must be a non-empty mapping"),
    ({"grid": {"model.objective": ["dsm"], "seed": [0]}, "when": ["model.objective"]}, "when must be a mapping"),
])
def test_bad_when_cases_are_named(tmp_path, changes, message, write_spec):
    with pytest.raises(SweepError, match=message):
        load_spec(write_spec(tmp_path / "s.yaml", **changes))


@pytest.mark.parametrize("changes, message", [
    ({"tied": {"model.skip_radius": "model.radius"}}, "tied.model.skip_radius"),
    ({"tied": {"model.blocks": "seed"}}, "tied.model.blocks"),
    ({"tied": {"data.init_args.teacher": "data.init_args.teacher"}}, "already set"),
    ({"tied": ["model.radius"]}, "tied must be a mapping"),
    ({"grdi": {}}, "grdi"),
    ({"grid": {}}, "grid"),
    ({"grid": {"model.blocks": []}}, "grid.model.blocks"),
    ({"grid": {"model.blocks": [1, 1]}}, "repeated"),
    ({"figures": ["sizes"]}, "sizes"),
    ({"name": "a/b"}, "name"),
    ({"grid": {"seed": [0]}, "overrides": {"seed": 1}}, "both"),
])
def test_bad_sweep_configs_are_named(tmp_path, changes, message, write_spec):
    with pytest.raises(SweepError, match=message):
        load_spec(write_spec(tmp_path / "s.yaml", **changes))


def test_bad_fit_option_stops_the_sweep_before_any_run(tmp_path, capsys, write_spec):
    path = write_spec(tmp_path / "s.yaml", grid={"model.widht": [8]})
    with pytest.raises(SweepError, match="widht"):
        main(["--config", str(path), "--root", str(tmp_path / "sweeps")])
    path = write_spec(tmp_path / "s.yaml", grid={"data.init_args.eval_sizes": [[12], [13]]})  # odd L: no teacher
    with pytest.raises(SweepError, match="eval_sizes"):
        main(["--config", str(path), "--root", str(tmp_path / "sweeps")])
    assert not (tmp_path / "sweeps").exists()
    with pytest.raises(SweepError, match="--jobs"):
        main(["--config", str(path), "--jobs", "0"])
    with pytest.raises(SweepError, match="no sweep config"):
        main(["--config", "no_such_sweep"])


def test_shipped_sweeps_check_and_match_their_wandb_definitions(capsys):
    """Every shipped sweep parses, every grid point passes the fit's option checks (nothing is written),
    and configs/sweeps/definitions/<name>.yaml is what ``--wandb-definition`` prints."""
    names = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
    assert {"size", "radius", "ising"} <= set(names)
    for name in names:
        spec = load_spec(SWEEPS / f"{name}.yaml")
        runs = expand(spec)
        sweep.check_runs(runs[:1] + runs[-1:])
        assert all(r.max_steps > 0 for r in runs[:1] + runs[-1:])
        capsys.readouterr()
        assert main(["--config", f"{name}.yaml", "--wandb-definition"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        shipped = yaml.safe_load((SWEEPS / "definitions" / f"{name}.yaml").read_text())
        assert printed == shipped, f"configs/sweeps/definitions/{name}.yaml is stale: regenerate it"
        assert printed["method"] == "grid"
        assert {k: v["values"] for k, v in printed["parameters"].items()} == \
            {sweep.short_name(k): v for k, v in spec.grid.items()}
    assert not Path("runs").exists()


def _group_of(run_dir: Path) -> dict:
    run = wandb_run_record(run_dir)
    return {"group": run.get("run_group"), "name": run.get("display_name"), "job_type": run.get("job_type")}


@pytest.mark.slow
def test_tiny_sweep_runs_skips_resumes_and_aggregates(tmp_path, capsys, write_spec, tiny_overrides):
    path = write_spec(tmp_path / "s.yaml", overrides={**tiny_overrides, "trainer.max_steps": 3})
    root = tmp_path / "sweeps"
    # launched with an --override: the sweep remembers it (launch.yaml) for every later call
    assert main(["--config", str(path), "--root", str(root), "--threads", "1",
                 "--override", "trainer.max_steps=2"]) == 0
    out = root / "tiny"
    assert yaml.safe_load((out / "launch.yaml").read_text())["overrides"] == {"trainer.max_steps": 2}
    runs = read_csv(out / "runs.csv")
    assert [(r["run"], r["status"], r["teacher"], r["seed"]) for r in runs] == \
        [("teacher=simple_local-seed=0", "done", "simple_local", "0"),
         ("teacher=simple_local-seed=1", "done", "simple_local", "1")]
    results = read_csv(out / "results.csv")
    assert [(r["run"], r["L"]) for r in results] == [(k, L) for k in ("teacher=simple_local-seed=0",
                                                                      "teacher=simple_local-seed=1") for L in ("12", "16")]
    assert all(float(r["rmse_sigma0.05"]) > 0 and r["step"] == "2" and r["receptive_radius"] == "4" for r in results)
    # W&B: every fit in the sweep's group, named after the run; an aggregate run with the tables
    info = _group_of(out / "teacher=simple_local-seed=1")
    assert info == {"group": "tiny", "name": "tiny/teacher=simple_local-seed=1", "job_type": "fit"}
    assert _group_of(out)["job_type"] == "aggregate"

    # restart: finished runs are skipped (their logs get no new command line)
    logs = {p.name: p.read_text() for p in (out / "logs").glob("*.log")}
    capsys.readouterr()
    assert main(["--config", str(path), "--root", str(root), "--no-wandb"]) == 0
    assert "2 finished, 0 to run" in capsys.readouterr().out
    assert {p.name: p.read_text() for p in (out / "logs").glob("*.log")} == logs

    # an interrupted run (checkpoint, no final evaluation) resumes from its last checkpoint
    run1 = out / "teacher=simple_local-seed=1"
    for f in (run1 / "eval" / "step=2").iterdir():
        f.unlink()
    (run1 / "eval" / "step=2").rmdir()
    assert main(["--config", str(path), "--root", str(root), "--no-wandb", "--threads", "1"]) == 0
    log = (out / "logs" / "teacher=simple_local-seed=1.log").read_text()
    assert "--ckpt_path" in log and "last.ckpt" in log
    assert (run1 / "eval" / "step=2" / "metrics.csv").is_file()
    assert not list(out.glob(".*interrupted*"))  # the interrupted copy is removed once the run finished
    assert len(read_csv(out / "results.csv")) == 4

    # aggregation without the launch's --override reuses it: nothing is marked pending or lost
    assert main(["--config", str(path), "--root", str(root), "--aggregate-only", "--no-wandb"]) == 0
    assert [r["status"] for r in read_csv(out / "runs.csv")] == ["done", "done"]
    assert len(read_csv(out / "results.csv")) == 4
    with pytest.raises(SweepError, match="launched with --override trainer.max_steps=2"):
        main(["--config", str(path), "--root", str(root), "--aggregate-only", "--override", "trainer.max_steps=5"])
    # a run whose directory is gone keeps the rows an earlier aggregation found
    shutil.rmtree(run1)
    assert main(["--config", str(path), "--root", str(root), "--aggregate-only", "--no-wandb"]) == 0
    assert [(r["run"], r["status"]) for r in read_csv(out / "runs.csv")] == \
        [("teacher=simple_local-seed=0", "done"), ("teacher=simple_local-seed=1", "done")]
    assert [(r["run"], r["L"]) for r in read_csv(out / "results.csv")] == [(k, L) for k in (
        "teacher=simple_local-seed=0", "teacher=simple_local-seed=1") for L in ("12", "16")]
    # the aggregate W&B run is one run, updated by every aggregation (same id)
    run_id = (out / "aggregate_wandb_id").read_text().strip()
    assert main(["--config", str(path), "--root", str(root), "--aggregate-only"]) == 0
    assert (out / "aggregate_wandb_id").read_text().strip() == run_id
    assert {p.name.rsplit("-", 1)[1] for p in (out / "wandb").glob("offline-run-*")} == {run_id}


def test_point_mode_selects_one_grid_point(tmp_path, write_spec):
    path = write_spec(tmp_path / "s.yaml")
    with pytest.raises(SweepError, match="unknown axis"):
        main(["--config", str(path), "--point", "--teachr=simple_local", "--seed=0"])
    with pytest.raises(SweepError, match="not a point"):
        main(["--config", str(path), "--point", "--teacher=simple_local", "--seed=7"])
    assert main(["--config", str(path), "--root", str(tmp_path / "s"), "--point", "--dry-run",
                 "--teacher=simple_local", "--seed=1"]) == 0


def test_run_locks_share_a_sweep_between_runners(tmp_path, write_spec):
    """A run held by a live runner is skipped by another; a lock left by a dead process is taken over."""
    import socket

    spec = load_spec(write_spec(tmp_path / "s.yaml"))
    run = expand(spec)[0]
    assert sweep.claim(spec, run)
    assert not sweep.claim(spec, run)  # held by this (live) process
    sweep.run_one(spec, run, threads=1)
    assert run.status == "running elsewhere" and not run.run_dir.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sweep._lock_path(spec, run).write_text(f"{dead.pid} {socket.gethostname()}\n")
    assert sweep.claim(spec, run)  # the dead runner's lock is taken over
    assert sweep._lock_path(spec, run).read_text().split()[0] == str(os.getpid())


def test_a_changed_training_budget_is_refused_before_any_run(tmp_path, write_spec):
    """A run directory trained for another ``trainer.max_steps`` (a shipped sweep's budget changed, or an
    ``--override``) stops the sweep before any training, naming the run and both budgets; the newest saved
    config (``config.resumed-<time>.yaml``) is the one read; dry runs check the same."""
    path = write_spec(tmp_path / "s.yaml")
    spec = load_spec(path, root=str(tmp_path / "sweeps"))
    run = expand(spec)[1]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 7}}))
    for extra in ([], ["--dry-run"]):
        with pytest.raises(SweepError, match=rf"{run.key}.*max_steps=7.*max_steps=2.*--root"):
            main(["--config", str(path), "--root", str(tmp_path / "sweeps")] + extra)
    assert not (spec.sweep_dir / "logs").exists() and not expand(spec)[0].run_dir.exists()
    (run.run_dir / "config.resumed-20260101-000000.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 2}}))
    assert sweep.saved_config_differences(run.run_dir, {"trainer.max_steps": 2}) == []
    assert main(["--config", str(path), "--root", str(tmp_path / "sweeps"), "--dry-run"]) == 0


def test_a_run_trained_with_another_option_value_is_refused(tmp_path, write_spec):
    """Any option the sweep sets (here a ``when:`` case's learning rate) is compared with the run directory's
    saved config: another value stops the sweep before any training (a finished run would otherwise be
    skipped and counted); numbers compare by value, so 1.0e-3 in the sweep matches a saved 0.001."""
    path = write_spec(tmp_path / "s.yaml", grid={"model.objective": ["exact_score"], "seed": [0]},
                      when={"model.objective": {"exact_score": {"model.lr": 1.0e-3}}})
    spec = load_spec(path, root=str(tmp_path / "sweeps"))
    run = expand(spec)[0]
    run.run_dir.mkdir(parents=True)
    saved = {"seed_everything": 0, "trainer": {"max_steps": 2}, "data": {"init_args": {"seed": 0}},
             "model": {"objective": "exact_score", "lr": 0.003}}
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SweepError, match=rf"{run.key}.*model.lr=0.003.*asks model.lr=0.001.*--root"):
        main(["--config", str(path), "--root", str(tmp_path / "sweeps"), "--dry-run"])
    saved["model"]["lr"] = 0.001
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["--config", str(path), "--root", str(tmp_path / "sweeps"), "--dry-run"]) == 0
    assert sweep.saved_config_differences(run.run_dir, {"model.lr": 1e-3, "model.width": 8}) == []  # unsaved: skipped
    assert sweep.saved_config_differences(run.run_dir, {"data.init_args.seed": 1}) == [("data.init_args.seed", 0, 1)]
