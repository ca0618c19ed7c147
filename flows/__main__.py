"""``python -m flows retrain --catalog PATH [--recipe demo] [--workdir DIR]``: run a flow once."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows")
    sub = parser.add_subparsers(dest="flow", required=True)
    p = sub.add_parser("retrain", help="the whole pipeline, once")
    p.add_argument("--catalog", required=True)
    p.add_argument("--recipe", default="demo")
    p.add_argument("--workdir", default="mmpc-work")
    p.add_argument("--models", nargs="*", help="restrict to these recipe models")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override (repeatable)")
    args = parser.parse_args(argv)

    from flows.retrain import retrain
    from mmpc.recipe import parse_overrides

    result = retrain(
        catalog=args.catalog,
        recipe=args.recipe,
        workdir=args.workdir,
        models=args.models,
        overrides=parse_overrides(args.set) or None,
    )
    print(result["ensemble"]["table"])
    print(
        json.dumps(
            {
                "ensemble_version": result["ensemble"]["version"],
                "promoted": result["ensemble"]["promoted"],
                "reason": result["ensemble"]["reason"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
