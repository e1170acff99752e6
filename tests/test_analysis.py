"""sizetransfer.analysis on small synthetic sweeps written per the sweep contract: aggregated
numbers checked exactly against hand-computed means / s.e.m. (ddof = 1) / ratios, markdown
formatting, draw() outputs, partial sweeps and the no-runs.csv (still running) fallback."""
import itertools
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from sizetransfer import analysis as an

TEACHERS = ["complex_long", "simple_local"]  # deliberately not in paper order


# rel=1e-12 below: the analysis (pandas, after a CSV round trip, which is exact for repr'd floats) and
# the test (numpy) compute the same means / s.e.m. of <= 3 values in different summation orders. Their
# difference is bounded by ~n·EPS·mean/std (two-pass variance) <= 3·60·2.2e-16 = 4e-14 for the values
# here (mean/std <= 60), so 1e-12 leaves a 25x margin on any numpy/BLAS build.
def fdlf_value(metric, teacher, blocks, seed, L):
    """Deterministic synthetic metric value (distinct per cell and seed)."""
    base = {"rmse_sigma0.05": 0.2, "near_response_error": 0.3, "far_response_error": 0.9}[metric]
    return base + 0.1 * TEACHERS.index(teacher) + 0.05 * blocks + 0.01 * seed ** 2 + 0.001 * L


def write_fdlf_sweep(root, *, blocks=(1, 2), seeds=(0, 1, 2), sizes=(24, 64), train_size=24,
                     status=None, configs=True):
    """A sweep dir per the contract: runs.csv, results.csv (+ each run's config.yaml)."""
    root.mkdir(parents=True, exist_ok=True)
    status = status or {}
    runs, results = [], []
    for teacher, b, seed in itertools.product(TEACHERS, blocks, seeds):
        key = f"teacher={teacher}-blocks={b}-seed={seed}"
        st = status.get(key, "done")
        runs.append({"run": key, "status": st, "wall_s": 10.0, "run_dir": str(root / key),
                     "teacher": teacher, "blocks": b, "seed": seed})
        if configs:
            (root / key).mkdir()
            (root / key / "config.yaml").write_text(yaml.safe_dump(
                {"trainer": {"max_steps": 5}, "data": {"init_args": {"train_size": train_size}}}))
        if st == "failed":
            continue
        for L in sizes:  # a pending run may have a partial row: it must be ignored
            row = {"run": key, "teacher": teacher, "blocks": b, "seed": seed, "step": 5,
                   "receptive_radius": 2 * b + 2, "L": L}
            for m in ("rmse_sigma0.05", "near_response_error", "far_response_error"):
                row[m] = fdlf_value(m, teacher, b, seed, L)
            row["rmse_sigma0.01"] = 1.0
            results.append(row)
    pd.DataFrame(runs).to_csv(root / "runs.csv", index=False)
    pd.DataFrame(results).to_csv(root / "results.csv", index=False)
    return root


def mean_sem(values):
    v = np.asarray(values, dtype=float)
    return v.mean(), (v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan)


# ---------------------------------------------------------------------------------------------

def test_format_pm_and_markdown_table():
    assert an.format_pm(0.41234, 0.01321) == "0.412 ± 0.013"
    assert an.format_pm(0.176, 0.00102) == "0.1760 ± 0.0010"  # two significant digits of the sem
    assert an.format_pm(0.5, math.nan) == "0.500"
    assert an.format_pm(math.nan, 0.1) == "—"
    assert an.format_pm(0.5, 0.0) == "0.500 ± 0.000"
    assert an.format_pm(3.214e-5, 4.1e-6) == "3.21e-05 ± 4.1e-06"
    assert an.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |\n"


def test_parse_run_key():
    assert an.parse_run_key("teacher=medium_range-blocks=1-seed=0") == {
        "teacher": "medium_range", "blocks": 1, "seed": 0}
    assert an.parse_run_key("beta_over_beta_c=0.95-lr=1e-3-shift=-1") == {
        "beta_over_beta_c": 0.95, "lr": 1e-3, "shift": -1}
    assert an.parse_run_key("figures") == {}


def test_radius_table_by_dilations(tmp_path):
    """A sweep whose radius axis is ``model.dilations`` (list values): rows per receptive radius, the
    dilations are not a cell of the table (as ``blocks`` and ``radius`` are not)."""
    frames = an.load_sweep(write_fdlf_sweep(tmp_path / "radius", sizes=(32, 64), train_size=32))
    spelled = {1: "[1, 1, 1, 1, 0, 0, 0, 0]", 2: "[1, 2, 2, 3, 0, 0, 0, 0]"}
    for name in ("runs", "results"):
        attrs = frames[name].attrs
        frames[name] = frames[name].rename(columns={"blocks": "dilations"})
        frames[name]["dilations"] = frames[name]["dilations"].map(spelled)
        frames[name].attrs = attrs
    frames["runs"].attrs["axes"] = ["teacher", "dilations", "seed"]
    t = an.radius_table(frames)
    assert list(t["receptive_radius"]) == [4, 6, 4, 6] and "dilations" not in t
    mu, _ = mean_sem([fdlf_value("rmse_sigma0.05", "complex_long", 2, s, 64) for s in (0, 1, 2)])
    assert t["rmse_sigma0.05_mean"].iloc[3] == pytest.approx(mu, rel=1e-12)


def test_radius_table_exact(tmp_path):
    frames = an.load_sweep(write_fdlf_sweep(tmp_path / "radius", sizes=(32, 64), train_size=32))
    assert an.axes(frames) == ["teacher", "blocks", "seed"]
    t = an.radius_table(frames)
    assert list(t["teacher"]) == ["simple_local", "simple_local", "complex_long", "complex_long"]  # paper order
    assert list(t["receptive_radius"]) == [4, 6, 4, 6] and set(t["L"]) == {64}
    for _, row in t.iterrows():
        for m in ("rmse_sigma0.05", "near_response_error", "far_response_error"):
            mu, se = mean_sem([fdlf_value(m, row["teacher"], row["blocks"], s, 64) for s in (0, 1, 2)])
            assert row[f"{m}_mean"] == pytest.approx(mu, rel=1e-12)
            assert row[f"{m}_sem"] == pytest.approx(se, rel=1e-12)
        assert row["n_seeds"] == 3
    # sem of seed offsets 0, .01, .04: std(ddof=1)/sqrt(3)
    assert t["rmse_sigma0.05_sem"].iloc[0] == pytest.approx(np.std([0, .01, .04], ddof=1) / math.sqrt(3))

    ch = an.radius_change(frames)
    row = ch[(ch["teacher"] == "complex_long") & (ch["metric"] == "rmse_sigma0.05")].iloc[0]
    a = np.mean([fdlf_value("rmse_sigma0.05", "complex_long", 1, s, 64) for s in (0, 1, 2)])
    b = np.mean([fdlf_value("rmse_sigma0.05", "complex_long", 2, s, 64) for s in (0, 1, 2)])
    assert (row["R_min"], row["R_max"]) == (4, 6)
    assert row["relative_change"] == pytest.approx((b - a) / a, rel=1e-12)

    md = an.radius_markdown(frames)
    mu, se = mean_sem([fdlf_value("rmse_sigma0.05", "simple_local", 1, s, 64) for s in (0, 1, 2)])
    assert an.format_pm(mu, se) in md
    assert "| Short-range simple (simple_local) | " in md
    assert "B = 1 (R = 4) | B = 2 (R = 6) | change | n |" in md
    assert f"{(b - a) / a:+.1%}" in md
    assert "12/12 runs done" in md

    smaller = an.radius_table(frames, L=32)
    assert set(smaller["L"]) == {32}


def test_size_ratios_and_teacher_ratio(tmp_path):
    frames = an.load_sweep(write_fdlf_sweep(tmp_path / "size", blocks=(1,), seeds=(0, 1),
                                            sizes=(16, 24, 48), train_size=24))
    t = an.size_table(frames)
    assert len(t) == 2 * 3 and list(t.columns[:3]) == ["teacher", "blocks", "L"]
    r = an.size_ratios(frames).set_index("teacher")
    for teacher in TEACHERS:
        m = lambda L: np.mean([fdlf_value("rmse_sigma0.05", teacher, 1, s, L) for s in (0, 1)])
        assert (r.at[teacher, "L_train"], r.at[teacher, "L_max"]) == (24, 48)  # train size, not min L
        assert r.at[teacher, "ratio"] == pytest.approx(m(48) / m(24), rel=1e-12)
    tr = an.teacher_ratio(frames).set_index("L")
    for L in (16, 24, 48):
        num = np.mean([fdlf_value("rmse_sigma0.05", "complex_long", 1, s, L) for s in (0, 1)])
        den = np.mean([fdlf_value("rmse_sigma0.05", "simple_local", 1, s, L) for s in (0, 1)])
        assert tr.at[L, "ratio"] == pytest.approx(num / den, rel=1e-12)
    md = an.size_markdown(frames)
    assert "| cell | L = 16 | L = 24 | L = 48 | n |" in md
    assert "RMSE complex_long / simple_local" in md
    assert f"{tr.at[48, 'ratio']:.3f}" in md


def test_size_ratio_without_config_uses_smallest_L(tmp_path):
    frames = an.load_sweep(write_fdlf_sweep(tmp_path / "s", blocks=(1,), seeds=(0,), sizes=(24, 32),
                                            configs=False))
    assert frames["results"]["train_size"].isna().all()
    assert set(an.size_ratios(frames)["L_train"]) == {24}
    assert an.size_table(frames)["rmse_sigma0.05_sem"].isna().all()  # one seed: no sem
    rows = [ln for ln in an.size_markdown(frames).splitlines() if ln.startswith("| Short-range simple")]
    assert len(rows) == 4 and not any("±" in ln for ln in rows)  # 3 metrics + ratio, values without ± sem


def test_partial_sweep(tmp_path):
    status = {"teacher=simple_local-blocks=2-seed=1": "pending", "teacher=complex_long-blocks=1-seed=0": "failed"}
    frames = an.load_sweep(write_fdlf_sweep(tmp_path / "radius", sizes=(32, 64), status=status))
    assert an.runs_status(frames) == {"done": 10, "pending": 1, "failed": 1, "total": 12}
    assert "teacher=simple_local-blocks=2-seed=1" not in set(frames["results"]["run"])  # pending rows dropped
    t = an.radius_table(frames).set_index(["teacher", "blocks"])
    assert t.at[("simple_local", 2), "n_seeds"] == 2 and t.at[("complex_long", 1), "n_seeds"] == 2
    mu, se = mean_sem([fdlf_value("rmse_sigma0.05", "simple_local", 2, s, 64) for s in (0, 2)])
    assert t.at[("simple_local", 2), "rmse_sigma0.05_mean"] == pytest.approx(mu, rel=1e-12)
    assert t.at[("simple_local", 2), "rmse_sigma0.05_sem"] == pytest.approx(se, rel=1e-12)
    md = an.radius_markdown(frames)
    assert "10/12 runs done (1 pending, 1 failed)" in md and "| 2–3 |" in md


def write_ising_sweep(root, betas=(0.6, 0.9, 1.0), seeds=(0, 1), sigmas=(1.0, 4.0), sizes=(32, 64)):
    root.mkdir(parents=True)
    runs, results = [], []
    for beta, seed in itertools.product(betas, seeds):
        key = f"beta_over_beta_c={beta}-seed={seed}"
        runs.append({"run": key, "status": "done", "wall_s": 1.0, "run_dir": key,
                     "beta_over_beta_c": beta, "seed": seed})
        for L, sigma in itertools.product(sizes, sigmas):
            row = {"run": key, "beta_over_beta_c": beta, "seed": seed, "step": 3, "receptive_radius": 6,
                   "L": L, "sigma": sigma}
            for r in (1, 6):
                ex = beta / (sigma * r) + 0.001 * L
                le = 0.5 * ex + 0.01 * seed
                row |= {f"response_exact_r{r}": ex + 0.002 * seed, f"response_exact_stderr_r{r}": 0.01 * (seed + 1),
                        f"response_learned_r{r}": le, f"response_ratio_r{r}": le / ex}
            row |= {"response_profile_error": 0.1, "score_rmse": 0.2, "score_rmse_mc_floor": 0.01}
            results.append(row)
    pd.DataFrame(runs).to_csv(root / "runs.csv", index=False)
    pd.DataFrame(results).to_csv(root / "results.csv", index=False)
    return root


def test_ising_table_exact(tmp_path):
    frames = an.load_sweep(write_ising_sweep(tmp_path / "ising"))
    assert an.response_radius(frames["results"]) == 6
    t = an.ising_table(frames)
    assert len(t) == 3 * 2 * 2 and set(t["r"]) == {6}
    row = t[(t["beta_over_beta_c"] == 0.9) & (t["sigma"] == 4.0) & (t["L"] == 64)].iloc[0]
    ex = [0.9 / 24 + 0.064 + 0.002 * s for s in (0, 1)]
    le = [0.5 * (0.9 / 24 + 0.064) + 0.01 * s for s in (0, 1)]
    assert row["exact"] == pytest.approx(np.mean(ex), rel=1e-12)
    assert row["exact_stderr"] == pytest.approx(math.sqrt(0.01 ** 2 + 0.02 ** 2) / 2, rel=1e-12)
    assert row["learned"] == pytest.approx(np.mean(le), rel=1e-12)
    assert row["learned_sem"] == pytest.approx(np.std(le, ddof=1) / math.sqrt(2), rel=1e-12)
    assert row["ratio"] == pytest.approx(np.mean(le) / np.mean(ex), rel=1e-12)
    assert row["n_seeds"] == 2
    t1 = an.ising_table(frames, r=1)
    assert set(t1["r"]) == {1}
    with pytest.raises(ValueError, match="r=3"):
        an.ising_table(frames, r=3)
    md = an.ising_markdown(frames)
    assert "| β/β_c | σ | L | exact ρ | learned ρ | ratio | n |" in md
    assert f"| 0.9 | 4 | 64 | {an.format_pm(row['exact'], row['exact_stderr'], 4)} | " in md
    assert f"{row['ratio']:.3f} | 2 |" in md
    fig = an.ising_figure(frames)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    assert all(ax.get_yscale() == "log" for ax in fig.axes if ax.get_visible())


def test_ising_beta_axis_converted(tmp_path):
    root = write_ising_sweep(tmp_path / "ising", betas=(0.9,), seeds=(0,))
    for name in ("runs.csv", "results.csv"):
        df = pd.read_csv(root / name).rename(columns={"beta_over_beta_c": "beta"})
        df["beta"] = df["beta"] * an.BETA_C
        df.to_csv(root / name, index=False)
    t = an.ising_table(an.load_sweep(root))
    assert t["beta_over_beta_c"].to_numpy() == pytest.approx(0.9)
    assert t["learned_sem"].isna().all() and (t["n_seeds"] == 1).all()


def write_generation(root):
    gen = []
    for teacher, seed, L in itertools.product(TEACHERS, (0, 1, 2), (24, 48, 64)):
        key = f"teacher={teacher}-blocks=1-seed={seed}"
        gen.append({"run": key, "teacher": teacher, "blocks": 1, "seed": seed, "L": L, "n_samples": 8,
                    "steps": 50, "sampler": "pc", "mae": 0.1 * (1 + TEACHERS.index(teacher)) + 0.01 * seed + L / 1e4,
                    "teacher_floor": 0.02 + L / 1e5, "mean": 0.1})
    pd.DataFrame(gen).to_csv(root / "generation.csv", index=False)


def test_generation_table(tmp_path):
    root = write_fdlf_sweep(tmp_path / "gen", blocks=(1,), sizes=(24, 48, 64))
    write_generation(root)
    frames = an.load_sweep(root)
    t = an.generation_table(frames).set_index(["teacher", "L"])
    mae = [0.1 * 2 + 0.01 * s + 64 / 1e4 for s in (0, 1, 2)]
    mu, se = mean_sem(mae)
    assert t.at[("simple_local", 64), "mae_mean"] == pytest.approx(mu, rel=1e-12)
    assert t.at[("simple_local", 64), "mae_sem"] == pytest.approx(se, rel=1e-12)
    assert t.at[("simple_local", 64), "teacher_floor_mean"] == pytest.approx(0.02064, rel=1e-12)
    md = an.generation_markdown(frames)
    assert "| teacher | MAE at L = 24 | MAE at L = 64 | teacher floor L = 24 | teacher floor L = 64 | n |" in md
    assert f"| Short-range simple (simple_local) | {an.format_pm(*mean_sem([0.2 + .01 * s + .0024 for s in (0, 1, 2)]))}" in md
    assert list(an.generation_table(frames)["teacher"].unique()) == ["simple_local", "complex_long"]


def test_draw_writes_files_and_skips(tmp_path, caplog):
    root = write_fdlf_sweep(tmp_path / "radius", sizes=(32, 64))
    with caplog.at_level(logging.WARNING, logger="sizetransfer.analysis"):
        paths = an.draw(root, ["radius", "ising", "generation"])
    assert sorted(p.relative_to(root).as_posix() for p in paths) == [
        "figures/radius.png", "tables/radius.csv", "tables/radius.md"]
    assert (root / "figures" / "radius.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(root / "tables" / "radius.csv").shape[0] == 4
    assert (root / "tables" / "radius.md").read_text() == an.radius_markdown(an.load_sweep(root))
    assert "skipping 'ising'" in caplog.text and "skipping 'generation'" in caplog.text
    assert not [p for p in root.rglob("*.tmp")]  # atomic writes leave no temporaries
    with pytest.raises(ValueError, match="kinds must be among"):
        an.draw(root, ["radius", "fig9"])
    with pytest.raises(FileNotFoundError, match="sweep_dir"):
        an.load_sweep(tmp_path / "nope")


def test_draw_all_kinds_with_generation(tmp_path):
    root = write_fdlf_sweep(tmp_path / "gen", blocks=(1,), sizes=(24, 64))
    write_generation(root)
    paths = an.draw(root)
    names = {p.name for p in paths}
    assert {"size.png", "generation.png", "generation.md"} <= names
    # one receptive radius, 2D teachers: no receptive-field, 3D or Ising figure for this sweep
    assert not {"radius.png", "hard_valid.csv", "ising.png"} & names


def test_scan_running_sweep(tmp_path):
    """No runs.csv yet: run dirs are read directly; a run without its final eval is pending."""
    root = tmp_path / "radius"
    for b, steps in ((1, [2, 4]), (2, [2])):
        d = root / f"teacher=medium_range-blocks={b}-seed=0"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 4}, "model": {"blocks": b},
                                                       "data": {"init_args": {"train_size": 8}}}))
        for step in steps:
            e = d / "eval" / f"step={step}"
            e.mkdir(parents=True)
            pd.DataFrame({"L": [8, 12], "rmse_sigma0.05": [0.5 + step, 0.6 + step],
                          "near_response_error": [0.1, 0.2], "far_response_error": [1.0, 1.0]}).to_csv(
                e / "metrics.csv", index=False)
            (e / "metrics.json").write_text(json.dumps({"receptive_radius": 2 * b + 2, "step": step}))
    (root / "figures").mkdir()  # not a run dir
    frames = an.load_sweep(root)
    assert an.runs_status(frames) == {"done": 1, "pending": 1, "failed": 0, "total": 2}
    res = frames["results"]
    assert list(res["rmse_sigma0.05"]) == [4.5, 4.6] and set(res["step"]) == {4}
    assert set(res["receptive_radius"]) == {4} and set(res["train_size"]) == {8}
    assert an.axes(frames) == ["teacher", "blocks", "seed"]
    t = an.radius_table(frames)
    assert t["rmse_sigma0.05_mean"].tolist() == [4.6]
    assert "1/2 runs done (1 pending)" in an.radius_markdown(frames)


def test_far_share_of_a_profile():
    """Σ over the far shells / Σ over r ≥ 1, NaN entries as 0, shells beyond r_max add nothing."""
    from sizetransfer.evaluation.far_share import FAR_SHARE_MIN, far_share

    profile = [5.0, 0.5, 0.25, 0.125, 0.0625, 0.0625]  # r = 0..5: off-diagonal sum 1
    assert far_share(profile, (4, 8)) == pytest.approx(0.125, rel=1e-15)
    assert far_share(profile, (1, 2)) == pytest.approx(0.75, rel=1e-15)
    assert far_share([1.0, 2.0, math.nan, 2.0], (3, 3)) == pytest.approx(0.5, rel=1e-15)
    assert far_share([1.0, 0.0, 0.0], (1, 2)) == 0.0  # no off-diagonal response: nothing to compare
    assert far_share(np.asarray(profile) * 7.0, (4, 8)) == pytest.approx(0.125, rel=1e-14)  # scale-free
    assert FAR_SHARE_MIN == 0.01


def test_far_error_blank_where_the_teacher_has_no_far_response(tmp_path):
    """Cells whose teacher's far shells hold < 1% of its response lose their far error in tables, changes
    and figures (a relative error there divides by ~0); the other metrics and teachers keep theirs."""
    root = write_fdlf_sweep(tmp_path / "radius", sizes=(32, 64), train_size=32)
    res = pd.read_csv(root / "results.csv")
    res["teacher_far_share"] = np.where(res["teacher"] == "simple_local", 0.002, 0.3)
    res.to_csv(root / "results.csv", index=False)
    frames = an.load_sweep(root)
    t = an.radius_table(frames)
    local, long = t[t["teacher"] == "simple_local"], t[t["teacher"] == "complex_long"]
    assert local["far_response_error_mean"].isna().all() and local["rmse_sigma0.05_mean"].notna().all()
    mu, _ = mean_sem([fdlf_value("far_response_error", "complex_long", 2, s, 64) for s in (0, 1, 2)])
    assert long["far_response_error_mean"].iloc[1] == pytest.approx(mu, rel=1e-12)
    md = an.radius_markdown(frames)
    far = md.split("**far-response relative error**")[1]
    assert "| Short-range simple (simple_local) | — | — | — | 3 |" in far
    assert "far shells hold < 1%" in far and "nan" not in md
    size = an.size_markdown(frames)
    assert "| Short-range simple (simple_local), B=1 | — | — | 3 |" in size.split("**far-response relative error**")[1]
    assert np.isnan(an.size_table(frames).query("teacher == 'simple_local'")["far_response_error_mean"]).all()
    an.radius_figure(frames, tmp_path / "radius.png")  # blank cells draw nothing, and do not fail
    assert (tmp_path / "radius.png").stat().st_size > 0


def test_far_share_filled_from_profiles_of_older_runs(tmp_path):
    """A run evaluated before metrics.csv had teacher_far_share: the loader computes it from the teacher
    profile of metrics.json (per L), so its far error is judged like a new run's."""
    root = tmp_path / "radius"
    for teacher, tail in (("simple_local", 1e-4), ("medium_range", 0.2)):
        e = root / f"teacher={teacher}-blocks=1-seed=0" / "eval" / "step=4"
        e.mkdir(parents=True)
        (e.parent.parent / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 4}}))
        pd.DataFrame({"L": [16, 32], "rmse_sigma0.05": [0.2, 0.2], "near_response_error": [0.3, 0.3],
                      "far_response_error": [0.9, 0.8]}).to_csv(e / "metrics.csv", index=False)
        profiles = [{"L": L, "r": list(range(7)), "teacher": [2.0, 0.6, 0.3, 0.1 - tail, 0.0, tail / 2, tail / 2],
                     "student": [1.0] * 7} for L in (16, 32)]
        (e / "metrics.json").write_text(json.dumps({"target": "fdlf", "receptive_radius": 4, "step": 4,
                                                    "config": {"far": [5, 8]}, "profiles": profiles}))
    frames = an.load_sweep(root)
    share = frames["results"].set_index("run")["teacher_far_share"]
    assert share["teacher=simple_local-blocks=1-seed=0"].tolist() == pytest.approx([1e-4, 1e-4], rel=1e-9)
    assert share["teacher=medium_range-blocks=1-seed=0"].tolist() == pytest.approx([0.2, 0.2], rel=1e-9)
    t = an.radius_table(frames).set_index("teacher")
    assert math.isnan(t.at["simple_local", "far_response_error_mean"])
    assert t.at["medium_range", "far_response_error_mean"] == 0.8
