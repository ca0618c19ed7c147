"""Helpers for tests that start real servers or run mmpc the way a user does: free ports,
servers in the background (``mlflow models serve`` on a registered model, ``mlflow server``),
``mlflow run`` of the project."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = (5, 120)  # connect, read: a request never hangs a test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f} s; see {log_path}")
        time.sleep(0.5)


@dataclass
class Server:
    """A running server: its URL, process and log."""

    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

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
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}{health_path}", proc, log_path, what, timeout)
        yield Server(url, proc, log_path)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def served_model(
    model_uri: str, env: Mapping[str, str], log_path: Path, timeout: float = 120
) -> AbstractContextManager[Server]:
    """``mlflow models serve -m model_uri``, as a user runs it (see ``background_server``)."""
    argv = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--workers",
        "1",
    ]
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
