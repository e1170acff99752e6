"""ScoreModule: score API, EMA, σ-band validation, option checks, exact resume (tiny models, CPU)."""
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from sizetransfer.data import FDLFDataModule
from sizetransfer.module import ScoreModule, warmup_cosine


def tiny(**kw):
    return ScoreModule(**{"blocks": 1, "width": 8, "sigma_min": 0.01, "sigma_max": 1.0, **kw})


def trainer(tmp_path, max_steps, **kw):
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      check_val_every_n_epoch=None, **kw)


def data(**kw):
    return FDLFDataModule(**{"teacher": "gaussian", "train_size": 12, "eval_sizes": [12], "batch_size": 4,
                             "val_batches": 2, **kw})


def test_score_is_the_ema_student_and_differentiable():
    torch.manual_seed(0)
    m = tiny(ema_decay=0.5)
    x = torch.randn(3, 1, 10, 10, requires_grad=True)
    s = m.score(x, 0.3)
    assert s.shape == x.shape
    assert torch.allclose(s, m.score(x, torch.full((3,), 0.3)))
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert m.receptive_radius == 4
    with torch.no_grad():  # move the live weights: the EMA (what score uses) must not follow until updated
        for p in m.student.parameters():
            p.add_(0.1)
    assert torch.equal(m.score(x, 0.3), s)
    m.ema.update_parameters(m.student)  # first update copies
    assert not torch.allclose(m.score(x, 0.3), s)
    assert any(k.startswith("ema.") for k in m.state_dict())  # EMA weights go into checkpoints


@pytest.mark.parametrize("kw, match", [
    ({"sigma_min": 0.0}, "sigma_min"),
    ({"sigma_min": 1.0, "sigma_max": 1.0}, "sigma_min"),
    ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_max"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"lr": 0.0}, "lr"),
    ({"val_sigma_bands": [0.5, 0.1]}, "val_sigma_bands"),
    ({"val_sigma_bands": [0.001, 0.1]}, "val_sigma_bands"),
])
def test_bad_options_name_the_option(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_check_fit_radius_and_steps():
    dm = data(train_size=12)
    tiny(blocks=1).check_fit(dm, 10)  # R = 4 < 6
    with pytest.raises(ValueError, match=r"model.blocks=2 .* data.train_size/2 = 6"):
        tiny(blocks=2).check_fit(dm, 10)  # R = 6
    with pytest.raises(ValueError, match="trainer.max_steps"):
        tiny().check_fit(dm, -1)
    # a run not longer than the warm-up is not refused: it warms up over a tenth of the run
    short = tiny(warmup_steps=10)
    short.check_fit(dm, 10)
    assert [short.effective_warmup_steps(n) for n in (11, 10, 5, 1)] == [10, 1, 0, 0]


def test_warmup_cosine():
    f = warmup_cosine(4, 14)
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0) and f(20) == pytest.approx(0.0)


def test_validation_logs_overall_and_per_band_loss(tmp_path):
    m = tiny(val_sigma_bands=[0.01, 0.1, 1.0])
    t = trainer(tmp_path, 2, val_check_interval=2, enable_checkpointing=False)
    t.fit(m, data())
    metrics = t.callback_metrics
    bands = [metrics["val/loss/sigma=[0.01,0.1)"], metrics["val/loss/sigma=[0.1,1)"]]
    assert all(torch.isfinite(b) and b > 0 for b in bands)
    # stratified σ: half the samples in each (log-equal) band, so the overall loss is the bands' mean
    assert metrics["val/loss"] == pytest.approx(float(sum(bands)) / 2, rel=1e-5)


def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, 'kill' (the step-3 checkpoint), resume to 6: identical weights and EMA."""
    pl.seed_everything(0)
    full = tiny(warmup_steps=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer(tmp_path, 6, callbacks=[ckpt], limit_val_batches=0).fit(full, data())
    step3 = tmp_path / "ckpt" / "epoch=0-step=3.ckpt"
    assert step3.is_file()

    pl.seed_everything(0)
    resumed = tiny(warmup_steps=2)
    t = trainer(tmp_path, 6, enable_checkpointing=False, limit_val_batches=0)
    t.fit(resumed, data(), ckpt_path=step3)
    assert t.global_step == 6
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run did move: the step-3 weights differ from the final ones
    assert not torch.equal(torch.load(step3, weights_only=False)["state_dict"]["student.denoiser.net.head.conv.weight"],
                           a["student.denoiser.net.head.conv.weight"])


def test_ema_warmup_decay():
    """EMA with warm-up: decay min(d, (1 + n) / (10 + n)) after n updates; without: plain d."""
    from sizetransfer.module import ema_multi_avg_fn

    for warmup in (True, False):
        ema, value = [torch.zeros(())], torch.zeros(())
        update = ema_multi_avg_fn(0.9, warmup)
        expected = 0.0
        for n in range(1, 30):  # AveragedModel copies on its first update, then calls with n >= 1
            value = torch.tensor(float(n))
            update(ema, [value], torch.tensor(n))
            d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
            expected = d * expected + (1 - d) * n
            assert abs(float(ema[0]) - expected) < 1e-4


@pytest.mark.slow  # one cold torch.compile of a width-8 student's forward and backward (~30 CPU-s)
def test_compiled_training_step_is_the_same_function(tmp_path):
    """``compile=True``: the training step's student is ``torch.compile(student)``: the same loss and gradients
    as the plain student up to float32 rounding (rtol 1e-5: a reordered sum of a few thousand float32 terms),
    and it is kept out of the module tree, so the state dict (checkpoints) has exactly the plain keys."""
    from sizetransfer.diffusion import dsm_loss

    torch.manual_seed(0)
    m = tiny(compile=True, antithetic=True, lambda_power=1.0)
    assert set(m.state_dict()) == set(tiny().state_dict())
    with torch.no_grad():  # off the zero-initialised output conv, so that every weight has a gradient
        for p in m.student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    m.on_fit_start()
    assert m._train_student is not m.student and set(m.state_dict()) == set(tiny().state_dict())
    x0 = torch.randn(4, 1, 12, 12)
    out = {}
    for name, net in (("plain", m.student), ("compiled", m._train_student)):
        m.student.zero_grad()
        loss, _, _ = dsm_loss(net, x0, m.noise, generator=torch.Generator().manual_seed(5), antithetic=True,
                              lambda_power=1.0)
        loss.backward()
        out[name] = (loss.detach(), torch.cat([p.grad.reshape(-1) for p in m.student.parameters()]))
    assert torch.allclose(out["compiled"][0], out["plain"][0], rtol=1e-5, atol=0)
    grad_scale = out["plain"][1].abs().max()
    assert (out["plain"][1] != 0).float().mean() > 0.9
    assert torch.allclose(out["compiled"][1], out["plain"][1], rtol=1e-4, atol=1e-5 * float(grad_scale))
