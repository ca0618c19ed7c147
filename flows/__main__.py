"""Run or schedule mmpc's flows from a shell.

``python -m flows retrain --catalog PATH|s3://bucket/prefix [--recipe demo] [--workdir DIR]``
    runs the whole pipeline once (ephemeral Prefect, or the server named by ``PREFECT_API_URL``).
``python -m flows serve --catalog ... [--cron "0 3 * * 1"]``
    serves the ``retrain`` deployment on this machine with ``flow.serve``: the schedule fires and
    runs triggered from the Prefect UI or ``prefect deployment run`` execute here, until stopped.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmpc.locations import DEFAULT_WORKDIR

WEEKLY = "0 3 * * 1"  # Mondays, 03:00


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True, help="catalog folder or s3://bucket/prefix")
    p.add_argument("--recipe", default="demo")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR)
    p.add_argument("--models", nargs="*", help="restrict to these recipe models")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--parallel", type=int, default=1, help="level-1 trainings at once on this machine")
    p.add_argument("--level1-deployment", help="train level-1 models as runs of this deployment")
    p.add_argument("--force", action="store_true", help="train and publish even if nothing changed")
    p.add_argument(
        "--drop-invalid",
        action="store_true",
        help="leave invalid catalog rows out (listed in each run's data/dropped_rows.csv) instead of "
        "stopping; same as --set catalog.drop_invalid=true",
    )


def _parameters(args) -> dict:
    from mmpc.recipe import parse_overrides

    overrides = parse_overrides(args.set)
    if args.drop_invalid:
        overrides["catalog.drop_invalid"] = True
    return {
        "catalog": args.catalog,
        "recipe": args.recipe,
        "workdir": args.workdir,
        "models": args.models,
        "overrides": overrides or None,
        "parallel": args.parallel,
        "level1_deployment": args.level1_deployment,
        "force": args.force,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows")
    sub = parser.add_subparsers(dest="command", required=True)
    _pipeline_args(sub.add_parser("retrain", help="the whole pipeline, once"))
    s = sub.add_parser("serve", help="serve the retrain deployment on a schedule (flow.serve)")
    _pipeline_args(s)
    s.add_argument("--name", default="mmpc-retrain", help="deployment name")
    s.add_argument("--cron", default=WEEKLY, help=f"cron schedule (default weekly: {WEEKLY!r})")
    s.add_argument("--timezone", default="UTC")
    s.add_argument("--paused", action="store_true", help="create the schedule paused")
    args = parser.parse_args(argv)

    from flows.retrain import retrain
    from mmpc.cli import reporting_errors

    if args.command == "serve":
        from prefect.schedules import Cron

        retrain.serve(
            name=args.name,
            schedules=[Cron(args.cron, timezone=args.timezone)],
            parameters=_parameters(args),
            paused=args.paused or None,
            tags=["mmpc"],
        )
        return 0
    return reporting_errors(lambda: _retrain(retrain, args))


def _retrain(retrain, args) -> int:
    result = retrain(**_parameters(args))
    print(result["ensemble"]["table"])
    print(
        json.dumps(
            {
                "ensemble_version": result["ensemble"]["version"],
                "published": not result["ensemble"]["reused"],
                "promoted": result["ensemble"]["promoted"],
                "reason": result["ensemble"]["reason"],
                "trained": [n for n, r in result["level1"].items() if not r["reused"]],
                "reused": [n for n, r in result["level1"].items() if r["reused"]],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
