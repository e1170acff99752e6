"""notebooks/analysis.ipynb executes top to bottom (nbclient, kernel python3 of this environment) on a
tiny sweep produced by the real runner (``sizetransfer.sweep.main``: 2 teachers × 2 seeds, 2 steps)."""
import os
import time
from pathlib import Path

import pytest
import yaml

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from sizetransfer import analysis  # noqa: E402
from sizetransfer.sweep import main  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"

@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, tiny_run):
    """runs/sweeps-like root with one 4-run FDLF sweep, aggregated and drawn by the runner."""
    tiny = tiny_run.options({
        "trainer.max_steps": 2, "checkpoint.every_n_train_steps": 1,
        "trainer.log_every_n_steps": tiny_run.DROP, "trainer.accelerator": tiny_run.DROP,
        # Table 5 generation callback of the size-sweep config, shrunk: its rows feed the `generation` kind
        "generation.sizes": [12, 16], "generation.n_samples": 2, "generation.steps": 4,
        "generation.floor_repeats": 1, "generation.progress": False})
    root = tmp_path_factory.mktemp("sweeps")
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "fit_config": "fdlf_size_sweep.yaml",
        "grid": {"data.init_args.teacher": ["simple_local", "medium_range"], "seed": [0, 1]},
        "overrides": tiny, "figures": ["size", "generation"]}))
    old = os.getcwd()
    os.chdir(root)  # fit configs are looked up like `fit --config`; W&B offline files stay in tmp
    try:
        start = time.perf_counter()
        assert main(["--config", str(spec), "--root", str(root), "--no-wandb", "--threads", "1"]) == 0
        print(f"tiny sweep: {time.perf_counter() - start:.1f} s")
    finally:
        os.chdir(old)
    return root / "tiny"


@pytest.mark.slow
def test_runner_outputs_feed_the_analysis(tiny_sweep):
    frames = analysis.load_sweep(tiny_sweep)
    assert analysis.runs_status(frames) == {"done": 4, "pending": 0, "failed": 0, "total": 4}
    assert analysis.axes(frames) == ["teacher", "seed"]
    t = analysis.size_table(frames)
    assert sorted(t["L"].unique()) == [12, 16] and (t["n_seeds"] == 2).all()
    assert list(t["teacher"].unique()) == ["simple_local", "medium_range"]
    assert set(analysis.size_ratios(frames)["L_train"]) == {12}  # from the runs' config.yaml
    g = analysis.generation_table(frames)
    assert sorted(g["L"].unique()) == [12, 16] and (g["n_seeds"] == 2).all()
    for name in ("figures/size.png", "figures/generation.png", "tables/size.md", "tables/generation.md"):
        assert (tiny_sweep / name).is_file(), name
    # a size sweep (one receptive radius, 2D teachers) has no receptive-field or 3D figure
    assert analysis.available_kinds(frames) == ["size", "generation"]
    assert "same receptive radius" in analysis.missing_data(frames, "radius")
    assert "2D teachers" in analysis.missing_data(frames, "hard_valid")


@pytest.mark.slow
def test_notebook_executes(tiny_sweep, monkeypatch):
    monkeypatch.setenv("SIZETRANSFER_SWEEP_DIR", str(tiny_sweep))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{tiny_sweep} - 4/4 runs done" in text
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("Size sweep (Fig. 1)" in m for m in markdown)
    assert not any("Receptive-field sweep" in m or "Hard-valid" in m for m in markdown)  # not this sweep's
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(markdown)
    assert any("Generation-level local observables" in m for m in markdown)
    assert "ising: skipped" in text and "radius: skipped" in text and "hard_valid: skipped" in text
