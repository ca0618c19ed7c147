"""One check-and-roll: read the alias; when it names another version than the one serving, start that
version's model server, switch nginx to it, drain the old workers and stop the old server.

A version that fails (its server exits, answers badly or too late) leaves the old one serving; the
reason goes to ``status.json`` and the version is not tried again before ``retry_after_s``."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests

from infra.local import processes
from infra.serving import model_servers, nginx, status
from infra.serving.layout import Layout, write_atomic
from infra.serving.model_servers import ModelServer
from infra.serving.settings import Settings

log = logging.getLogger("infra.serving")


class RolloutError(RuntimeError):
    """A rollout that did not happen; the message says why. The old version keeps serving."""


class VersionFailed(RolloutError):
    """The alias's version would not start or answer; recorded in status.json and logged already."""


@dataclass(frozen=True)
class Outcome:
    version: str
    changed: bool
    message: str


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One rollout at a time per stack (the controller and a `rollout` command)."""
    with open(layout.run / "rollout.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def champion(settings: Settings) -> str:
    """The version the alias names now, from the registry the environment names."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(settings.model, settings.alias).version)
    except MlflowException as exc:
        raise RolloutError(f"cannot read {settings.model}@{settings.alias}: {exc.message}") from None


def check_and_roll(layout: Layout, settings: Settings, *, force: bool = False) -> Outcome:
    """Roll out the alias's version if it is not the one serving. ``force`` retries a failed version."""
    with locked(layout):
        version = champion(settings)
        state = status.load(layout)
        current = status.serving(state)
        if current and current.version == version and model_servers.alive(layout, current):
            return Outcome(version, False, f"version {version} is serving")
        if not force and status.failed_recently(state, version, settings.retry_after_s):
            when = state["failed"][version]
            return Outcome(version, False, f"version {version} failed at {when}; not retried yet")
        if nginx.master_pid(layout) is None:
            raise RolloutError(f"nginx is not running under {layout.root}: run `up` first")
        return _roll(layout, settings, state, current, version)


def _roll(
    layout: Layout, settings: Settings, state: dict, current: ModelServer | None, version: str
) -> Outcome:
    t0 = time.monotonic()
    log.info(
        "rolling out %s version %s (serving: %s)",
        settings.model,
        version,
        current.version if current else "none",
    )
    state["last_attempt"] = {"version": version, "started": status.now(), "ok": None, "error": None}
    status.save(layout, state)
    try:
        new = model_servers.start(layout, settings.model, version, {settings.port}, settings.start_timeout_s)
    except (processes.ServiceError, OSError) as exc:
        raise _failed(layout, state, version, t0, str(exc)) from None
    try:
        _switch(layout, settings, new)
    except (processes.ServiceError, OSError, RolloutError) as exc:
        model_servers.stop(layout, new)
        raise _failed(layout, state, version, t0, f"switching nginx: {exc}") from None
    state["serving"] = {**new.to_json(), "since": status.now()}
    state["last_attempt"].update(ok=True, finished=status.now(), seconds=round(time.monotonic() - t0, 1))
    state.get("failed", {}).pop(version, None)
    status.save(layout, state)
    if current is not None and current.port != new.port:
        model_servers.stop(layout, current)
    seconds = time.monotonic() - t0
    log.info("version %s serving on port %d after %.1f s", version, new.port, seconds)
    return Outcome(version, True, f"version {version} serving after {seconds:.1f} s")


def _failed(layout: Layout, state: dict, version: str, t0: float, error: str) -> VersionFailed:
    seconds = round(time.monotonic() - t0, 1)
    state["last_attempt"].update(ok=False, finished=status.now(), seconds=seconds, error=error)
    state.setdefault("failed", {})[version] = status.now()
    status.save(layout, state)
    log.error("version %s not rolled out after %.1f s: %s", version, seconds, error)
    return VersionFailed(f"version {version} not rolled out: {error}")


def _switch(layout: Layout, settings: Settings, new: ModelServer) -> None:
    """nginx to ``new``: rewrite the upstream include, ``nginx -t``, SIGHUP, confirm through the proxy,
    then wait until the old workers have answered what they held (the old server still runs)."""
    previous = nginx.read_upstream(layout)
    write_atomic(layout.upstream_conf, nginx.upstream_text(nginx.Upstream(new.version, new.port)))
    try:
        nginx.check(layout)
        old_workers = nginx.reload(layout)
        _confirm(layout, settings, new.version)
    except BaseException:
        if previous is not None:  # back to the old server; its workers never stopped answering
            write_atomic(layout.upstream_conf, previous)
            if nginx.master_pid(layout) is not None:
                nginx.reload(layout)
        raise
    if not nginx.wait_drained(old_workers):
        log.warning(
            "old nginx workers still busy after %d s; stopping the old server anyway", nginx.DRAIN_TIMEOUT_S
        )


def _confirm(layout: Layout, settings: Settings, version: str, timeout: float = 20) -> None:
    """A new connection through the proxy reaches the new version (its header says so)."""
    url = f"https://{processes.HOST}:{settings.port}/health"
    seen: list[str | None] = []

    def reached() -> bool:
        resp = requests.get(url, verify=str(layout.ca_pem), timeout=5)
        seen.append(resp.headers.get("X-Mmpc-Model-Version"))
        return resp.status_code == 200 and seen[-1] == version

    try:
        processes.wait_until(reached, what="nginx", timeout=timeout, log_file=layout.logs / "nginx-error.log")
    except processes.ServiceError:
        raise RolloutError(
            f"the proxy did not reach version {version} after the reload (saw {seen[-3:]})"
        ) from None
