"""``python -m infra.serving [--root DIR] up|down|status|rollout``: the scoring endpoint behind nginx
(TLS, a bearer token), following the registry's champion without downtime.

The registry is the one the environment names (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI; a server's
credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's client itself).
"""

from __future__ import annotations

import argparse
import logging
import sys

from infra.local.processes import ServiceError
from infra.serving import controller, rollout, settings, stack
from infra.serving.layout import DEFAULT_ROOT, ROOT_ENV, Layout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--root", help=f"the stack's folder (default: ${ROOT_ENV} or {DEFAULT_ROOT})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start nginx, the champion's model server and the controller")
    prepare = sub.add_parser("prepare", help="only write nginx's files (certificates, token, config)")
    for command in (up, prepare):
        _stack_options(command)
    sub.add_parser("down", help="stop the controller, nginx and every model server")
    sub.add_parser("status", help="what runs and serves; exit 1 unless all is up and serving")
    sub.add_parser(
        "rollout", help="one check-and-roll now (also retries a failed version); exit 1 on failure"
    )
    sub.add_parser("watch", help="the controller in the foreground (what up starts in the background)")
    return parser


def _stack_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--port", type=int, help="the proxy's HTTPS port (default: a free one at the first up)"
    )
    command.add_argument("--listen", help="the proxy's address (default 127.0.0.1)")
    command.add_argument("--model", help="registered model to serve (default mmpc-ensemble)")
    command.add_argument("--alias", help="alias to follow (default champion)")
    command.add_argument("--poll", dest="poll_s", type=float, help="seconds between alias checks (default 3)")
    command.add_argument(
        "--start-timeout",
        dest="start_timeout_s",
        type=float,
        help="seconds a new model server may take to answer (default 300)",
    )
    command.add_argument(
        "--retry-after",
        dest="retry_after_s",
        type=float,
        help="seconds before a failed version is tried again (default 600)",
    )


OPTIONS = ("port", "listen", "model", "alias", "poll_s", "start_timeout_s", "retry_after_s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        layout = Layout.at(args.root)
        return _run(args, layout)
    except (ServiceError, rollout.RolloutError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, rollout.RolloutError) else 2


def _run(args: argparse.Namespace, layout: Layout) -> int:
    if args.command != "watch":  # the steps of a rollout, as they happen
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "prepare":
        conf = stack.prepare(layout, **{k: getattr(args, k) for k in OPTIONS})
        print(
            f"nginx files in {layout.root}: nginx -p {layout.root} -c {layout.nginx_conf} (port {conf.port})"
        )
        return 0
    if args.command == "up":
        report = stack.up(layout, **{k: getattr(args, k) for k in OPTIONS})
        print(f"proxy: {report.url} (verify with {layout.ca_pem}; token in {layout.token_file})")
        print(f"{report.settings.model}@{report.settings.alias}: {report.first_rollout.splitlines()[0]}")
        return 0 if report.ok else 1
    if args.command == "down":
        print(f"stopped in {stack.down(layout):.1f} s")
        return 0
    if args.command == "status":
        lines, healthy = stack.describe(layout)
        print("\n".join(lines))
        return 0 if healthy else 1
    if args.command == "rollout":
        print(rollout.check_and_roll(layout, settings.required(layout), force=True).message)
        return 0
    controller.watch(layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
