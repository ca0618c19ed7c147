"""Helpers for tests that start real servers or run mmpc the way a user does: servers in the
background (``mlflow models serve`` on a registered model, ``mlflow server``) through the project's
one process harness (``infra.local.processes``), a user's environment, ``mlflow run`` of the project."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.local import processes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = (5, 120)  # connect, read: a request never hangs a test


def free_port() -> int:
    return processes.free_port()


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: this venv's commands first (``mlflow models serve
    --env-manager local`` runs ``uvicorn`` from PATH), this checkout importable, plus ``extra``."""
    env = {**os.environ, "PATH": str(BIN) + os.pathsep + os.environ["PATH"]}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    # mlflow.set_tracking_uri/set_registry_uri in this process also set these variables for its
    # children: a user's shell has neither unless they name the store, as ``extra`` does.
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(extra)
    return env


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, what: str, timeout: float = 120) -> None:
    """Until ``url`` answers 200; a clear error with the log's tail if ``proc`` exits or time runs out."""
    processes.wait_until(
        lambda: processes.http_ok(url),
        what=what,
        timeout=timeout,
        log_file=log_path,
        running=lambda: proc.poll() is None,
    )


@dataclass
class Server:
    """A running server: its URL, process and log."""

    process: processes.Process

    @property
    def url(self) -> str:
        assert self.process.url is not None
        return self.process.url

    @property
    def log(self) -> Path:
        return self.process.log_file

    def alive(self) -> bool:
        return self.process.alive()

    def invoke(self, payload: dict | None = None, body: bytes | None = None) -> requests.Response:
        """POST /invocations with a JSON payload, or raw bytes sent as JSON."""
        if body is not None:
            headers = {"Content-Type": "application/json"}
            return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=TIMEOUT)
        return requests.post(f"{self.url}/invocations", json=payload, timeout=TIMEOUT)


@contextmanager
def background_server(
    argv: list[str], health_path: str, env: Mapping[str, str], log_path: Path, what: str, timeout: float = 120
) -> Iterator[Server]:
    """``argv`` (a server taking ``--host 127.0.0.1 --port N``) on a free port until ``health_path``
    answers; stopped, its whole process group, on exit."""
    with processes.serve_http(
        argv, what=what, env=env, log_file=log_path, health_path=health_path, timeout=timeout
    ) as process:
        yield Server(process)


def served_model(
    model_uri: str, env: Mapping[str, str], log_path: Path, timeout: float = 120
) -> AbstractContextManager[Server]:
    """``mlflow models serve -m model_uri``, as a user runs it (see ``background_server``)."""
    argv = processes.mlflow_serve_argv(model_uri)
    return background_server(argv, "/ping", env, log_path, "mlflow models serve", timeout)


def mlflow_run(
    entry: str, params: Mapping[str, object], env: Mapping[str, str], *, experiment: str | None = None
) -> subprocess.CompletedProcess:
    """``mlflow run <repo> -e entry -P k=v ... --env-manager local``; output captured."""
    argv = [str(BIN / "mlflow"), "run", str(REPO), "-e", entry, "--env-manager", "local"]
    if experiment:
        argv += ["--experiment-name", experiment]
    for key, value in params.items():
        argv += ["-P", f"{key}={value}"]
    return subprocess.run(argv, env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=900)
