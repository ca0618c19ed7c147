"""The ``retrain`` entry point of ``MLproject``: the whole pipeline under an ``mlflow run`` run.

``python -m flows.project retrain --catalog PATH [--recipe demo] [--workdir DIR] [--models "a b"]
[--overrides "k=v ..."] [--device cpu]``. The pipeline's parent run nests under the project run (see
``mmpc.project`` for why and how); the project run records the pipeline run and the published
ensemble.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from mmpc import project
from mmpc import tags as tag


def main(argv: list[str] | None = None) -> int:
    from mmpc.catalog import CatalogError
    from mmpc.promotion import PromotionError
    from mmpc.recipe import RecipeError

    parser = argparse.ArgumentParser(prog="python -m flows.project")
    sub = parser.add_subparsers(dest="entry", required=True)
    p = sub.add_parser("retrain", help="check -> level-1 -> fusion -> stack -> promote")
    p.add_argument("--models", default="", help="restrict to these recipe models (space-separated)")
    project.common_arguments(p)
    args = parser.parse_args(argv)

    from flows.retrain import retrain

    try:
        with project.project_run() as parent:
            result = retrain(
                catalog=args.catalog,
                recipe=args.recipe,
                workdir=args.workdir,
                models=shlex.split(args.models) or None,
                overrides=project.overrides(args.overrides, device=args.device) or None,
            )
            published = result["ensemble"]
            project.record_outcome(
                parent,
                {
                    tag.PIPELINE_RUN_ID: result["parent_run_id"],
                    tag.REGISTERED_MODEL: "mmpc-ensemble",
                    tag.REGISTERED_VERSION: published["version"],
                    tag.PROMOTED: str(published["promoted"]),
                },
                {"stack_test_macro_f1": published["scores"]["stack"]},
            )
    except (CatalogError, RecipeError, PromotionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(published["table"])
    print(json.dumps({"ensemble_version": published["version"], "promoted": published["promoted"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
