"""The typed arguments of every mmpc command: one dataclass per command, shared groups declared once.

A field carries its type, default and help (``arg`` puts them in ``field(metadata=...)``), and
``add_arguments`` turns a dataclass into argparse options, in the manner of the Hugging Face
examples' dataclass arguments. ``transformers.HfArgumentParser`` does the same, but importing
transformers costs seconds at every command's start; the few lines here are all mmpc needs.

The shared groups (``CatalogArgs``, ``RecipeArgs``, ``WorkdirArgs``, ``TrackingArgs``) are base
classes: a command's dataclass inherits the ones it takes, and its ``--help`` lists their options
under the group's title.
The same dataclasses parse ``mmpc ...``, ``python -m flows ...`` and the MLproject entry points.
"""

from __future__ import annotations

import argparse
import os
import shlex
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal, TypeVar

from mmpc.locations import DEFAULT_WORKDIR

T = TypeVar("T")
WEEKLY = "0 3 * * 1"  # Mondays, 03:00: the retrain deployment's default schedule


class ArgumentError(ValueError):
    """A command-line value that does not parse; reported as bad input (exit 2)."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are bad input like any other: one ``error:`` line and
    exit 2 through the commands' one error mapping, not argparse's usage block."""

    def error(self, message: str) -> typing.NoReturn:
        raise ArgumentError(f"{self.prog}: {message} (see {self.prog} --help)")


def arg(help: str, default: Any = MISSING, *, factory: Any = None, **meta: Any) -> Any:
    """A field with its command-line form in its metadata: ``help``, and optionally ``positional``,
    ``metavar``, ``append`` (a repeatable option, one item each
    time; a list otherwise takes several items after one option), ``split`` (list items are
    shell-split, so ``--models "a b"`` is ``--models a b``: MLproject passes one string) and
    ``one_of`` (exactly one of the fields sharing that name must be given). A list field is declared
    with ``field`` itself and the same metadata (ruff takes any other call for a mutable default)."""
    default_kw = {"default_factory": factory} if factory else {"default": default}
    return field(**default_kw, metadata={"help": help, **meta})


def _options(f: Field, hint: Any) -> dict[str, Any]:
    """argparse keywords for one field: type, default, help, choices from a Literal, list arity."""
    meta = f.metadata
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if type(hint) is types.UnionType or typing.get_origin(hint) is typing.Union:  # X | None -> X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    kw: dict[str, Any] = {"help": meta["help"]}
    if hint is bool:
        return {**kw, "action": "store_true"}
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    if typing.get_origin(hint) is list:
        (hint,) = typing.get_args(hint)
        kw.update({"action": "append"} if meta.get("append") else {"nargs": "*"})
    if typing.get_origin(hint) is Literal:
        kw["choices"] = typing.get_args(hint)
        hint = type(kw["choices"][0])
    kw["type"] = hint
    if default is not MISSING:
        kw["default"] = default
        if meta.get("positional"):
            kw["nargs"] = "?"
    elif not meta.get("positional"):
        kw["required"] = True
    unset = default is MISSING or default is None or default is False or default == ""
    if not unset and "default" not in kw["help"]:
        kw["help"] += f" (default: {default})"
    return {k: v for k, v in kw.items() if v is not None}


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option (or positional) per field of the dataclass ``cls``; the fields of a shared group
    (a base class with its own ``GROUP`` title) appear under that title."""
    hints, groups, exclusive = typing.get_type_hints(cls), {}, {}
    for f in fields(cls):
        owner = next(c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {}))
        title = vars(owner).get("GROUP") if owner is not cls else None
        if title and title not in groups:
            groups[title] = parser.add_argument_group(title)
        target = groups[title] if title else parser
        kw = _options(f, hints[f.name])
        if one_of := f.metadata.get("one_of"):
            if one_of not in exclusive:
                exclusive[one_of] = target.add_mutually_exclusive_group(required=True)
            target, kw["required"] = exclusive[one_of], False
        if f.metadata.get("positional"):
            target.add_argument(f.name, **kw)
        else:
            target.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw)


def from_namespace(cls: type[T], namespace: argparse.Namespace) -> T:
    """The dataclass ``cls`` from parsed arguments (``split`` lists shell-split and flattened)."""
    values = {}
    for f in fields(cls):
        value = getattr(namespace, f.name)
        if f.metadata.get("split") and value is not None:
            value = [word for item in value for word in words(item)] or None
        values[f.name] = value
    return cls(**values)


def words(text: str | None) -> list[str]:
    """``"a=1 b='x y'"`` -> ``["a=1", "b=x y"]``; an unbalanced quote is bad input."""
    try:
        return shlex.split(text or "")
    except ValueError as exc:
        raise ArgumentError(f"{text!r}: {exc}") from None


# -- shared groups ---------------------------------------------------------------------------------
CATALOG_HELP = "catalog folder or s3://bucket/prefix (mirrored under WORKDIR/catalogs)"
REFS = "NAME=VERSION"  # a registered version by number or alias: flaubert=3, camembert=@candidate


@dataclass(kw_only=True)
class CatalogArgs:
    GROUP = "catalog"
    catalog: str = arg(CATALOG_HELP)


@dataclass(kw_only=True)
class RecipeArgs:
    GROUP = "recipe"
    recipe: str = arg(
        "a recipe name in mlproject/, several composed with + (demo+fast), or a YAML path", "demo"
    )
    set: list[str] | None = field(
        default=None,
        metadata={
            "help": "override a recipe value, e.g. models.flaubert.train.epochs=2 (repeatable)",
            "append": True,
            "metavar": "KEY=VALUE",
        },
    )
    overrides: str = arg('recipe overrides in one shell-quoted string: "key.path=value ..."', "")
    device: str = arg("cpu, cuda or auto in place of the recipe's device", "")
    drop_invalid: bool = arg(
        "leave invalid catalog rows out (logged, and listed in data/dropped_rows.csv of each run) "
        "instead of stopping; same as --set catalog.drop_invalid=true",
        False,
    )

    def recipe_overrides(self) -> dict[str, Any]:
        from mmpc.recipe import parse_overrides

        out = parse_overrides([*words(self.overrides), *(self.set or [])])
        if self.drop_invalid:
            out["catalog.drop_invalid"] = True
        if self.device:
            out["device"] = self.device
        return out

    def load_recipe(self):
        """The recipe with every override; a bad key or value is a RecipeError naming its path."""
        from mmpc.recipe import load_recipe

        return load_recipe(self.recipe, self.recipe_overrides())


def _workdir() -> str:
    return os.environ.get("MMPC_WORKDIR", DEFAULT_WORKDIR)


@dataclass(kw_only=True)
class WorkdirArgs:
    GROUP = "tracking"
    workdir: str = arg(
        "checkpoints and mirrored catalogs; the MLflow store and artifacts too unless a tracking URI "
        f"is set (default: $MMPC_WORKDIR or {DEFAULT_WORKDIR})",
        factory=_workdir,
    )


@dataclass(kw_only=True)
class TrackingArgs(WorkdirArgs):
    GROUP = "tracking"
    tracking_uri: str | None = arg(
        "MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else a SQLite store in WORKDIR)",
        None,
    )

    @contextmanager
    def tracking_env(self) -> Iterator[None]:
        """Within: ``--tracking-uri`` is ``MLFLOW_TRACKING_URI``, which the steps and the processes
        they start read."""
        before = os.environ.get("MLFLOW_TRACKING_URI")
        if self.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        try:
            yield
        finally:
            if self.tracking_uri and before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            elif self.tracking_uri:
                os.environ["MLFLOW_TRACKING_URI"] = before

    def reach_tracking(self) -> str:
        """Point MLflow at the store and make one request, so that an unreachable server stops a long
        command before its first step rather than in it; returns the URI."""
        from mlflow.tracking import MlflowClient

        from mmpc import tracking

        uri = tracking.configure(self.workdir)
        MlflowClient().search_experiments(max_results=1)
        return uri


# -- one dataclass per command -----------------------------------------------------------------------
@dataclass(kw_only=True)
class DemoCatalogArgs:
    out: str = arg("folder to write the catalog into", positional=True)
    size: int = arg("products", 3000)
    seed: int = arg("random seed", 0)


@dataclass(kw_only=True)
class CheckArgs(TrackingArgs, RecipeArgs, CatalogArgs):
    catalog: str = arg(CATALOG_HELP, positional=True)
    manifest: str | None = arg("also write the split manifest into this folder", None)


@dataclass(kw_only=True)
class TrainArgs(TrackingArgs, RecipeArgs, CatalogArgs):
    model: str = arg(
        "a model name of the recipe (flaubert, camembert, seresnext, tfidf, fusion, ...)", positional=True
    )
    inputs: list[str] | None = field(
        default=None,
        metadata={
            "help": "a model reading others (fusion): registered versions (or @alias) of its inputs; "
            "default: each input's @candidate",
            "metavar": REFS,
            "split": True,
        },
    )
    epochs: float = arg("train this many epochs instead of the recipe's (0: the recipe's)", 0)
    force: bool = arg("train even if a version with the same inputs exists", False)

    def recipe_overrides(self) -> dict[str, Any]:
        out = super().recipe_overrides()
        if self.epochs:
            if self.epochs != int(self.epochs) or self.epochs < 0:
                raise ArgumentError(f"epochs: expected a whole number of epochs, got {self.epochs:g}")
            out[f"models.{self.model}.train.epochs"] = int(self.epochs)
        return out


@dataclass(kw_only=True)
class StackArgs(TrackingArgs, RecipeArgs, CatalogArgs):
    models: list[str] | None = field(
        default=None,
        metadata={
            "help": "level-1 versions to stack (default: every recipe model @candidate)",
            "metavar": REFS,
            "split": True,
        },
    )
    promote: Literal["true", "false"] = arg(
        "false: register as @candidate only (MLproject's parameter; --no-promote does the same)", "true"
    )
    no_promote: bool = arg("register as @candidate only", False)
    force: bool = arg("publish even if the same ensemble exists", False)

    @property
    def promotes(self) -> bool:
        return self.promote == "true" and not self.no_promote


@dataclass(kw_only=True)
class EvaluateArgs(TrackingArgs, RecipeArgs, CatalogArgs):
    model: str = arg("registered model: mmpc-<name> or <name>")
    version: str | None = arg("version number", None, one_of="ref")
    alias: str | None = arg("alias, e.g. champion or candidate", None, one_of="ref")
    split: Literal["train", "valid", "stack", "test", "all"] = arg("the catalog's split to score", "test")
    worst: int = arg("how many worst confusions to list", 10)
    out: str | None = arg("also write the figures and CSVs into this folder", None)


@dataclass(kw_only=True)
class PromoteArgs(TrackingArgs):
    version: str = arg("the version to promote", positional=True)
    model: str = arg("registered model, without the mmpc- prefix", "ensemble")
    force: bool = arg("promote even if evaluated on another test split (it must still load)", False)


@dataclass(kw_only=True)
class RollbackArgs(TrackingArgs):
    model: str = arg("registered model, without the mmpc- prefix", "ensemble")


@dataclass(kw_only=True)
class RelocateArgs(WorkdirArgs):
    """A work folder's own store only: a tracking server is no work folder's."""


@dataclass(kw_only=True)
class RetrainArgs(TrackingArgs, RecipeArgs, CatalogArgs):
    models: list[str] | None = field(
        default=None, metadata={"help": "restrict to these recipe models", "metavar": "NAME", "split": True}
    )
    parallel: int = arg("level-1 trainings at once on this machine", 1)
    level1_deployment: str | None = arg("train level-1 models as runs of this deployment", None)
    force: bool = arg("train and publish even if nothing changed", False)

    def flow_parameters(self) -> dict[str, Any]:
        """The ``retrain`` flow's parameters (also a served deployment's)."""
        return {
            "catalog": self.catalog,
            "recipe": self.recipe,
            "workdir": self.workdir,
            "models": self.models,
            "overrides": self.recipe_overrides() or None,
            "parallel": self.parallel,
            "level1_deployment": self.level1_deployment,
            "force": self.force,
        }


@dataclass(kw_only=True)
class ServeArgs(RetrainArgs):
    name: str = arg("deployment name", "mmpc-retrain")
    cron: str = arg("cron schedule, weekly by default", WEEKLY)
    timezone: str = arg("the schedule's time zone", "UTC")
    paused: bool = arg("create the schedule paused", False)


@dataclass(kw_only=True)
class ScoreArgs(TrackingArgs):
    input: str = arg(
        "products to score: a catalog folder, a .csv or .parquet file (photos under its folder), "
        "or s3://bucket/prefix of either",
        positional=True,
    )
    output: str = arg("folder for the Parquet parts and _manifest.json")
    model: str = arg("registered model, without the mmpc- prefix", "ensemble")
    version: str = arg("version number or @alias", "@champion")
    chunk_rows: int = arg("products per chunk and per Parquet part", 1000)
    top_k: int = arg("codes and probabilities kept per product", 3)
    device: Literal["auto", "cpu", "cuda"] = arg("auto: the GPU when there is one, else the CPU", "auto")
    threads: int = arg("CPU threads for the models (0: every core)", 0)
    engine: Literal["local", "spark"] = arg(
        "local: this process, chunk by chunk (resumable); spark: mlflow.pyfunc.spark_udf on a Spark master",
        "local",
    )
    spark_master: str = arg("with --engine spark: local[N] or a cluster's master URL", "local[2]")


@dataclass(kw_only=True)
class ScoreFlowArgs(TrackingArgs, CatalogArgs):
    root: str = arg("scoring root: the index of scored products and one dated folder per run")
    model: str = arg("registered model, without the mmpc- prefix", "ensemble")
    version: str = arg("version number or @alias", "@champion")
    engine: Literal["local", "spark"] = arg("local or spark (local[2])", "local")

    def flow_parameters(self) -> dict[str, Any]:
        """The ``score`` flow's parameters (also its nightly deployment's)."""
        return {
            "catalog": self.catalog,
            "root": self.root,
            "workdir": self.workdir,
            "model": self.model,
            "version": self.version,
            "engine": self.engine,
        }


@dataclass(kw_only=True)
class UiUrlArgs(TrackingArgs):
    ui: str | None = arg("the MLflow UI's address (default: $MLFLOW_UI_URL or the tracking server)", None)
    experiment: str | None = arg("experiment name (default: the mmpc experiment updated last)", None)
