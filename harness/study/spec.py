"""Study specs: what a study varies, at which budget, and what it minimises.

A study is a file ``studies/NAME.toml`` (preset, axes, sampler, seeds, budgets, objective, pruner, baselines) over
``ablations/AXIS.toml`` files (what an axis changes and why, the config field(s), values or range). Budgets that a
study file leaves out come from ``studies/_budgets.toml``. This module turns them into ``StudySpec``/``Axis``
values and a trial's parameters into its ``DIConfig``; it runs nothing (``harness.study.workers`` does).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.method.config import DIConfig
from harness.method.overrides import apply_overrides
from harness.method.presets import preset

BUDGETS = ("smoke", "cpu", "gpu")
# What a study can minimise: the final value of one registered metric in the primary feature space, or the toy's
# MMD². FID is the default for image studies: it is a distance between fitted Gaussians, so it grows when the
# samples leave the data (fidelity) *and* when they cover less of it (diversity); KID alone stayed flat in
# lr_sweep while recall fell from 0.245 to 0.155, and a search on KID rewarded that collapse.
STUDY_METRICS = ("fid", "kid", "mmd2")  # what a study minimises (not a generator objective: harness.method.objectives)
SAMPLERS = ("grid", "tpe")
PRUNERS = ("median", "hyperband", "none")
SPEC_ROOT_ENV = "HARNESS_SPECS"


class SpecError(ValueError):
    """A study or ablation spec is missing or invalid (one-line message)."""


@dataclass(frozen=True)
class Axis:
    name: str
    kind: str  # categorical | float
    description: str = ""
    why: str = ""
    field: str | None = None
    values: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # label -> config overrides (categorical)
    low: float | None = None
    high: float | None = None
    log: bool = False

    def overrides(self, value) -> dict[str, Any]:
        """Config overrides for one value (a categorical label, or a number for a float axis)."""
        if self.kind == "categorical":
            return dotted(self.values[str(value)])
        return {self.field: float(value)}


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    preset: str
    axes: tuple[Axis, ...]
    sampler: str
    objective: str
    pruner: str
    baselines: tuple[str, ...]
    budgets: dict[str, dict[str, Any]]
    question: str = ""
    base: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides every trial starts from ([base])


def spec_root() -> Path:
    """Directory holding ``studies/`` and ``ablations/``: $HARNESS_SPECS, else the checkout beside the package."""
    env = os.environ.get(SPEC_ROOT_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2]


SHARED_BUDGETS = "_budgets"  # studies/_budgets.toml: the budgets a study file does not define itself


def available_studies(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((root or spec_root()) / "studies").glob("*.toml") if not p.stem.startswith("_"))


def shared_budgets(root: Path | None = None) -> dict[str, dict[str, Any]]:
    path = (root or spec_root()) / "studies" / f"{SHARED_BUDGETS}.toml"
    return tomllib.loads(path.read_text()).get("budget", {}) if path.is_file() else {}


def parse_axis(name: str, raw: dict) -> Axis:
    kind = raw.get("kind")
    if kind == "categorical":
        values = raw.get("values")
        if isinstance(values, list):
            if not raw.get("field"):
                raise SpecError(f"axis {name}: a list of values needs `field`")
            values = {str(v).lower() if isinstance(v, bool) else str(v): {raw["field"]: v} for v in values}
        if not isinstance(values, dict) or not values:
            raise SpecError(f"axis {name}: categorical axes need `values` (a list, or a table label -> overrides)")
        return Axis(name=name, kind=kind, description=raw.get("description", ""), why=raw.get("why", ""),
                    field=raw.get("field"), values={str(k): dict(v) for k, v in values.items()})
    if kind == "float":
        for key in ("field", "low", "high"):
            if key not in raw:
                raise SpecError(f"axis {name}: float axes need `{key}`")
        return Axis(name=name, kind=kind, description=raw.get("description", ""), why=raw.get("why", ""),
                    field=raw["field"], low=float(raw["low"]), high=float(raw["high"]), log=bool(raw.get("log", False)))
    raise SpecError(f"axis {name}: kind must be 'categorical' or 'float', got {kind!r}")


def load_axis(name: str, root: Path | None = None) -> Axis:
    path = (root or spec_root()) / "ablations" / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.toml")))
        raise SpecError(f"unknown ablation axis {name!r}; available: {known}")
    return parse_axis(name, tomllib.loads(path.read_text()))


def load_study(name: str, root: Path | None = None) -> StudySpec:
    root = root or spec_root()
    path = root / "studies" / f"{name}.toml"
    if not path.is_file():
        raise SpecError(f"unknown study {name!r}; available: {', '.join(available_studies(root)) or '(none)'}")
    raw = tomllib.loads(path.read_text())
    inline = raw.get("inline_axes", {})
    axes = tuple(parse_axis(a, inline[a]) if a in inline else load_axis(a, root) for a in raw.get("axes", []))
    if not axes:
        raise SpecError(f"study {name}: `axes` is empty")
    sampler = raw.get("sampler", "grid")
    if sampler not in SAMPLERS:
        raise SpecError(f"study {name}: sampler must be 'grid' or 'tpe', got {sampler!r}")
    if sampler == "grid" and any(a.kind != "categorical" for a in axes):
        raise SpecError(f"study {name}: a grid study needs categorical axes only")
    # a study's own [budget.NAME] block replaces the shared one whole (no key-by-key mixing)
    budgets = {**shared_budgets(root), **raw.get("budget", {})}
    missing = [b for b in BUDGETS if b not in budgets]
    if missing:
        raise SpecError(f"study {name}: missing budget(s) {', '.join(missing)}")
    if raw.get("objective", "fid") not in STUDY_METRICS:
        raise SpecError(f"study {name}: objective must be one of {', '.join(STUDY_METRICS)} (mmd2: toy only)")
    if raw.get("pruner", "median") not in PRUNERS:
        raise SpecError(f"study {name}: pruner must be median, hyperband or none")
    return StudySpec(name=raw.get("name", name), description=raw.get("description", ""), preset=raw["preset"], axes=axes,
                     sampler=sampler, objective=raw.get("objective", "fid"), pruner=raw.get("pruner", "median"),
                     baselines=tuple(raw.get("baselines", [])), budgets=budgets, question=raw.get("question", ""),
                     base=dict(raw.get("base", {})))


def objective_key(spec: StudySpec) -> str:
    """The evaluation key the study minimises: ``fid_vgg`` for an image study's fid, ``mmd2`` for the toy."""
    from harness.evaluation.feature_spaces import PRIMARY_SPACE

    return spec.objective if spec.objective == "mmd2" else f"{spec.objective}_{PRIMARY_SPACE}"


def objective_name(spec: StudySpec, budget: str) -> str:
    """The objective as the dashboard shows it, with its unit, space and n."""
    from harness.evaluation.feature_spaces import PRIMARY_SPACE
    from harness.evaluation.scoring import METRICS

    if spec.objective == "mmd2":
        return "final MMD² of the toy generator (RBF kernels)"
    budget_fields = dotted({k: v for k, v in spec.budgets[budget].items() if k not in ("seeds", "trials")})
    n = apply_overrides(preset(spec.preset), {k: _as_override(v) for k, v in budget_fields.items()}).eval.final_n
    return f"final {METRICS[spec.objective].header(PRIMARY_SPACE)}, n={n}"


def build_config(spec: StudySpec, budget: str, params: dict[str, Any], seed: int, threads: int = 0) -> DIConfig:
    """The DIConfig of one trial: the study's preset, the budget's scale, the study's [base] overrides, then each
    axis's overrides."""
    b = spec.budgets[budget]
    cfg = preset(spec.preset, seed=seed, threads=threads)
    # Every budget key but seeds/trials is a config field (rounds, batch_size, ckpt_every_s, the eval group...).
    overrides: dict[str, Any] = dotted({k: v for k, v in b.items() if k not in ("seeds", "trials")})
    overrides.update(dotted(spec.base))
    for axis in spec.axes:
        overrides.update(axis.overrides(params[axis.name]))
    return apply_overrides(cfg, {k: _as_override(v) for k, v in overrides.items()})


def dotted(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A TOML table of overrides with a group as a sub-table (``eval = {every = 50, n = 2000}``) as dotted field names
    (``eval.every``, ``eval.n``), the form ``apply_overrides`` takes."""
    out: dict[str, Any] = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _as_override(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def grid_cells(spec: StudySpec, seeds: int) -> list[dict[str, Any]]:
    """Every categorical value combination x seed, as Optuna params."""
    labels = [list(a.values) for a in spec.axes]
    return [{**{a.name: v for a, v in zip(spec.axes, combo)}, "seed": s}
            for combo in itertools.product(*labels) for s in range(seeds)]


def select_cells(spec: StudySpec, seeds: int, only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The grid cells with any of the axis values in ``only`` (all cells when empty); an unknown value is an error."""
    unknown = [v for v in only if not any(v in a.values for a in spec.axes if a.kind == "categorical")]
    if unknown:
        raise SpecError(f"study {spec.name}: --only {', '.join(unknown)}: not a value of any of its axes")
    return [c for c in grid_cells(spec, seeds) if cell_selected(spec, c, only)]


def cell_selected(spec: StudySpec, cell: dict[str, Any] | None, only: tuple[str, ...], seeds: int | None = None) -> bool:
    """Whether a grid cell (None: a trial still choosing its params) has one of the axis values in ``only``
    (every cell when ``only`` is empty) and, with ``seeds``, a seed below it."""
    return (cell is not None and (not only or any(cell.get(a.name) in only for a in spec.axes))
            and (seeds is None or cell["seed"] < seeds))


def cell_key(params: dict[str, Any]) -> str:
    """Stable directory name of a trial's run: axis values and seed (floats rounded to 4 significant digits)."""
    parts = []
    for k, v in sorted(params.items()):
        if k == "seed":
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    key = "_".join(parts) + f"_seed{params['seed']}"
    return re.sub(r"[^A-Za-z0-9_.=:+-]", "-", key)


def variant_label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k != "seed")


def all_value_configs(spec: StudySpec, budget: str) -> list[DIConfig]:
    """One config per axis value (others at their first value): validates the whole spec before any work."""
    base = {a.name: (next(iter(a.values)) if a.kind == "categorical" else a.low) for a in spec.axes}
    configs = []
    for a in spec.axes:
        for v in (a.values if a.kind == "categorical" else [a.low, a.high]):
            configs.append(build_config(spec, budget, {**base, a.name: v}, 0))
    return configs
