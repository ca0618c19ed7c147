"""The model servers behind the proxy: ``mlflow models serve -m models:/NAME/VERSION`` on internal
loopback ports, each with a pid file (``run/model-<port>.pid``) so any later command finds it again.
A server counts as started only once it answers a real prediction."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from infra.local import processes
from infra.serving.layout import Layout

UVICORN_ENV_FILE = Path(__file__).with_name("uvicorn.env")

# A small valid request (mmpc.serving_input: designation required, description and image optional).
PROBE = {
    "dataframe_split": {
        "columns": ["designation", "description", "image"],
        "data": [["Console de jeux portable", "Écran 7 pouces, 64 Go, manettes amovibles", None]],
    }
}


@dataclass(frozen=True)
class ModelServer:
    version: str
    port: int
    pid: int
    log_file: str

    @property
    def url(self) -> str:
        return f"http://{processes.HOST}:{self.port}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> ModelServer | None:
        return cls(**data) if data else None


def pid_file(layout: Layout, port: int) -> Path:
    return layout.run / f"model-{port}.pid"


def alive(layout: Layout, server: ModelServer) -> bool:
    return processes.read_pid(pid_file(layout, server.port), "models") == server.pid


def uvicorn_env() -> dict[str, str]:
    """uvicorn's settings for a model server (``uvicorn.env``, which ``make serve`` reads too):
    ``mlflow models serve`` passes the environment on to uvicorn, whose CLI reads ``UVICORN_*``."""
    env = {}
    for line in UVICORN_ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _env() -> dict[str, str]:
    # The registry, its credentials and MLflow's settings come from this environment: the client reads
    # them itself, none is put on the command line. uvicorn is found on PATH next to this Python.
    env = {**os.environ, **uvicorn_env()}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def start(layout: Layout, name: str, version: str, exclude: set[int], timeout: float) -> ModelServer:
    """A new server of ``models:/name/version``, returned once it answers ``PROBE``; stopped and
    raised (``ServiceError`` with the log's tail) when it exits, answers badly or takes too long."""
    port = processes.free_port(exclude)
    log = layout.logs / f"model-v{version}-{port}.log"
    argv = [
        *processes.mlflow_serve_argv(f"models:/{name}/{version}"),
        "--host",
        processes.HOST,
        "--port",
        str(port),
    ]
    pid = processes.start(argv, env=_env(), log_file=log, pid_file=pid_file(layout, port), cwd=layout.root)
    server = ModelServer(version, port, pid, str(log))
    try:
        # /ping answers once the model is loaded: mlflow loads it before the app starts
        _wait_until_up(server, timeout)
        probe(server)
    except BaseException:
        stop(layout, server)
        raise
    return server


def _wait_until_up(server: ModelServer, timeout: float) -> None:
    what, log = f"model version {server.version}", Path(server.log_file)
    try:
        processes.wait_until(
            lambda: processes.http_ok(server.url + "/ping"),
            what=what,
            timeout=timeout,
            log_file=log,
            pid=server.pid,
        )
    except processes.ServiceError as exc:
        gone = "exited during start-up" in str(exc)
        how = "exited during start-up" if gone else f"did not answer within {timeout:.0f} s"
        raise processes.ServiceError(f"{what} {how}: {_reason(log)} (log: {log})") from None


# The last error a failed start printed, skipping mlflow's wrapper that only names the command.
_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


def _reason(log: Path) -> str:
    lines = processes.tail(log, 200).splitlines()
    errors = [ln for ln in lines if _ERROR.match(ln) and not ln.startswith("Exception: Command ")]
    return errors[-1][:300] if errors else "no error in its log"


def probe(server: ModelServer, timeout: float = 60) -> None:
    """One real prediction; raises ``ServiceError`` naming what is wrong with the answer."""
    what = f"model version {server.version}"
    try:
        resp = requests.post(server.url + "/invocations", json=PROBE, timeout=(5, timeout))
    except requests.RequestException as exc:
        raise processes.ServiceError(f"{what} did not answer a prediction: {exc}") from None
    if resp.status_code != 200:
        raise processes.ServiceError(
            f"{what} answered a prediction with {resp.status_code}: {resp.text[:300]}"
        )
    try:
        rows = resp.json()["predictions"]
        ok = isinstance(rows, list) and len(rows) == 1 and "prdtypecode" in rows[0]
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise processes.ServiceError(f"{what} answered a prediction without a prdtypecode: {resp.text[:300]}")


def stop(layout: Layout, server: ModelServer, grace: float = 30) -> None:
    """SIGTERM: uvicorn answers the requests it holds, then exits (SIGKILL after ``grace``)."""
    if alive(layout, server):
        processes.stop(server.pid, grace)
    pid_file(layout, server.port).unlink(missing_ok=True)


def stop_all(layout: Layout, grace: float = 30) -> list[int]:
    """Every model server a pid file names (also one a crashed controller left); their ports."""
    ports = []
    for path in sorted(layout.run.glob("model-*.pid")):
        port = int(path.stem.removeprefix("model-"))
        pid = processes.read_pid(path, "models")
        if pid is not None:
            processes.stop(pid, grace)
            ports.append(port)
        path.unlink(missing_ok=True)
    return ports
