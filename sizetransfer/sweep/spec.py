"""Sweep configs: reading and checking one, its grid points (runs), the ``--override`` options it was
launched with, and its W&B sweep definition."""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sizetransfer.atomic import atomic_write


#: Keys of a sweep config and whether they are required.
SPEC_KEYS = {"name": True, "fit_config": True, "grid": True, "root": False, "overrides": False,
             "tied": False, "when": False, "figures": False, "description": False}


#: Analysis kinds a sweep may draw (``sizetransfer.analysis``).
FIGURE_KINDS = ("size", "radius", "ising", "generation", "hard_valid")


#: The grid axis that sets both ``seed_everything`` and ``data.init_args.seed``.
SEED_AXIS = "seed"


#: Packaged sweep configs (``configs/sweeps`` of the repository).
PACKAGE_SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"


#: In the sweep directory: the ``--override`` options of the first launch, and the aggregate W&B run id.
LAUNCH_FILE, AGGREGATE_ID_FILE = "launch.yaml", "aggregate_wandb_id"


class SweepError(ValueError):
    """A bad sweep config or option (raised before any run starts)."""


@dataclass
class Run:
    """One grid point: its key, axis values, fit arguments and run directory."""

    key: str
    values: dict[str, Any]          # short axis name -> value
    args: list[str]                 # fit options (after --config)
    run_dir: Path
    max_steps: int = 0
    status: str = "pending"         # done | failed | pending
    wall_s: float = float("nan")
    returncode: int | None = None

    def finished(self) -> bool:
        return (self.run_dir / "eval" / f"step={self.max_steps}" / "metrics.csv").is_file()


@dataclass
class SweepSpec:
    name: str
    fit_config: str
    grid: dict[str, list]
    root: str = "runs/sweeps"
    overrides: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    description: str = ""
    tied: dict[str, str] = field(default_factory=dict)   # fit option -> the grid option whose value it takes
    when: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # grid option -> value -> fit options

    @property
    def sweep_dir(self) -> Path:
        return Path(self.root) / self.name

    @property
    def axes(self) -> dict[str, str]:
        """Short axis name -> option path."""
        return {short_name(path): path for path in self.grid}


def short_name(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def find_sweep(name: str) -> Path:
    """``name`` if it is a file, else ``./configs/sweeps/name[.yaml]`` or the packaged copy."""
    if Path(name).is_file():
        return Path(name)
    for folder in (Path.cwd() / "configs" / "sweeps", PACKAGE_SWEEPS):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise SweepError(f"--config: no sweep config {name!r} (a file, or a name in configs/sweeps/: "
                     f"{sorted(p.stem for p in PACKAGE_SWEEPS.glob('*.yaml'))})")


def _format(value: Any) -> str:
    """Value as a fit option / run-key string: YAML flow style for lists, plain for scalars."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def load_spec(path: str | os.PathLike, *, root: str | None = None,
              overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and check a sweep config (SweepError naming the key and what is allowed)."""
    path = find_sweep(str(path))
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep config must be a mapping with keys {sorted(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)}")
    missing = [k for k, required in SPEC_KEYS.items() if required and k not in raw]
    if missing:
        raise SweepError(f"{path}: missing key(s) {missing}")
    name = str(raw["name"])
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise SweepError(f"name must be a non-empty folder name without '/', '\\' or spaces, got {name!r}")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid:
        raise SweepError("grid must be a non-empty mapping option path -> list of values")
    for option, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{option} must be a non-empty list of values, got {values!r}")
        if len({_format(v) for v in values}) != len(values):
            raise SweepError(f"grid.{option} has repeated values: {values}")
    shorts = [short_name(p) for p in grid]
    if len(set(shorts)) != len(shorts):
        raise SweepError(f"grid axes must have distinct last components (they name the runs), got {list(grid)}")
    figures = list(raw.get("figures") or [])
    bad = [f for f in figures if f not in FIGURE_KINDS]
    if bad:
        raise SweepError(f"figures: unknown kind(s) {bad}; allowed: {list(FIGURE_KINDS)}")
    fixed = dict(raw.get("overrides") or {})
    fixed.update(overrides or {})
    clash = sorted(set(fixed) & set(grid))
    if clash:
        raise SweepError(f"option(s) {clash} appear both in grid and overrides")
    tied = raw.get("tied") or {}
    if not isinstance(tied, dict):
        raise SweepError(f"tied must be a mapping fit option -> grid option (e.g. model.skip_radius: model.radius), "
                         f"got {tied!r}")
    for option, source in tied.items():
        if source not in grid or source == SEED_AXIS:
            raise SweepError(f"tied.{option}: {source!r} is not an option of the grid; allowed: "
                             f"{[g for g in grid if g != SEED_AXIS]}")
        if option in grid or option in fixed or option == SEED_AXIS:
            raise SweepError(f"tied.{option}: the option is already set by the grid or the overrides")
    when = _check_when(raw.get("when") or {}, grid, fixed, tied)
    return SweepSpec(name=name, fit_config=str(raw["fit_config"]), grid={k: list(v) for k, v in grid.items()},
                     root=str(root if root is not None else raw.get("root", "runs/sweeps")),
                     overrides=fixed, figures=figures, description=str(raw.get("description", "")),
                     tied={str(k): str(v) for k, v in tied.items()}, when=when)


def _check_when(when: Any, grid: dict, fixed: dict, tied: dict) -> dict[str, dict[str, dict[str, Any]]]:
    """Check ``when: {<grid option>: {<one of its values>: {<fit option>: <value>, ...}}}``: fit options set
    only at the grid points where a grid option has that value (e.g. the oracle control's learning rate).
    Values are keyed by their run-key form (``_format``)."""
    example = "e.g. when: {model.objective: {exact_score: {model.lr: 1.0e-3}}}"
    if not isinstance(when, dict):
        raise SweepError(f"when must be a mapping grid option -> value -> fit options ({example}), got {when!r}")
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    set_by: dict[str, str] = {}  # fit option -> the grid option whose cases set it
    for source, cases in when.items():
        if source not in grid or source == SEED_AXIS:
            raise SweepError(f"when.{source}: not an option of the grid; allowed: "
                             f"{[g for g in grid if g != SEED_AXIS]}")
        if not isinstance(cases, dict) or not cases:
            raise SweepError(f"when.{source} must be a non-empty mapping value -> fit options ({example}), got {cases!r}")
        values = {_format(v) for v in grid[source]}
        checked[source] = {}
        for value, options in cases.items():
            if _format(value) not in values:
                raise SweepError(f"when.{source}.{value}: not a value of grid.{source}; allowed: {grid[source]}")
            if not isinstance(options, dict) or not options:
                raise SweepError(f"when.{source}.{value} must be a non-empty mapping fit option -> value ({example}), "
                                 f"got {options!r}")
            for option in options:
                if option in grid or option in fixed or option in tied or option == SEED_AXIS:
                    raise SweepError(f"when.{source}.{value}.{option}: the option is already set by the grid, the "
                                     f"overrides or tied; a grid point's option must have one source")
                if set_by.setdefault(option, source) != source:
                    raise SweepError(f"when.{source}.{value}.{option}: the option is also set under "
                                     f"when.{set_by[option]}; a grid point's option must have one source")
            checked[source][_format(value)] = dict(options)
    return checked


def expand(spec: SweepSpec) -> list[Run]:
    """The grid points in order (cartesian product, last axis fastest). A ``tied`` option takes its grid
    option's value at every point, and a ``when`` option is set at the points where its grid option has
    the given value; neither enters the run key."""
    runs = []
    options = list(spec.grid)
    for combo in itertools.product(*(spec.grid[o] for o in options)):
        values = {short_name(o): v for o, v in zip(options, combo)}
        key = "-".join(f"{short_name(o)}={_format(v)}" for o, v in zip(options, combo))
        args = ["--config", spec.fit_config]
        point = dict(zip(options, combo))
        tied = [(option, point[source]) for option, source in spec.tied.items()]
        when = [item for source, cases in spec.when.items()
                for item in cases.get(_format(point[source]), {}).items()]
        for option, value in list(spec.overrides.items()) + list(point.items()) + tied + when:
            if option == SEED_AXIS:
                args += ["--seed_everything", _format(value), "--data.init_args.seed", _format(value)]
            else:
                args += [f"--{option}", _format(value)]
        run_dir = spec.sweep_dir / key
        runs.append(Run(key=key, values=values, args=args + ["--run.dir", str(run_dir)], run_dir=run_dir))
    return runs


def wandb_definition(spec: SweepSpec, config_path: str) -> dict:
    """The grid as a W&B sweep definition (method grid); the agent's command trains one point."""
    return {
        "name": spec.name,
        "description": spec.description or f"sizetransfer sweep {spec.name} (fit config {spec.fit_config})",
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {short: {"values": list(spec.grid[path])} for short, path in spec.axes.items()},
        "command": ["${env}", "${interpreter}", "-m", "sizetransfer.sweep", "--config", config_path,
                    "--point", "${args}"],
    }


def _parse_point(spec: SweepSpec, extra: list[str]) -> dict[str, Any]:
    """``--<axis>=<value>`` arguments (a W&B agent's ``${args}``) -> axis values."""
    values: dict[str, Any] = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise SweepError(f"--point takes --<axis>=<value> arguments, got {arg!r}")
        name, value = arg[2:].split("=", 1)
        if name not in spec.axes:
            raise SweepError(f"--point: unknown axis {name!r}; axes: {list(spec.axes)}")
        values[name] = yaml.safe_load(value)
    missing = [a for a in spec.axes if a not in values]
    if missing:
        raise SweepError(f"--point: missing axis value(s) {missing}")
    return values


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SweepError(f"--override takes option=value (e.g. trainer.max_steps=300), got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def remembered_overrides(spec: SweepSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The ``--override`` options this sweep runs with: those of its first launch (``launch.yaml`` in
    the sweep directory) when ``given`` is empty; SweepError when ``given`` differs from them (the
    finished runs were trained with the first ones)."""
    path = spec.sweep_dir / LAUNCH_FILE
    if not path.is_file():
        return given
    first = (yaml.safe_load(path.read_text()) or {}).get("overrides") or {}
    if given and given != first:
        shown = " ".join(f"--override {k}={_format(v)}" for k, v in first.items()) or "no --override"
        raise SweepError(f"--override: this sweep ({spec.sweep_dir}) was launched with {shown}; run it with "
                         f"the same (or none: they are remembered), or give another --root for a new sweep")
    if first and not given:
        print(f"sweep {spec.name}: using the options of its first launch ({path}): "
              + " ".join(f"{k}={_format(v)}" for k, v in first.items()), flush=True)
    return first


def remember_launch(spec: SweepSpec, overrides: dict[str, Any], argv: list[str]) -> None:
    """Write ``launch.yaml`` (the ``--override`` options, and the command for the record) at a sweep's
    first training launch."""
    path = spec.sweep_dir / LAUNCH_FILE
    if not path.is_file():
        command = ["python", "-m", "sizetransfer.sweep", *argv]
        atomic_write(path, yaml.safe_dump({"overrides": overrides, "command": " ".join(command)}, sort_keys=False))

