"""Run or schedule mmpc's flows from a shell.

``python -m flows retrain --catalog PATH|s3://bucket/prefix [--recipe demo] [--workdir DIR] ...``
    runs the whole pipeline once (ephemeral Prefect, or the server named by ``PREFECT_API_URL``);
    also the MLproject's ``retrain`` entry point, whose run then holds the pipeline's.
``python -m flows score --catalog PATH --root DIR [--version @champion]``
    scores the products that are new or changed since the version last scored them;
``python -m flows serve --catalog ... [--cron "0 3 * * 1"]``
    serves the ``retrain`` deployment on this machine with ``flow.serve``: the schedule fires and
    runs triggered from the Prefect UI or ``prefect deployment run`` execute here, until stopped.

Parsed and reported by mmpc's entry layer: the typed arguments ``RetrainArgs`` and ``ServeArgs`` of
``mmpc.arguments`` (the same catalog, recipe and tracking groups as ``mmpc``), and ``mmpc.cli``'s
error mapping (bad input exit 2, an unreachable server exit 3, one ``error:`` line each); a retrain
stopped by a guard rail (the slot held by another retrain, a time limit) exits 4 with one line.
"""

from __future__ import annotations

import json
import logging
import sys

from mmpc import arguments as a
from mmpc import cli


def run_retrain(args: a.RetrainArgs) -> int:
    # Bad input and an unreachable tracking server stop here, before Prefect starts a flow run.
    recipe = args.load_recipe()
    for name in args.models or []:
        recipe.model(name)
    args.reach_tracking()
    from flows.retrain import GUARD_RAILS, retrain
    from mmpc import project

    with project.project_run() as parent:  # under `mlflow run`: the pipeline run nests in it
        try:
            result = retrain(**args.flow_parameters())
        except GUARD_RAILS as exc:  # another retrain held the slot, or a time limit: exit 4
            print(f"error: {exc}", file=sys.stderr)
            return 4
        project.record_pipeline(parent, result)
    published = result["ensemble"]
    print(published["table"])
    summary = {
        "ensemble_version": published["version"],
        "published": not published["reused"],
        "promoted": published["promoted"],
        "reason": published["reason"],
        "trained": [n for n, r in result["level1"].items() if not r["reused"]],
        "reused": [n for n, r in result["level1"].items() if r["reused"]],
    }
    print(json.dumps(summary))
    return 0


def run_serve(args: a.ServeArgs) -> int:
    args.load_recipe()  # a bad recipe stops here, not at the first scheduled run
    from prefect.schedules import Cron

    from flows.retrain import retrain

    retrain.serve(
        name=args.name,
        schedules=[Cron(args.cron, timezone=args.timezone)],
        parameters=args.flow_parameters(),
        paused=args.paused or None,
        tags=["mmpc"],
    )
    return 0


def run_score(args: a.ScoreFlowArgs) -> int:
    args.reach_tracking()
    from flows.score import score

    result = score(**args.flow_parameters())
    manifest = result["manifest"] or {}
    print(json.dumps({"total": result["total"], "changed": result["changed"], "output": result["output"],
                      "run_id": manifest.get("run_id")}))  # fmt: skip
    return 0


TITLE = "mmpc's Prefect flows: the whole pipeline once, or served on a schedule; nightly scoring"
COMMANDS = {
    "retrain": cli.Command(a.RetrainArgs, run_retrain, "the whole pipeline, once"),
    "score": cli.Command(a.ScoreFlowArgs, run_score, "score the new and changed products of a catalog, once"),
    "serve": cli.Command(a.ServeArgs, run_serve, "serve the retrain deployment on a schedule (flow.serve)"),
}


def _setup_logging(verbose: bool) -> None:
    # Prefect owns the handlers (flows/__init__.py forwards mmpc's loggers to them); only the level here.
    if verbose:
        logging.getLogger("mmpc").setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, COMMANDS, prog="python -m flows", setup_logging=_setup_logging, description=TITLE)


if __name__ == "__main__":
    sys.exit(main())
