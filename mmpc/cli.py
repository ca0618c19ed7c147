"""``mmpc``: the command line (no Prefect here; scheduled pipelines live in ``flows/``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mmpc.locations import DEFAULT_WORKDIR


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _recipe(args):
    from mmpc.recipe import load_recipe, parse_overrides

    overrides = parse_overrides(args.set)
    if getattr(args, "drop_invalid", False):
        overrides["catalog.drop_invalid"] = True
    return load_recipe(args.recipe, overrides)


def _versions(items: list[str] | None) -> dict[str, str]:
    from mmpc.recipe import parse_refs

    return parse_refs(items)


def cmd_demo_catalog(args) -> int:
    from mmpc.demo_catalog import write_demo_catalog

    path = write_demo_catalog(args.out, size=args.size, seed=args.seed)
    print(f"demo catalog: {path}")
    return 0


def cmd_check(args) -> int:
    from mmpc import pipeline
    from mmpc.models import pretrained

    recipe = _recipe(args)
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


def cmd_train(args) -> int:
    from mmpc import pipeline, tracking
    from mmpc.training import distributed

    distributed.init_from_env()  # under torchrun: one process per GPU (or CPU gloo processes)
    recipe, wanted = _recipe(args), _versions(args.inputs)
    catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)
    tracking.configure(args.workdir)
    inputs = {n: str(tracking.resolve(n, ref).version) for n, ref in wanted.items()}
    try:
        result = pipeline.train_level1(
            catalog, recipe, args.model, Path(args.workdir), input_versions=inputs, reuse=not args.force
        )
    finally:
        distributed.shutdown()
    if result is None:  # a non-zero rank: rank 0 reports
        return 0
    print(
        json.dumps(
            {
                "model": result.name,
                "version": result.version,
                "run_id": result.run_id,
                "reused": result.reused,
                **result.metrics,
            },
            indent=1,
        )
    )
    return 0


def cmd_stack(args) -> int:
    from mmpc import pipeline, tracking

    recipe, wanted = _recipe(args), _versions(args.models)  # bad arguments fail before the catalog is read
    catalog = pipeline.open_catalog(args.catalog, recipe, args.workdir)
    tracking.configure(args.workdir)
    refs = wanted or {n: "@candidate" for n in recipe.models}
    versions = {n: str(tracking.resolve(n, ref).version) for n, ref in refs.items()}
    result = pipeline.stack_and_publish(
        catalog, recipe, Path(args.workdir), versions, promote=not args.no_promote, reuse=not args.force
    )
    print(result.table)
    decision = "promoted" if result.promoted else "not promoted"
    print(f"mmpc-ensemble v{result.version}: {decision} ({result.reason})")
    return 0


def cmd_evaluate(args) -> int:
    from mmpc import evaluation, pipeline
    from mmpc.training.engine import resolve_device

    recipe = _recipe(args)
    catalog = pipeline.open_catalog(args.catalog, recipe)
    ref = args.version if args.version is not None else args.alias
    result = evaluation.run_evaluation(
        args.model,
        ref,
        catalog,
        args.split,
        Path(args.workdir),
        device=resolve_device(recipe.device),
        worst=args.worst,
        out=Path(args.out) if args.out else None,
    )
    print(evaluation.table(result))
    return 0


def cmd_promote(args) -> int:
    from mmpc import promotion, tracking

    tracking.configure(args.workdir)
    print(promotion.promote(args.model, args.version, force=args.force))
    return 0


def cmd_rollback(args) -> int:
    from mmpc import promotion, tracking

    tracking.configure(args.workdir)
    print(promotion.rollback(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmpc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_recipe(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--recipe", default="demo", help="a recipe name in mlproject/ or a YAML path (default: demo)"
        )
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a recipe value, e.g. models.flaubert.train.epochs=2 (repeatable)",
        )
        p.add_argument(
            "--drop-invalid",
            action="store_true",
            help="leave invalid catalog rows out (logged, and listed in data/dropped_rows.csv of each "
            "run) instead of stopping; same as --set catalog.drop_invalid=true",
        )

    def with_workdir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workdir",
            default=os.environ.get("MMPC_WORKDIR", DEFAULT_WORKDIR),
            help="local MLflow store and artifacts unless MLFLOW_TRACKING_URI is set "
            f"(default: $MMPC_WORKDIR or {DEFAULT_WORKDIR})",
        )

    p = sub.add_parser("demo-catalog", help="write the generated demo catalog (Rakuten layout)")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_catalog)

    p = sub.add_parser("check", help="validate a catalog; print class counts per split and its fingerprint")
    p.add_argument("catalog", help="catalog folder or s3://bucket/prefix (mirrored under WORKDIR/catalogs)")
    p.add_argument("--manifest", help="also write the split manifest into this folder")
    with_recipe(p)
    with_workdir(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("train", help="train, evaluate and register one level-1 model")
    p.add_argument("model", help="a model name of the recipe (flaubert, camembert, seresnext, fusion, ...)")
    p.add_argument("--catalog", required=True)
    p.add_argument(
        "--inputs",
        nargs="*",
        metavar="NAME=VERSION",
        help="fusion only: registered versions (or @alias) of its text and image models",
    )
    p.add_argument("--force", action="store_true", help="train even if a version with the same inputs exists")
    with_recipe(p)
    with_workdir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("stack", help="stack registered level-1 versions and publish mmpc-ensemble")
    p.add_argument("--catalog", required=True)
    p.add_argument(
        "--models",
        nargs="*",
        metavar="NAME=VERSION",
        help="level-1 versions to stack (default: every recipe model @candidate)",
    )
    p.add_argument("--no-promote", action="store_true", help="register as @candidate only")
    p.add_argument("--force", action="store_true", help="publish even if the same ensemble exists")
    with_recipe(p)
    with_workdir(p)
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser(
        "evaluate",
        help="score a registered version (level-1 or ensemble) on a catalog split; logs an evaluation run",
    )
    p.add_argument("--model", required=True, help="registered model: mmpc-<name> or <name>")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--version", help="version number")
    ref.add_argument("--alias", help="alias, e.g. champion or candidate")
    p.add_argument("--catalog", required=True)
    p.add_argument("--split", default="test", help="train, valid, stack, test or all (default: test)")
    p.add_argument("--worst", type=int, default=10, help="how many worst confusions to list (default: 10)")
    p.add_argument("--out", help="also write the figures and CSVs into this folder")
    with_recipe(p)
    with_workdir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("promote", help="move @champion to a registered version (same test split required)")
    p.add_argument("version")
    p.add_argument("--model", default="ensemble", help="registered model, without the mmpc- prefix")
    p.add_argument("--force", action="store_true", help="promote even if evaluated on another test split")
    with_workdir(p)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="give @champion back to the version that held it before")
    p.add_argument("--model", default="ensemble")
    with_workdir(p)
    p.set_defaults(func=cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    extra: tuple[type[Exception], ...] = ()
    if args.command == "evaluate":
        from mmpc.evaluation import EvaluationError

        extra = (EvaluationError,)
    return reporting_errors(lambda: args.func(args), extra)


def reporting_errors(call: Callable[[], int], extra: tuple[type[Exception], ...] = ()) -> int:
    """``call()``, with bad input reported as one ``error:`` line and exit 2, and an unreachable
    tracking server or artifact store as one line naming it and exit 3; anything else is a bug and
    keeps its traceback."""
    from mmpc.catalog import CatalogError
    from mmpc.locations import LocationError
    from mmpc.promotion import PromotionError
    from mmpc.recipe import RecipeError

    try:
        return call()
    except (CatalogError, RecipeError, PromotionError, LocationError, *extra) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from mmpc.tracking import outage_message

        if (message := outage_message(exc)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
