"""Generation-level local observables (Table 5): reverse-process samples of an exact score against the
teacher floor, a wrong score, determinism, option errors, and the callback end to end through ``cli_main``.

Exact reference: the Gaussian teacher's closed-form smoothed score −(C + σ² I)⁻¹ x. A perfect sampler's
MAE against a fixed reference set is distributed like the MAE of an independent teacher set of the same
size and count; the test tolerance is the mean + 3 standard deviations of that distribution over 16
independent sets (measured at L = 16, n = 128: 0.011 ± 0.0035, so ≈ 0.022; exact-score samplers measured
0.009-0.020, scaled scores (0.8, 1.25) 0.047-0.065).
"""
import csv
import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import wandb_summary

from sizetransfer.evaluation.callback import GenerationCallback
from sizetransfer.evaluation.generation import generate, generation_errors, generation_sigmas, teacher_floor
from sizetransfer.fit import cli_main
from sizetransfer.teachers import make_teacher

L, N = 16, 128


@pytest.fixture(scope="module")
def gaussian():
    teacher = make_teacher("gaussian")
    reference = teacher.sample(N, L, generator=torch.Generator().manual_seed(1))
    others = [teacher.sample(N, L, generator=torch.Generator().manual_seed(100 + k)) for k in range(16)]
    maes = torch.tensor([generation_errors(o, reference)["mae"] for o in others])
    mean, sem = teacher_floor(reference, others)
    assert mean == pytest.approx(float(maes.mean())) and sem == pytest.approx(float(maes.std() / 4))
    return SimpleNamespace(teacher=teacher, reference=reference, floor=mean, tolerance=mean + 3 * float(maes.std()),
                           exact=lambda x, sigma, cond: teacher.smoothed_score(x, sigma))


def _mae(score, ref, sampler, sigma_max, steps, seed=0, cut=None):
    sigmas = generation_sigmas(sigma_max, 0.01, steps, dtype=torch.float64)
    x = generate(score, ref.shape, sigmas, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                 corrector_sigma_min=cut)
    assert x.shape == ref.shape and x.dtype == torch.float64 and torch.isfinite(x).all()
    return generation_errors(x, ref)


@pytest.mark.parametrize("sampler, sigma_max, steps, cut", [("pc", 1.0, 64, None), ("pc", 1.0, 64, 0.1),
                                                          ("em", 20.0, 256, None), ("pf", 20.0, 64, None)])
def test_exact_score_reproduces_teacher_observables(gaussian, sampler, sigma_max, steps, cut):
    errors = _mae(gaussian.exact, gaussian.reference, sampler, sigma_max, steps, cut=cut)
    assert set(errors) == {"mean", "variance", "skewness", "kurtosis", "nn_corr_0", "nn_corr_1", "mae"}
    assert errors["mae"] == pytest.approx(sum(v for k, v in errors.items() if k != "mae") / 6)
    assert errors["mae"] < gaussian.tolerance, (errors, gaussian.floor, gaussian.tolerance)


def test_start_at_training_sigma_max_needs_the_corrector(gaussian):
    """From N(0, σ_max² I) with σ_max = 1 (the FDLF training range; teacher variance 1.05) the start is
    not p_σmax: even the exact score leaves a bias without Langevin correction (measured MAE 0.09 em,
    0.14 pf), while pc (the default) stays within the floor tolerance (test above)."""
    for sampler in ("em", "pf"):
        assert _mae(gaussian.exact, gaussian.reference, sampler, 1.0, 64)["mae"] > 4 * gaussian.tolerance


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_wrong_score_is_clearly_worse(gaussian, scale):
    def wrong(x, sigma, cond):
        return scale * gaussian.teacher.smoothed_score(x, sigma)

    errors = _mae(wrong, gaussian.reference, "pc", 1.0, 64)
    assert errors["mae"] > 2 * gaussian.tolerance
    assert errors["variance"] > 5 * gaussian.tolerance  # the tempered density has the wrong variance


def test_generate_is_deterministic_and_respects_mask(gaussian):
    sig = generation_sigmas(1.0, 0.01, 8, dtype=torch.float64)
    shape = (4, 1, L, L)
    runs = [generate(gaussian.exact, shape, sig, sampler="pc", generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    # a schedule not ending in 0 gets the Tweedie step appended: the same samples
    same = generate(gaussian.exact, shape, sig[:-1], sampler="pc", generator=torch.Generator().manual_seed(3))
    assert torch.equal(same, runs[0])
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    x = generate(gaussian.exact, shape, sig, sampler="em", mask=mask, generator=torch.Generator().manual_seed(0))
    assert (x[mask == 0] == 0).all() and (x[mask == 1] != 0).all()
    errors = generation_errors(x, x, mask=mask)
    assert all(v == 0 for v in errors.values())


def test_corrector_sigma_min_splits_pc_into_pc_then_em(gaussian):
    sig = generation_sigmas(1.0, 0.01, 8, dtype=torch.float64)
    shape = (4, 1, L, L)

    def run(sampler, cut=None):
        return generate(gaussian.exact, shape, sig, sampler=sampler, corrector_sigma_min=cut,
                        generator=torch.Generator().manual_seed(5))

    assert torch.equal(run("pc", 0.005), run("pc"))  # every level >= cut: plain pc
    assert torch.equal(run("pc", 2.0), run("em"))  # no level >= cut: plain em
    mixed = run("pc", 0.1)
    assert not torch.allclose(mixed, run("pc")) and not torch.allclose(mixed, run("em"))


def test_function_errors(gaussian):
    sig = generation_sigmas(1.0, 0.01, 4)
    with pytest.raises(ValueError, match="sampler"):
        generate(gaussian.exact, (1, 1, L, L), sig, sampler="heun")
    with pytest.raises(ValueError, match="same size and count"):
        teacher_floor(gaussian.reference, [gaussian.reference[:3]])
    with pytest.raises(ValueError, match="at least one"):
        teacher_floor(gaussian.reference, [])
    with pytest.raises(ValueError, match="corrector_sigma_min"):
        generate(gaussian.exact, (1, 1, L, L), sig, sampler="em", corrector_sigma_min=0.1)
    with pytest.raises(ValueError, match="share"):
        generation_errors(gaussian.reference, torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("kwargs, option", [
    ({"sizes": [24, 0]}, "generation.sizes"),
    ({"sizes": [24, 24]}, "generation.sizes"),
    ({"sizes": [24], "n_samples": 1}, "generation.n_samples"),
    ({"sizes": [24, 64], "n_samples": [64]}, "generation.n_samples"),
    ({"steps": 1}, "generation.steps"),
    ({"sampler": "heun"}, "generation.sampler"),
    ({"corrector_sigma_min": 0.0}, "generation.corrector_sigma_min"),
    ({"sigma_min": 0.0}, "generation.sigma_min"),
    ({"sigma_min": 2.0, "sigma_max": 1.0}, "generation.sigma_min"),
    ({"floor_repeats": 0}, "generation.floor_repeats"),
])
def test_callback_option_errors(kwargs, option):
    with pytest.raises(ValueError, match=option.replace(".", r"\.")):
        GenerationCallback(**kwargs)


def test_callback_setup_checks_data_and_sizes():
    from sizetransfer.data import FDLFDataModule
    from sizetransfer.module import ScoreModule

    module = ScoreModule(blocks=1, width=4)
    GenerationCallback().setup(SimpleNamespace(datamodule=None), module, "fit")  # off: nothing checked
    with pytest.raises(ValueError, match="FDLF datamodule"):
        GenerationCallback(sizes=[16]).setup(SimpleNamespace(datamodule=SimpleNamespace(beta=0.4)), module, "fit")
    stub = SimpleNamespace(datamodule=FDLFDataModule(teacher="simple_local", train_size=12))
    with pytest.raises(ValueError, match="generation.sizes: size 13"):
        GenerationCallback(sizes=[12, 13]).setup(stub, module, "fit")
    with pytest.raises(ValueError, match="sigma_min"):  # above the module's sigma_max = 1
        GenerationCallback(sizes=[12], sigma_min=1.5).setup(stub, module, "fit")
    GenerationCallback(sizes=[12]).setup(stub, module, "fit")


@pytest.fixture
def tiny(tiny_run):
    """A tiny Table 5 run (simple_local, train L = 12) with generation at L = 8 and 12."""
    return tiny_run.args("fdlf_generation.yaml", {
        "data.init_args.eval_sizes": [12], "generation.sizes": [8, 12], "generation.n_samples": 4,
        "generation.steps": 8, "generation.floor_repeats": 2, "generation.progress": False})


def test_configs_enable_table5_sizes(isolated, capsys):
    for name in ("fdlf_generation.yaml", "fdlf_size_sweep.yaml", "fdlf_radius_sweep.yaml"):
        with pytest.raises(SystemExit):
            cli_main(["--config", name, "--print_config"])
        cfg = yaml.safe_load(capsys.readouterr().out)["generation"]
        if name == "fdlf_radius_sweep.yaml":
            assert not cfg["sizes"]  # no generation section: off
        else:
            assert cfg["sizes"] == [24, 64] and cfg["n_samples"] == [64, 16] and cfg["output_dir"] is None
            assert cfg["sampler"] == "pc" and cfg["corrector_sigma_min"] == 0.1 and cfg["steps"] == 256


def test_bad_generation_option_fails_before_anything_is_written(isolated, tmp_path, capsys, tiny):
    for args, message in ([["--generation.sampler", "heun"], "generation.sampler"],
                          [["--generation.sizes", "[8, 9]"], "generation.sizes"]):
        with pytest.raises((ValueError, SystemExit)) as err:
            cli_main(tiny + ["--trainer.max_steps", "3"] + args)
        assert message in str(err.value) + capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "stray_wandb").exists()


def test_fit_writes_and_logs_generation(isolated, tmp_path, capsys, tiny):
    cli = cli_main(tiny + ["--trainer.max_steps", "3", "--run.name", "gen"])
    printed = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs" / "gen").iterdir()
    out = run_dir / "eval" / "step=3"
    for name in ("generation.csv", "generation.json", "generation.png", "metrics.csv"):
        assert (out / name).is_file(), name
    assert str(out / "generation.csv") in printed and "generation (teacher simple_local" in printed
    with open(out / "generation.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["L", "n_samples", "steps", "sampler", "mae", "teacher_floor", "mean_error",
                             "variance_error", "skewness_error", "kurtosis_error", "nn_corr_0_error", "nn_corr_1_error"]
    assert [r["L"] for r in rows] == ["8", "12"] and {r["steps"] for r in rows} == {"8"}
    assert all(float(r["mae"]) > 0 and float(r["teacher_floor"]) > 0 for r in rows)
    results = json.loads((out / "generation.json").read_text())
    assert results["observables"][0]["generated_finite"] and results["config"]["sampler"] == "pc"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["generation"]["output_dir"] is None

    summary = wandb_summary(run_dir)["summary"]
    for row in rows:
        assert summary[f"gen/mae/L={row['L']}"] == pytest.approx(float(row["mae"]))
        assert summary[f"gen/teacher_floor/L={row['L']}"] == pytest.approx(float(row["teacher_floor"]))
    assert "gen/table" in summary and "gen/observables" in summary
    assert cli.trainer.global_step == 3


def test_generate_cli_repeats_the_fits_table_from_its_checkpoint(isolated, tmp_path, capsys, tiny):
    """``python -m sizetransfer.generate`` on a run's checkpoint, with the run's options, gives the table the
    fit's callback wrote (same reference samples, same reverse-process noise); other options are its own."""
    from sizetransfer.generate import main as generate_main

    cli_main(tiny + ["--trainer.max_steps", "3", "--run.name", "gen"])
    (run_dir,) = (tmp_path / "runs" / "gen").iterdir()
    with open(run_dir / "eval" / "step=3" / "generation.csv") as f:
        fit_rows = list(csv.DictReader(f))
    capsys.readouterr()
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    assert generate_main(["--ckpt", ckpt, "--no-progress"]) == 0  # every option from the run's config.yaml
    printed = capsys.readouterr().out
    out = run_dir / "generation"
    assert str(out / "generation.csv") in printed and (out / "generation.png").is_file()
    with open(out / "generation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["L"] for r in rows] == ["8", "12"] and {r["steps"] for r in rows} == {"8"}
    for row, fit_row in zip(rows, fit_rows):  # float32 student, the same operations: equal to round-off
        for key in ("mae", "teacher_floor", "variance_error"):
            assert float(row[key]) == pytest.approx(float(fit_row[key]), rel=1e-5, abs=1e-7), key

    other = tmp_path / "other"
    assert generate_main(["--ckpt", ckpt, "--sizes", "12", "--n-samples", "3", "--steps", "5", "--sampler", "em",
                          "--floor-repeats", "1", "--out", str(other), "--no-progress"]) == 0
    results = json.loads((other / "generation.json").read_text())
    assert results["config"]["steps"] == 5 and results["config"]["sampler"] == "em"
    assert [r["L"] for r in results["rows"]] == [12] and results["rows"][0]["n_samples"] == 3

    everywhere = tmp_path / "everywhere"  # the run's corrector cut (σ >= 0.1) lifted: pc at every level
    assert generate_main(["--ckpt", ckpt, "--sizes", "12", "--n-samples", "3", "--steps", "5",
                          "--corrector-everywhere", "--floor-repeats", "1", "--out", str(everywhere),
                          "--no-progress"]) == 0
    config = json.loads((everywhere / "generation.json").read_text())["config"]
    assert config["sampler"] == "pc" and config["corrector_sigma_min"] is None
    with pytest.raises(SystemExit):  # the two corrector options exclude each other
        generate_main(["--ckpt", ckpt, "--corrector-everywhere", "--corrector-sigma-min", "0.2"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--steps", "1"], "--steps must be an integer >= 2"),
    (["--sizes", "24", "25"], "--sizes: size 25 is invalid for teacher 'simple_local'"),
    (["--n-samples", "4", "5", "6"], "--n-samples must be an integer >= 2 or a list of them, one per size"),
    (["--corrector-sigma-min", "0"], "--corrector-sigma-min must be > 0"),
    (["--ckpt", "missing.ckpt"], "--ckpt: no checkpoint file at missing.ckpt"),
])
def test_generate_cli_bad_input_is_one_line_before_any_output(tmp_path, capsys, options, message):
    from helpers import fake_run

    from sizetransfer.generate import main as generate_main

    run = fake_run(tmp_path)
    out = tmp_path / "gen"
    assert generate_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "--no-progress",
                          *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists() and not (run / "generation").exists()
