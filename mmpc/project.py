"""MLflow Projects entry points: what ``mlflow run . -e <entry> -P ...`` runs (see ``MLproject``).

``mlflow run`` creates a run before it starts an entry point and hands its id over in
``MLFLOW_RUN_ID``. Left there, the first ``mlflow.start_run`` of the step would adopt that run
whatever experiment it lives in, and every later one would open a fresh run: a step's params,
metrics and model would land in the project's experiment (``Default`` unless ``--experiment-name``
was given) instead of the catalog's, and a pipeline's steps would lose their parent. So mmpc keeps
its own runs, exactly as ``mmpc train`` / ``python -m flows retrain`` make them, and nests them
under the project run:

- ``MLFLOW_RUN_ID`` is taken out of the environment;
- ``MLFLOW_RUN_CONTEXT`` adds ``mlflow.parentRunId`` (and ``mmpc.project_run_id``) to each run the
  step opens without a parent of its own (a pipeline's step runs keep the pipeline run as parent);
- when the step ends, the project run gets the outcome: the step's run id, the registered
  version, its test figures as metrics.

The project run is thus never empty (``mlflow run`` logs the ``-P`` parameters and the source
version; mmpc adds the outcome), and nothing is left RUNNING: ``mlflow run`` ends the project run
with the entry point's exit status. Run with ``--experiment-name mmpc/<catalog folder name>`` to see
the project run with its steps nested in the MLflow UI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmpc import tags as tag
from mmpc.locations import DEFAULT_WORKDIR

_RUN_ID, _CONTEXT = "MLFLOW_RUN_ID", "MLFLOW_RUN_CONTEXT"


@contextmanager
def project_run() -> Iterator[str | None]:
    """Within: runs opened without a parent nest under the ``mlflow run`` run (None outside one)."""
    run_id = os.environ.pop(_RUN_ID, None)
    if not run_id:
        yield None
        return
    previous = os.environ.get(_CONTEXT)
    context = {**json.loads(previous or "{}"), "mlflow.parentRunId": run_id, tag.PROJECT_RUN_ID: run_id}
    os.environ[_CONTEXT] = json.dumps(context)
    try:
        yield run_id
    finally:
        if previous is None:
            os.environ.pop(_CONTEXT, None)
        else:
            os.environ[_CONTEXT] = previous


def record_outcome(run_id: str | None, tags: Mapping[str, str], metrics: Mapping[str, float]) -> None:
    """The step's outcome on the project run: where its results are, and its headline figures."""
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


def overrides(
    text: str = "", *, model: str | None = None, epochs: float = 0, device: str = ""
) -> dict[str, Any]:
    """Recipe overrides from entry-point parameters: ``"k=v k2=v2"`` (shell-quoted values allowed),
    plus the typed ``epochs`` (0: the recipe's) and ``device`` ("": the recipe's)."""
    from mmpc.recipe import RecipeError, parse_overrides

    out = parse_overrides(shlex.split(text or ""))
    if epochs:
        if epochs != int(epochs) or epochs < 0:
            raise RecipeError(f"parameter epochs: expected a whole number of epochs, got {epochs:g}")
        if model is None:
            raise RecipeError("parameter epochs applies to one model's entry point")
        out[f"models.{model}.train.epochs"] = int(epochs)
    if device:
        out["device"] = device
    return out


def refs(text: str) -> dict[str, str]:
    """``"flaubert=3 camembert=@candidate"`` -> ``{"flaubert": "3", "camembert": "@candidate"}``."""
    from mmpc.recipe import parse_refs

    return parse_refs(shlex.split(text or ""))


def resolve_versions(wanted: Mapping[str, str]) -> dict[str, str]:
    """Version numbers of the named registered models; a missing one is an error naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mmpc import tracking
    from mmpc.recipe import RecipeError

    out = {}
    for name, ref in wanted.items():
        try:
            out[name] = str(tracking.resolve(name, ref).version)
        except MlflowException as exc:
            raise RecipeError(
                f"{tracking.registered_name(name)} has no version {ref!r} in the registry at "
                f"{mlflow.get_registry_uri()}: train it first ({exc.message})"
            ) from None
    return out


def train(args: argparse.Namespace) -> dict[str, Any]:
    from mmpc import pipeline, tracking
    from mmpc.recipe import FusionModelConfig, load_recipe

    recipe = load_recipe(
        args.recipe, overrides(args.overrides, model=args.model, epochs=args.epochs, device=args.device)
    )
    cfg = recipe.model(args.model)
    catalog = pipeline.open_catalog(args.catalog, recipe)
    tracking.configure(args.workdir)
    wanted = refs(args.inputs)
    if isinstance(cfg, FusionModelConfig):  # by default the inputs' current candidates
        wanted = {n: wanted.get(n, "@candidate") for n in [*cfg.text, cfg.image]}
    inputs = resolve_versions(wanted)
    with project_run() as parent:
        result = pipeline.train_level1(catalog, recipe, args.model, Path(args.workdir), input_versions=inputs)
        if result is None:  # a non-zero torchrun rank: rank 0 reports
            return {}
        record_outcome(
            parent,
            {
                tag.STEP_RUN_ID: result.run_id,
                tag.REGISTERED_MODEL: tracking.registered_name(result.name),
                tag.REGISTERED_VERSION: result.version,
                **{tag.input_version(n): v for n, v in inputs.items()},
            },
            {k: v for k, v in result.metrics.items() if k in ("valid_macro_f1", "test_macro_f1")},
        )
    return {"model": result.name, "version": result.version, "run_id": result.run_id, **result.metrics}


def stack(args: argparse.Namespace) -> dict[str, Any]:
    from mmpc import pipeline, tracking
    from mmpc.recipe import RecipeError, load_recipe

    if args.promote not in ("true", "false"):
        raise RecipeError(f"parameter promote: expected true or false, got {args.promote!r}")
    recipe = load_recipe(args.recipe, overrides(args.overrides, device=args.device))
    catalog = pipeline.open_catalog(args.catalog, recipe)
    tracking.configure(args.workdir)
    wanted = refs(args.models) or {n: "@candidate" for n in recipe.models}
    versions = resolve_versions(wanted)
    with project_run() as parent:
        result = pipeline.stack_and_publish(
            catalog, recipe, Path(args.workdir), versions, promote=args.promote == "true"
        )
        record_outcome(
            parent,
            {
                tag.STEP_RUN_ID: result.run_id,
                tag.REGISTERED_MODEL: tracking.registered_name("ensemble"),
                tag.REGISTERED_VERSION: result.version,
                tag.PROMOTED: str(result.promoted),
                **{tag.member(n): v for n, v in versions.items()},
            },
            {"test_macro_f1": result.scores["stack"]},
        )
    print(result.table)
    return {"version": result.version, "run_id": result.run_id, "promoted": result.promoted}


def common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True)
    p.add_argument("--recipe", default="demo")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR)
    p.add_argument("--overrides", default="", help='recipe overrides, "key.path=value ..."')
    p.add_argument("--device", default="", help="cpu, cuda or auto; empty: the recipe's")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmpc.project", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="entry", required=True)
    p = sub.add_parser("train", help="one level-1 model (text, image or fusion)")
    p.add_argument("model")
    p.add_argument("--epochs", type=float, default=0, help="0: the recipe's")
    p.add_argument("--inputs", default="", help="fusion: NAME=VERSION|@alias ... (default: @candidate)")
    common_arguments(p)
    p.set_defaults(func=train)
    p = sub.add_parser("stack", help="stack registered level-1 versions and publish mmpc-ensemble")
    p.add_argument("--models", default="", help="NAME=VERSION|@alias ... (default: every model @candidate)")
    p.add_argument("--promote", default="true", help="true or false")
    common_arguments(p)
    p.set_defaults(func=stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mmpc.cli import reporting_errors

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        print(json.dumps(args.func(args), indent=1, default=str))
        return 0

    # The error mapping of every mmpc command: bad input exit 2, an unreachable server exit 3.
    return reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
