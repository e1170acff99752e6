"""HardValidDataModule (3D hard-valid teacher batches), the model/data check, the callback's open-box path
against the exact teacher (a student that decodes ports/types from its conditioning), and a tiny
``python -m sizetransfer.fit`` run of configs/fdlf_hard_valid_3d.yaml read back from W&B offline."""
from __future__ import annotations

import csv
import json
import math
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from helpers import randomise_zero_init, wandb_summary

from sizetransfer.data import HardValidDataModule
from sizetransfer.data.streaming import TRAIN_STREAM, BatchStream
from sizetransfer.evaluation import fdlf
from sizetransfer.evaluation.callback import SizeExtrapolationCallback
from sizetransfer.fit import OptionError, cli_main
from sizetransfer.module import ScoreModule

@pytest.fixture
def tiny(tiny_run):
    """The Fig. 3 config cut down to seconds: width 8, L = 6 and 8, 2 evaluation samples."""
    return tiny_run.args("fdlf_hard_valid_3d.yaml", {
        "data.init_args.train_size": tiny_run.DROP, "data.init_args.eval_sizes": [6, 8],
        "data.init_args.batch_size": 2, "trainer.val_check_interval": 3, "evaluation.n_probes": 2,
        "evaluation.far": tiny_run.DROP})


@pytest.fixture(scope="module")
def dm():
    return HardValidDataModule(train_size=4, eval_sizes=[4, 6], batch_size=3, seed=5)


def test_batches_shapes_dtypes_mask_and_empty_sites(dm):
    teacher = dm.teacher
    m, cc = teacher.channels, teacher.cond_channels
    assert (dm.channels, dm.cond_channels) == (m, cc) == (m, 6 + teacher.n_types + 1)
    batch = BatchStream(dm.make_batch(4, 3), seed=5).batch(0)
    assert sorted(batch) == ["cond", "mask", "x0"]
    assert batch["x0"].shape == (3, m, 4, 4, 4) and batch["cond"].shape == (3, cc, 4, 4, 4)
    assert batch["mask"].shape == (3, 1, 4, 4, 4)
    assert all(v.dtype == torch.float32 for v in batch.values())
    ev = dm.eval_batch(6, 4, seed=1)
    assert sorted(ev) == ["cond", "mask", "ports", "types", "x0"]
    assert ev["x0"].dtype == torch.float64 and ev["x0"].shape == (4, m, 6, 6, 6)
    assert ev["ports"].dtype == torch.bool and ev["ports"].shape == (4, 6, 6, 6, 6)
    assert ev["types"].dtype == torch.int64 and ev["types"].shape == (4, 6, 6, 6)
    occ = teacher.occupied(ev["ports"])
    assert torch.equal(ev["mask"].bool(), occ) and 0 < occ.float().mean() < 1
    assert (ev["x0"] * ~occ).abs().max() == 0 and (ev["x0"] * occ).abs().min() >= 0
    assert (ev["x0"].abs().sum(1, keepdim=True) > 0)[occ].all()
    assert torch.equal(ev["cond"], teacher.conditioning(ev["ports"], ev["types"], torch.float64))
    assert torch.equal(ev["types"] > 0, occ[:, 0])


def test_stream_is_a_pure_function_of_the_seed(dm):
    same = HardValidDataModule(train_size=4, eval_sizes=[4], batch_size=3, seed=5)
    other = HardValidDataModule(train_size=4, eval_sizes=[4], batch_size=3, seed=6)
    b = [BatchStream(d.make_batch(4, 3), seed=d.seed, stream=TRAIN_STREAM).batch(7) for d in (dm, same, other)]
    for key in b[0]:
        assert torch.equal(b[0][key], b[1][key]), key
    assert not torch.equal(b[0]["x0"], b[2]["x0"])
    stream = BatchStream(dm.make_batch(4, 3), seed=5)
    assert torch.equal(stream.batch(0)["x0"], next(iter(stream))["x0"])  # iteration starts at batch 0
    # evaluation samples depend on (L, n, seed) only, not on the data seed; cached
    assert torch.equal(dm.eval_batch(4, 2, seed=3)["x0"], other.eval_batch(4, 2, seed=3)["x0"])
    assert dm.eval_batch(4, 2, seed=3) is dm.eval_batch(4, 2, seed=3)


def test_bad_teacher_and_sizes_fail_clearly():
    with pytest.raises(ValueError, match=r"teacher must be one of \['hard_valid_short', 'hard_valid_long'\]"):
        HardValidDataModule(teacher="simple_local")
    with pytest.raises(ValueError, match="train_size: size 5"):
        HardValidDataModule(train_size=5)
    with pytest.raises(ValueError, match="eval_sizes: size 7"):
        HardValidDataModule(train_size=6, eval_sizes=[6, 7])
    with pytest.raises(ValueError, match="batch_size"):
        HardValidDataModule(batch_size=0)


def test_model_must_match_the_data(dm):
    good = ScoreModule(width=4, dim=3, periodic=False, in_channels=dm.channels, cond_channels=dm.cond_channels)
    dm.check_model(good)
    assert dm.expected_model() == {"dim": 3, "periodic": False, "in_channels": dm.channels,
                                   "cond_channels": dm.cond_channels}
    with pytest.raises(ValueError, match=r"model.dim=2, model.periodic=True, model.in_channels=1, "
                                         r"model.cond_channels=0 does not match"):
        dm.check_model(ScoreModule(width=4))
    with pytest.raises(ValueError, match=r"model.cond_channels=9 does not match .* model.cond_channels: 10"):
        dm.check_model(ScoreModule(width=4, dim=3, periodic=False, in_channels=2, cond_channels=9))
    # the callback's setup runs the check too (the CLI calls it before anything is written)
    cb = SizeExtrapolationCallback(far=(3, 3))
    with pytest.raises(ValueError, match="model.periodic=True"):
        cb.setup(SimpleNamespace(datamodule=dm), ScoreModule(width=4, dim=3, in_channels=2, cond_channels=10), "fit")


@pytest.mark.parametrize("args, message", [
    (["--model.cond_channels", "9"], "model.cond_channels=9"),
    (["--model.periodic", "true", "--model.blocks", "0"], "model.periodic=True"),  # R = 2 < L/2: data check
    (["--data.init_args.teacher", "complex_long"], "teacher must be one of"),
    (["--evaluation.far", "[4, 5]"], r"far\[0\] <= L // 2 = 3"),
    (["--evaluation.bulk_margin", "-1"], "bulk_margin"),
])
def test_cli_rejects_mismatches_before_writing(isolated, tmp_path, args, message, tiny):
    with pytest.raises((OptionError, SystemExit)) as err:
        cli_main(tiny + ["--trainer.max_steps", "3"] + args)
    if err.type is OptionError:
        assert re.search(message, str(err.value)), str(err.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "stray_wandb").exists()


# -------------------------------------------------------------------------------- callback, open box
class DecodingTeacherStudent(pl.LightningModule):
    """An exact "student": decodes ports and types from its conditioning (6 port channels, then the
    one-hot type) and returns (1 + a) × the teacher's exact score."""

    def __init__(self, teacher, a: float = 0.0, receptive_radius: int = 4):
        super().__init__()
        self.teacher, self.a, self.receptive_radius = teacher, a, receptive_radius
        self.noise = SimpleNamespace(sigma_min=0.01)
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def score(self, x, sigma, cond=None):
        """(1 + a) ∇ log p(x | ports, types) with a differentiable graph (the response profile needs it)."""
        ports, types = cond[:, :6] > 0.5, cond[:, 6:].argmax(1)
        with torch.enable_grad():
            y = x if x.requires_grad else x.detach().requires_grad_(True)
            (s,) = torch.autograd.grad(self.teacher.log_prob_continuous(y, ports, types).sum(), y, create_graph=True)
        s = s * self.teacher.occupied(ports).to(s.dtype)
        return (1 + self.a) * s + 0 * self.weight


def _evaluate(cb, dm, module, tmp_path):
    trainer = SimpleNamespace(datamodule=dm, global_step=0, loggers=[], default_root_dir=str(tmp_path))
    return cb.evaluate(trainer, module)


def test_callback_open_box_against_the_exact_teacher(tmp_path):
    """Student = (1 + a)·exact score bound through cond: every RMSE and response error equals a, so the
    exact score, the FD perturbations and the profiles are bound to the right samples; the profile ranges
    agree; the margin-R bulk (R = 4) is NaN at L = 6, 8 and reported at L = 10."""
    dm = HardValidDataModule(train_size=6, eval_sizes=[6, 10], batch_size=2)
    cb = SizeExtrapolationCallback(n_samples=3, response_samples=2, n_probes=2, bulk_margin=1, far=(3, 4),
                                   progress=False)
    cb.setup(SimpleNamespace(datamodule=dm), DecodingTeacherStudent(dm.teacher), "fit")
    a = 0.25
    results = _evaluate(cb, dm, DecodingTeacherStudent(dm.teacher, a).double(), tmp_path)
    rows = {row["L"]: row for row in results["rows"]}
    assert results["metric_keys"][:4] == ["rmse_sigma0.05", "rmse_sigma0.01", "rmse_bulk_sigma0.05",
                                          "rmse_bulk_sigma0.01"]
    for L in (6, 10):
        for key in ("rmse_sigma0.05", "rmse_sigma0.01", "near_response_error", "far_response_error"):
            assert rows[L][key] == pytest.approx(a, rel=1e-6), (L, key)
        assert rows[L]["response_range_student"] == rows[L]["response_range_teacher"]
    assert math.isnan(rows[6]["rmse_bulk_sigma0.05"]) and rows[10]["rmse_bulk_sigma0.05"] == pytest.approx(a)
    prof = {p["L"]: p for p in results["profiles"]}
    assert prof[10]["r"][-1] >= 5 and prof[10]["student"] == pytest.approx(prof[10]["teacher"])
    out = tmp_path / "eval" / "step=0"
    assert (out / "response_profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert table[0]["rmse_bulk_sigma0.05"] == "nan"
    assert json.loads((out / "metrics.json").read_text())["config"]["bulk_margin"] == 1


def test_open_box_probes_are_occupied_and_fit(tmp_path):
    dm = HardValidDataModule(train_size=6, eval_sizes=[12])
    config = fdlf.FDLFEvalConfig(n_probes=3, far=(3, 5))
    occ = dm.eval_batch(12, 4, seed=0)["mask"]
    sites, valid = fdlf.probe_sites(config, (12, 12, 12), False, 12, occ)
    assert sites.shape == (4, 3, 3) and valid.shape == (4, 3)
    assert ((sites >= 5) & (sites <= 6)).all()                       # far shell of radius 5 inside 12³
    for b in range(4):
        hits = [bool(occ[(b, 0) + tuple(s.tolist())]) for s in sites[b]]
        assert [float(h) for h in hits] == valid[b].tolist()
        assert hits == sorted(hits, reverse=True)                     # occupied probes first
        assert len({tuple(s.tolist()) for s in sites[b]}) == 3        # distinct
    profile_sites, r_max, keep = fdlf.profile_sites(config, (4, 2, 12, 12, 12), False, 12, occ)
    assert keep.all() and r_max >= 6
    for b in range(4):
        assert bool(occ[(b, 0) + tuple(profile_sites[b].tolist())])


# -------------------------------------------------------------------------------- the student's boundary
def test_student_sees_no_wrap_around():
    """Open box (zero padding): at L = 6 < 2R + 1 the score at a corner is unaffected by the opposite
    face — exactly; the periodic student of the same weights does see it (distance 1 through the wrap)."""
    torch.manual_seed(0)
    kw = dict(blocks=1, width=8, dim=3, in_channels=2, cond_channels=10)
    open_box, torus = randomise_zero_init(ScoreModule(periodic=False, **kw)), ScoreModule(periodic=True, **kw)
    torus.load_state_dict(open_box.state_dict())
    x, cond = torch.randn(1, 2, 6, 6, 6), torch.rand(1, 10, 6, 6, 6)
    y = x.clone()
    y[:, :, 5] += 1.0                                                 # the face i_0 = L - 1
    for module, changes in ((open_box, False), (torus, True)):
        corner = [module.score(z, 0.1, cond)[:, :, 0, 0, 0] for z in (x, y)]
        assert (not torch.equal(*corner)) is changes
    inner = [open_box.score(z, 0.1, cond)[:, :, 4, 0, 0] for z in (x, y)]
    assert not torch.equal(*inner)                                    # a site at distance 1 does


# -------------------------------------------------------------------------------- end to end
def test_fit_hard_valid_config_end_to_end(isolated, tmp_path, tiny):
    """3 steps of the Fig. 3 config (tiny): metrics.csv with finite errors at L = 6, 8 (the margin-R bulk
    empty there: NaN), the W&B offline run holds them; the trained student sees no wrap-around."""
    cli = cli_main(tiny + ["--trainer.max_steps", "3", "--run.name", "hv"])
    (run_dir,) = (tmp_path / "runs" / "hv").iterdir()
    with open(run_dir / "eval" / "step=3" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["L"]) for r in table] == [6, 8]
    for row in table:
        for key in ("rmse_sigma0.05", "rmse_sigma0.01", "near_response_error", "far_response_error",
                    "response_range_student", "response_range_teacher"):
            assert math.isfinite(float(row[key])), (row["L"], key)
        assert row["rmse_bulk_sigma0.05"] == "nan"
    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished"
    for L in (6, 8):
        assert summary["summary"][f"eval/rmse_sigma0.05/L={L}"] > 0
        assert f"eval/rmse_bulk_sigma0.05/L={L}" not in summary["summary"]
    assert summary["config"]["dim"] == 3 and summary["config"]["periodic"] is False
    model = cli.model
    assert not model.hparams.periodic and model.receptive_radius == 4
    x = torch.randn(1, 2, 6, 6, 6)
    cond = cli.datamodule.eval_batch(6, 1, seed=0)["cond"].float()
    y = x.clone()
    y[:, :, :, :, 5] -= 2.0
    with torch.no_grad():
        assert torch.equal(model.score(x, 0.05, cond)[..., 0], model.score(y, 0.05, cond)[..., 0])
