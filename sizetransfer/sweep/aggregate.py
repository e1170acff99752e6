"""A sweep's aggregates: ``runs.csv``, ``results.csv``, ``generation.csv`` (rows from
:func:`sizetransfer.analysis.load.collect_runs`), its figures and tables, and its aggregate W&B run."""
from __future__ import annotations

import csv
import io
import json
import secrets
from pathlib import Path

from sizetransfer.atomic import atomic_write
from sizetransfer.sweep.spec import AGGREGATE_ID_FILE, Run, SweepSpec
from sizetransfer.sweep.runner import _timing_file


def _atomic_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def aggregate(spec: SweepSpec, runs: list[Run]) -> dict[str, Path]:
    """Write ``runs.csv``, ``results.csv`` and (if any run has one) ``generation.csv``; returns their paths."""
    from sizetransfer.analysis.load import collect_runs

    times = json.loads(_timing_file(spec).read_text()) if _timing_file(spec).is_file() else {}
    axes = list(spec.axes)
    run_rows = []
    for run in runs:
        if run.finished():
            run.status = "done"
        elif run.status != "failed" and times.get(run.key, {}).get("status") == "failed":
            run.status = "failed"
        wall = run.wall_s if run.wall_s == run.wall_s else times.get(run.key, {}).get("wall_s", "")
        status = run.status if run.status in ("done", "failed") else "pending"
        run_rows.append({"run": run.key, "status": status, "wall_s": wall, "run_dir": str(run.run_dir),
                         **run.values})
    collected = collect_runs(((run.key, run.values, run.run_dir, run.max_steps) for run in runs
                              if run.status == "done"), axes)
    (result_cols, result_rows), (gen_cols, gen_rows) = collected["results"], collected["generation"]
    out = spec.sweep_dir
    paths = {"runs": out / "runs.csv", "results": out / "results.csv", "generation": out / "generation.csv"}
    # never lose what an earlier aggregation found: a run it counted as done keeps its rows when this
    # one cannot read them (its directory gone, or no final evaluation at this config's max_steps)
    done_now = {row["run"] for row in run_rows if row["status"] == "done"}
    kept = set()
    if paths["runs"].is_file():
        previous = {row["run"]: row for row in _read_csv(paths["runs"]) if row.get("status") == "done"}
        kept = set(previous) - done_now
        current = {row["run"] for row in run_rows}
        run_rows = ([previous[row["run"]] if row["run"] in kept else row for row in run_rows]
                    + [row for key, row in previous.items() if key not in current])
    result_rows = _merge_previous(paths["results"], result_rows, result_cols, kept)
    gen_rows = _merge_previous(paths["generation"], gen_rows, gen_cols, kept)
    _atomic_csv(paths["runs"], ["run", "status", "wall_s", "run_dir"] + axes, run_rows)
    _atomic_csv(paths["results"], result_cols, result_rows)
    if gen_rows:
        _atomic_csv(paths["generation"], gen_cols, gen_rows)
    else:
        del paths["generation"]
    return paths


def _merge_previous(path: Path, rows: list[dict], columns: list[str], kept: set[str]) -> list[dict]:
    """``rows`` plus the rows of ``path`` (an earlier aggregation) of the runs in ``kept``; ``columns``
    grows by the earlier file's columns."""
    if not kept or not path.is_file():
        return rows
    earlier = [row for row in _read_csv(path) if row.get("run") in kept]
    for row in earlier:
        for c in row:
            if c not in columns:
                columns.append(c)
    return rows + earlier


def draw_figures(spec: SweepSpec) -> list[Path]:
    if not spec.figures:
        return []
    from sizetransfer import analysis

    return list(analysis.draw(spec.sweep_dir, spec.figures))


def log_to_wandb(spec: SweepSpec, tables: dict[str, Path], figures: list[Path]) -> Path | None:
    """An aggregate W&B run (group = sweep name, job type ``aggregate``) with the tables and figures;
    offline unless W&B is configured; the same W&B run on every aggregation of this sweep (its id in
    ``aggregate_wandb_id``). Returns the run's directory."""
    from sizetransfer.tracking import log_aggregate_run

    id_file = spec.sweep_dir / AGGREGATE_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)  # a new W&B run id (8 hex digits)
    spec.sweep_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id + "\n")
    table_rows = {f"sweep/{name}": _read_csv(path) for name, path in tables.items()}
    return log_aggregate_run(
        run_id=run_id, name=f"{spec.name}/aggregate", group=spec.name, directory=spec.sweep_dir,
        config={"sweep": spec.name, "fit_config": spec.fit_config, "grid": spec.grid, "overrides": spec.overrides,
                "tied": spec.tied, "when": spec.when},
        tables={key: (list(rows[0]), rows) for key, rows in table_rows.items() if rows},
        images={f"sweep/figures/{path.stem}": path for path in figures if path.suffix == ".png"})

