"""``prepare``, ``up``, ``down`` and ``status`` of a serving stack: nginx, controller, model servers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from infra.local import processes
from infra.serving import bearer, certs, controller, model_servers, nginx, rollout, settings, status
from infra.serving.layout import Layout
from infra.serving.settings import Settings


@dataclass(frozen=True)
class UpReport:
    settings: Settings
    first_rollout: str  # what the first check-and-roll did, or why it failed
    ok: bool

    @property
    def url(self) -> str:
        return f"https://{processes.HOST}:{self.settings.port}"


def prepare(layout: Layout, **options: object) -> Settings:
    """The files nginx needs: settings, CA and server certificate, token, nginx.conf (upstream.conf
    at the first time). Alone, for an nginx started elsewhere (a container sharing the root)."""
    layout.make()
    conf = settings.resolve(layout, **options)
    certs.ensure_certs(layout)
    bearer.ensure_token(layout)
    nginx.write_config(layout, conf.listen, conf.port)
    return conf


def up(layout: Layout, **options: object) -> UpReport:
    """Start what is not running: nginx (certificates and token made at the first up), the champion's
    model server, then the controller. ``ok`` is False when the champion could not be rolled out: the
    stack stays up (503 until the alias names a version that starts)."""
    conf = prepare(layout, **options)
    if nginx.master_pid(layout) is None:
        nginx.start(layout, conf.port)
    else:  # a changed token or port: the running nginx picks it up gracefully
        nginx.check(layout)
        nginx.reload(layout)
    first, ok = "controller already running", True
    if controller.pid(layout) is None:
        try:
            first = rollout.check_and_roll(layout, conf, force=True).message
        except rollout.RolloutError as exc:
            first, ok = str(exc), False
        controller.start(layout)
    return UpReport(conf, first, ok)


def down(layout: Layout) -> float:
    """Stop the controller (first: it starts servers), nginx, then every model server; seconds taken."""
    t0 = time.monotonic()
    controller.stop(layout)
    nginx.stop(layout)
    model_servers.stop_all(layout)
    if layout.status.is_file():
        state = status.load(layout)
        state["serving"] = None
        status.save(layout, state)
    return time.monotonic() - t0


def describe(layout: Layout) -> tuple[list[str], bool]:
    """Lines for ``status`` and whether everything is up and a version serving."""
    conf = settings.required(layout)
    state = status.load(layout)
    serving = status.serving(state)
    serving_ok = serving is not None and model_servers.alive(layout, serving)
    master, watcher = nginx.master_pid(layout), controller.pid(layout)
    lines = [
        f"proxy       https://{processes.HOST}:{conf.port}  (CA {layout.ca_pem}, token {layout.token_file})",
        f"nginx       {f'pid {master}' if master else 'stopped'}",
        f"controller  {f'pid {watcher}' if watcher else 'stopped'}  watching {conf.model}@{conf.alias}",
        f"serving     {_serving_line(serving) if serving_ok else 'no model server'}",
    ]
    attempt = state.get("last_attempt")
    if attempt:
        outcome = "ok" if attempt.get("ok") else "in progress" if attempt.get("ok") is None else "FAILED"
        lines.append(f"last        version {attempt['version']} {outcome} at {attempt['started']}")
        if attempt.get("error"):
            lines.append(f"  error     {attempt['error'].splitlines()[0]}")
    return lines, bool(master and watcher and serving_ok)


def _serving_line(server: model_servers.ModelServer) -> str:
    return f"version {server.version} on {server.url} (pid {server.pid}, log {server.log_file})"
