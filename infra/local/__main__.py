"""``python -m infra.local up|down|stop SERVICE|status|env [--root DIR]``: the local topology from a shell.

eval "$(python -m infra.local env --account training)"   # mmpc, mlflow, python -m flows as `training`
eval "$(python -m infra.local env --account reader)"     # read the runs and the registry only
"""

from __future__ import annotations

import argparse
import shlex
import sys

from infra.local import accounts
from infra.local.accounts import ACCOUNTS
from infra.local.processes import ServiceError
from infra.local.topology import CLIENT_UNSET, DEFAULT_ROOT, SERVICES, Topology


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        help=f"the folder holding every service's data, logs and secrets (default: $MMPC_LOCAL_ROOT "
        f"or {DEFAULT_ROOT})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start what is not running; wait until every service answers")
    for name, default in (("mlflow", "free"), ("prefect", "free"), ("s3", "free"), ("postgres", "free")):
        up.add_argument(
            f"--{name}-port", type=int, default=0, help=f"at the first up only (default: {default})"
        )
    up.add_argument("--timeout", type=float, default=180, help="seconds each service may take (default 180)")
    sub.add_parser("down", help="stop every service and free its ports")
    stop = sub.add_parser("stop", help="stop one service, keeping its data (the next up restarts it)")
    stop.add_argument("service", choices=SERVICES)
    sub.add_parser("status", help="each service's state, pid, URL and log file; exit 1 unless all are up")
    env = sub.add_parser("env", help="print export lines for clients (credentials only with --account)")
    env.add_argument(
        "--account", choices=ACCOUNTS, help="add this account's credentials (meant for eval, not for files)"
    )
    env.add_argument("--s3", action="store_true", help="also the AWS profile for direct bucket access")
    accounts_cmd = sub.add_parser(
        "accounts", help="create the training and reader accounts on an MLflow server started elsewhere "
        "(passwords from MLFLOW_{ADMIN,TRAINING,READER}_PASSWORD)",
    )  # fmt: skip
    accounts_cmd.add_argument("--url", required=True, help="the MLflow server, e.g. http://mlflow:5000")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    topo = Topology(args.root)
    try:
        if args.command == "up":
            ports = {n: getattr(args, f"{n}_port") for n in ("mlflow", "prefect", "s3", "postgres")}
            report = topo.up(ports={k: v for k, v in ports.items() if v}, timeout=args.timeout)
            print(report.table())
            started = [s.name for s in report.services if s.started]
            print(f"\nstarted: {', '.join(started) or 'nothing (already up)'}; {report.seconds:.1f} s")
            print(f'clients: eval "$(python -m infra.local --root {topo.root} env --account training)"')
            return 0
        if args.command == "accounts":
            print(f"accounts at {args.url}: {', '.join(accounts.ensure_from_env(args.url)) or 'already set'}")
            return 0
        if args.command == "down":
            print(f"stopped in {topo.down():.1f} s")
            return 0
        if args.command == "stop":
            topo.stop(args.service)
            print(f"stopped {args.service}")
            return 0
        if args.command == "status":
            report = topo.status()
            if not report.services:
                print(f"no local topology under {topo.root}")
                return 1
            print(report.table())
            return 0 if report.healthy else 1
        return _print_env(topo, args.account, args.s3)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _print_env(topo: Topology, account: str | None, s3: bool) -> int:
    values = topo.client_env(account) | (topo.s3_env() | {"S3_ENDPOINT_URL": topo.s3_endpoint} if s3 else {})
    lines = [f"unset {name}\n" for name in CLIENT_UNSET] if account else []
    lines += [f"export {k}={shlex.quote(v)}\n" for k, v in values.items()]
    print("".join(lines), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
