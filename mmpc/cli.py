"""``mmpc``: the command line, and the entry layer every front end goes through.

Each command is a typed dataclass of ``mmpc.arguments`` and a function taking it. ``main`` parses
with those dataclasses and runs the command under the one error mapping (``reporting_errors``);
``python -m flows`` (the Prefect flows) and the MLproject entry points go through the same ``main``.
No Prefect here: scheduled pipelines live in ``flows/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmpc import arguments as a


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow logs a traceback for each database error it re-raises (a locked SQLite store among them):
    # the error itself reaches ``reporting_errors``, which reports it once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def cmd_demo_catalog(args: a.DemoCatalogArgs) -> int:
    from mmpc.demo_catalog import write_demo_catalog

    path = write_demo_catalog(args.out, size=args.size, seed=args.seed)
    print(f"demo catalog: {path}")
    return 0


def cmd_check(args: a.CheckArgs) -> int:
    recipe = args.load_recipe()
    from mmpc import pipeline
    from mmpc.models import pretrained

    catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)  # a folder, or s3:// mirrored
    if len(catalog.dropped):
        print(f"left out {len(catalog.dropped)} invalid row(s):")
        print(catalog.dropped.to_string(index=False))
    counts = catalog.class_counts()
    print(counts.to_string())
    print(f"\n{len(catalog.frame)} products, {int(catalog.frame['has_image'].sum())} with an image")
    print(f"fingerprint {catalog.fingerprint()}")
    if args.manifest:
        paths = catalog.write_manifest(args.manifest)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    for name, cfg in recipe.models.items():
        pretrained.check(name, cfg)
    return 0


def _inputs(recipe: Any, name: str, wanted: dict[str, str]) -> dict[str, str]:
    """The registered versions a model reading others trains on: those named, else @candidate."""
    from mmpc import kinds, project

    cfg = recipe.model(name)
    wanted = {n: wanted.get(n, "@candidate") for n in kinds.of(cfg).inputs(cfg)} | wanted
    return project.resolve_versions(wanted)


def cmd_train(args: a.TrainArgs) -> int:
    from mmpc.recipe import parse_refs

    # Bad input fails before the heavy imports and the catalog.
    recipe, wanted = args.load_recipe(), parse_refs(args.inputs)
    recipe.model(args.model)
    from mmpc import pipeline, project, tracking
    from mmpc.training import distributed

    distributed.init_from_env()  # under torchrun: one process per GPU (or CPU gloo processes)
    try:
        catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)
        tracking.configure(args.workdir)
        inputs = _inputs(recipe, args.model, wanted)
        with project.project_run() as parent:  # under `mlflow run`: nested in the project run
            result = pipeline.train_level1(
                catalog, recipe, args.model, Path(args.workdir), input_versions=inputs, reuse=not args.force
            )
            if result is not None:
                project.record_training(parent, result, inputs)
    finally:
        distributed.shutdown()
    if result is None:  # a non-zero rank: rank 0 reports
        return 0
    summary = {"model": result.name, "version": result.version, "run_id": result.run_id}
    print(json.dumps({**summary, "reused": result.reused, **result.metrics}, indent=1))
    return 0


def cmd_stack(args: a.StackArgs) -> int:
    from mmpc.recipe import parse_refs

    recipe, wanted = args.load_recipe(), parse_refs(args.models)  # bad input fails before the catalog
    from mmpc import pipeline, project, tracking

    catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)
    tracking.configure(args.workdir)
    versions = project.resolve_versions(wanted or {n: "@candidate" for n in recipe.models})
    with project.project_run() as parent:
        result = pipeline.stack_and_publish(
            catalog, recipe, Path(args.workdir), versions, promote=args.promotes, reuse=not args.force
        )
        project.record_stacking(parent, result, versions)
    print(result.table)
    decision = "promoted" if result.promoted else "not promoted"
    print(f"mmpc-ensemble v{result.version}: {decision} ({result.reason})")
    return 0


def cmd_evaluate(args: a.EvaluateArgs) -> int:
    recipe = args.load_recipe()
    from mmpc import evaluation, pipeline
    from mmpc.models.batching import resolve_device

    catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)
    result = evaluation.run_evaluation(
        args.model,
        args.version if args.version is not None else args.alias,
        catalog,
        args.split,
        Path(args.workdir),
        device=resolve_device(recipe.device),
        worst=args.worst,
        out=Path(args.out) if args.out else None,
    )
    print(evaluation.table(result))
    return 0


def cmd_promote(args: a.PromoteArgs) -> int:
    from mmpc import promotion, tracking

    tracking.configure(args.workdir)
    print(promotion.promote(args.model, args.version, force=args.force))
    return 0


def cmd_rollback(args: a.RollbackArgs) -> int:
    from mmpc import promotion, tracking

    tracking.configure(args.workdir)
    print(promotion.rollback(args.model))
    return 0


def cmd_relocate(args: a.RelocateArgs) -> int:
    from mmpc import workfolder

    print(workfolder.relocate(args.workdir))
    return 0


def cmd_score(args: a.ScoreArgs) -> int:
    from mmpc import scoring

    manifest = scoring.score(
        args.input,
        args.output,
        args.workdir,
        args.model,
        args.version,
        args.chunk_rows,
        args.top_k,
        device=args.device,
        threads=args.threads or None,
        engine=args.engine,
        spark_master=args.spark_master,
    )
    print(json.dumps({k: manifest[k] for k in ("model", "version", "rows", "run_id")}))
    return 0


def cmd_ui_url(args: a.UiUrlArgs) -> int:
    from mmpc import tracking

    uri = tracking.configure(args.workdir)
    experiment = tracking.find_experiment(args.experiment)
    if experiment is None:
        raise a.ArgumentError(f"no experiment {args.experiment or 'mmpc/*'} in {uri}: run a retrain first")
    url = tracking.runs_list_link(experiment.experiment_id, args.ui)
    if url is None:
        raise a.ArgumentError("no MLflow UI address: pass --ui URL or set MLFLOW_UI_URL")
    tracking.ensure_runs_view(experiment)  # an experiment made before mmpc saved its view
    print(url)
    return 0


@dataclass(frozen=True)
class Command:
    """A command: its typed arguments (a dataclass of ``mmpc.arguments``), what runs it, its help."""

    args: type
    run: Callable[[Any], int]
    help: str


COMMANDS: dict[str, Command] = {
    "demo-catalog": Command(
        a.DemoCatalogArgs, cmd_demo_catalog, "write the generated demo catalog (Rakuten layout)"
    ),
    "check": Command(
        a.CheckArgs, cmd_check, "validate a catalog; print class counts per split and its fingerprint"
    ),
    "train": Command(a.TrainArgs, cmd_train, "train, evaluate and register one level-1 model"),
    "stack": Command(a.StackArgs, cmd_stack, "stack registered level-1 versions and publish mmpc-ensemble"),
    "evaluate": Command(
        a.EvaluateArgs,
        cmd_evaluate,
        "score a registered version (level-1 or ensemble) on a catalog split; logs an evaluation run",
    ),
    "promote": Command(
        a.PromoteArgs, cmd_promote, "move @champion to a registered version (same test split required)"
    ),
    "rollback": Command(
        a.RollbackArgs, cmd_rollback, "give @champion back to the version that held it before"
    ),
    "relocate": Command(
        a.RelocateArgs,
        cmd_relocate,
        "point a copied or moved work folder's MLflow store at the folder it is in now",
    ),
    "score": Command(
        a.ScoreArgs, cmd_score, "score a catalog, CSV or Parquet file with a registered version, into Parquet"
    ),
    "ui-url": Command(
        a.UiUrlArgs, cmd_ui_url, "print the MLflow UI's address of an experiment's runs list, scores shown"
    ),
}


DESCRIPTION = "mmpc: multimodal product classification, trained, tracked and published with MLflow"


def build_parser(
    commands: Mapping[str, Command] = COMMANDS, prog: str = "mmpc", description: str | None = None
) -> argparse.ArgumentParser:
    parser = a.Parser(prog=prog, description=description or DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in commands.items():
        a.add_arguments(sub.add_parser(name, help=command.help, description=command.help), command.args)
    return parser


def main(
    argv: list[str] | None = None,
    commands: Mapping[str, Command] = COMMANDS,
    prog: str = "mmpc",
    setup_logging: Callable[[bool], None] = _setup_logging,
    description: str | None = None,
) -> int:
    """Parse ``argv`` into a command's dataclass and run it; bad input is exit 2, an unreachable
    server exit 3, each with one ``error:`` line (see ``reporting_errors``)."""

    def call() -> int:
        namespace = build_parser(commands, prog, description).parse_args(argv)
        setup_logging(namespace.verbose)
        command = commands[namespace.command]
        args = a.from_namespace(command.args, namespace)
        with args.tracking_env() if isinstance(args, a.TrackingArgs) else nullcontext():
            return command.run(args)

    return reporting_errors(call)


# Bad input, the user's to fix: exit 2. Named by module, so that mapping an error imports nothing (an
# exception of a class exists only once its module is loaded).
BAD_INPUT = (
    ("mmpc.arguments", "ArgumentError"),
    ("mmpc.recipe", "RecipeError"),
    ("mmpc.models.pretrained", "CheckpointError"),
    ("mmpc.catalog", "CatalogError"),
    ("mmpc.locations", "LocationError"),
    ("mmpc.models.store", "ModelFolderError"),
    ("mmpc.evaluation", "EvaluationError"),
    ("mmpc.promotion", "PromotionError"),
    ("mmpc.workfolder", "WorkFolderError"),
    ("mmpc.scoring.errors", "ScoringError"),
)


def is_bad_input(exc: BaseException) -> bool:
    return any(
        module in sys.modules and isinstance(exc, getattr(sys.modules[module], name))
        for module, name in BAD_INPUT
    )


def reporting_errors(call: Callable[[], int]) -> int:
    """``call()``, with bad input reported as one ``error:`` line and exit 2, and an unreachable
    tracking server or artifact store as one line naming it and exit 3; anything else is a bug and
    keeps its traceback."""
    try:
        return call()
    except Exception as exc:
        if is_bad_input(exc):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from mmpc.outages import outage_message

        if (message := outage_message(exc)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
