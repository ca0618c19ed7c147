"""Recipes: YAML files in mlproject/ parsed into typed dataclasses.

A recipe holds every hyper-parameter of a pipeline; it is logged whole into every run. Unknown keys
are errors that name their path, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmpc import kinds
from mmpc.catalog import SplitSpec

RECIPE_DIR = Path(__file__).resolve().parent.parent / "mlproject"
OVERLAY_DIR = RECIPE_DIR / "overlays"  # partial recipes laid over a whole one: ``--recipe demo+fast``


class RecipeError(ValueError):
    """A recipe key or value is wrong; the message names its dotted path."""


# A model section of a recipe: the config dataclass its kind registers (mmpc/kinds/).
ModelConfig = Any


@dataclass
class CatalogConfig:
    images: Literal["required", "optional"] = "required"
    # A broken row (malformed record, bad id, duplicate productid, empty title, unknown label, missing
    # image) stops the run before any training; true leaves such rows out and records which.
    drop_invalid: bool = False
    splits: SplitSpec = field(default_factory=SplitSpec)  # the catalog's own type: one home for the defaults


@dataclass
class StackingConfig:
    """Level 2. The defaults are the paper's LightGBM stacker (its tuned LGBMClassifier settings,
    in LightGBM's native names); a recipe's ``params`` mapping replaces them as a whole."""

    params: dict[str, Any] = field(default_factory=lambda: dict(PAPER_LGB_PARAMS))
    num_boost_round: int = 1000
    early_stopping_rounds: int = 100
    folds: int = 5


# The paper's stacker: LGBMClassifier defaults (learning rate 0.1, unlimited depth) with its
# randomized-search optimum. Its `subsample` came without `subsample_freq`, so bagging was off;
# bagging_freq 0 keeps that behaviour explicit.
PAPER_LGB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 22,
    "max_depth": -1,
    "min_data_in_leaf": 125,
    "min_sum_hessian_in_leaf": 10.0,
    "feature_fraction": 0.5284213741879101,
    "bagging_fraction": 0.3080033455431848,
    "bagging_freq": 0,
    "lambda_l1": 0.1,
    "lambda_l2": 20.0,
}


@dataclass
class EnsembleConfig:
    top_k: int = 3
    batch_size: int = 64
    torch_threads: int | None = None


# The steps of a retrain by the names of their Prefect tasks (flows/retrain.py): what a recipe's
# ``timeouts.steps`` may name.
RETRAIN_STEPS = (
    "check-catalog",
    "train-model",
    "train-model-on-pool",
    "stack-and-publish",
    "evaluate",
    "promote",
)


@dataclass
class TimeoutsConfig:
    """Time limits of a retrain, in seconds; null is no limit. ``retrain_flow_seconds`` counts from
    when the run holds the one retrain slot; ``slot_wait_seconds`` bounds the wait for that slot
    while another retrain holds it (null waits as long as it takes). A step's limit is its entry in
    ``steps`` (a limit per attempt: ``train-model`` is each model's training), else ``task_seconds``."""

    retrain_flow_seconds: float | None = None
    slot_wait_seconds: float | None = None
    task_seconds: float | None = None
    steps: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.steps) - set(RETRAIN_STEPS))
        if unknown:
            raise ValueError(f"steps: unknown step(s) {unknown}; allowed: {list(RETRAIN_STEPS)}")
        self.steps = {k: _seconds(f"steps.{k}", v) for k, v in self.steps.items()}
        for name in ("retrain_flow_seconds", "slot_wait_seconds", "task_seconds"):
            if getattr(self, name) is not None:
                setattr(self, name, _seconds(name, getattr(self, name)))

    def for_step(self, step: str) -> float | None:
        return self.steps.get(step, self.task_seconds)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name}: expected a number of seconds above 0, got {value!r}")
    return float(value)


@dataclass
class Recipe:
    name: str = "recipe"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    stacking: StackingConfig = field(default_factory=StackingConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def split_spec(self) -> SplitSpec:
        return self.catalog.splits

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            raise RecipeError(f"recipe {self.name!r} has no model {name!r}; it has {sorted(self.models)}")
        return self.models[name]


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{path or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{path or 'recipe'}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # a dataclass's own check (split fractions that do not sum to 1, ...)
        raise RecipeError(f"{path or 'recipe'}: {exc}") from exc


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for arg in candidates:
            try:
                return _convert(arg, value, path)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {candidates}")
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{path}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "2e-5" as a string
        except ValueError:
            pass
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _models(data: Any) -> dict[str, ModelConfig]:
    if not isinstance(data, dict):
        raise RecipeError(f"models: expected a mapping of model name -> config, got {data!r}")
    out: dict[str, ModelConfig] = {}
    for name, cfg in data.items():
        if not isinstance(cfg, dict) or cfg.get("kind") not in kinds.REGISTRY:
            raise RecipeError(f"models.{name}.kind: must be one of {kinds.names()}")
        out[name] = _build(kinds.get(cfg["kind"]).config, cfg, f"models.{name}")
    return out


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted}: {key} is not a mapping")
    node[keys[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["models.flaubert.train.epochs=1"]`` -> ``{"models.flaubert.train.epochs": 1}`` (YAML values)."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r}: expected key.path=value")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def parse_refs(items: list[str] | None) -> dict[str, str]:
    """``["flaubert=3", "camembert=@candidate"]`` -> ``{"flaubert": "3", "camembert": "@candidate"}``:
    registered versions by number or alias, as every command line takes them."""
    out = {}
    for item in items or []:
        name, sep, ref = item.partition("=")
        if not sep or not name or not ref:
            raise RecipeError(f"expected NAME=VERSION or NAME=@alias, got {item!r}")
        out[name] = ref
    return out


def resolve_path(recipe: str | Path, folder: Path = RECIPE_DIR, what: str = "recipe") -> Path:
    """A recipe is a YAML path, or the name of one in mlproject/ (``demo`` -> mlproject/demo.yaml);
    an overlay the same in mlproject/overlays/."""
    path = Path(recipe)
    if path.suffix not in (".yaml", ".yml"):
        path = folder / f"{recipe}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise RecipeError(f"{what} {recipe!r} not found (looked for {path}); known {what}s: {known}")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _compose(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file over the recipes its ``defaults:`` list names, in order."""
    if path in seen:
        raise RecipeError(f"{path}: defaults form a cycle through {[str(p) for p in seen]}")
    data = _read_yaml(path)
    defaults = data.pop("defaults", None) or []
    if not isinstance(defaults, list):
        raise RecipeError(f"{path}: defaults: expected a list of recipe names, got {defaults!r}")
    merged: dict[str, Any] = {}
    for ref in defaults:
        merged = _merge(merged, _compose(resolve_path(str(ref), path.parent), (*seen, path)))
    return _merge(merged, data)


def compose(spec: str | Path) -> dict[str, Any]:
    """``demo+fast``: the demo recipe with mlproject/overlays/fast.yaml laid over it (any number of
    overlays, in order; each a name or a YAML path). The result's name is the whole spec."""
    base, *overlays = str(spec).split("+")
    data = _compose(resolve_path(base))
    for ref in overlays:
        data = _merge(data, _compose(resolve_path(ref, OVERLAY_DIR, "overlay")))
    if overlays:
        data["name"] = f"{data.get('name', Path(base).stem)}+{'+'.join(overlays)}"
    return data


def from_dict(data: dict[str, Any]) -> Recipe:
    data = dict(data)
    models = _models(data.pop("models", {}) or {})
    recipe = _build(Recipe, data, "")
    recipe.models = models
    for name, cfg in models.items():
        try:
            kinds.of(cfg).validate(name, cfg, models, f"models.{name}")
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
    return recipe


def load_recipe(recipe: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A recipe (``demo``, ``demo+fast``, a YAML path), with ``key.path=value`` overrides on top."""
    data = compose(recipe)
    for key, value in (overrides or {}).items():
        _set(data, key, value)
    return from_dict(data)
