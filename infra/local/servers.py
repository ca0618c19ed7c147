"""The HTTP services: the MLflow tracking server (PostgreSQL backend, S3 artifacts through its own
artifact proxy) and the Prefect server (on PostgreSQL), both requiring authentication: MLflow's
basic-auth app, Prefect's auth string. Passwords and keys reach them through files named in their
environment (libpq's password file, an AWS profile, MLflow's auth configuration) or through the
environment itself, never on a command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.local import processes

# Inherited settings that would point a server at another store, account or API.
_DROP = ("MLFLOW_", "PREFECT_", "AWS_", "PG", "DATABASE_URL")


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    bin_dir = str(Path(sys.executable).parent)  # the venv's mlflow, prefect and uvicorn
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.update(extra)
    return env


@dataclass
class HttpService:
    name: str
    folder: Path
    port: int
    health_path: str
    expect: str  # a word of its command line, to recognise its pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, self.expect)

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + self.health_path, timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, pid: int | None, timeout: float) -> float:
        return processes.wait_until(
            self.healthy, what=self.name, timeout=timeout, log_file=self.log_file, pid=pid
        )

    def launch(self, argv: list[str], env: dict[str, str]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        return processes.start(argv, env=env, log_file=self.log_file, pid_file=self.pid_file, cwd=self.folder)

    def stop(self, grace: float = 15) -> None:
        pid = self.pid()
        if pid:
            processes.stop(pid, grace=grace)
        self.pid_file.unlink(missing_ok=True)


def mlflow_server(folder: Path, port: int) -> HttpService:
    return HttpService("mlflow", folder, port, "/health", "mlflow")


def start_mlflow(
    svc: HttpService,
    *,
    db_port: int,
    pgpass: Path,
    aws_files: tuple[Path, Path],
    profile: str,
    artifacts: str,
    s3_endpoint: str,
    auth_config: Path,
    flask_secret_key: str,
) -> int:
    credentials, config = aws_files
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        # users and permissions: the admin's password is in MLFLOW_AUTH_CONFIG_PATH's file
        "--app-name",
        "basic-auth",
        # no password in the URI: libpq reads it from PGPASSFILE
        "--backend-store-uri",
        f"postgresql://mlflow@127.0.0.1:{db_port}/mlflow",
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(svc.port),
        # one worker and no job runner: ~0.5 GB instead of ~3 GB
        "--workers",
        "1",
    ]
    env = base_env(
        {
            "PGPASSFILE": str(pgpass),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_CONFIG_FILE": str(config),
            "AWS_PROFILE": profile,
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret_key,
        }
    )
    return svc.launch(argv, env)


def prefect_server(folder: Path, port: int) -> HttpService:
    return HttpService("prefect", folder, port, "/api/health", "prefect")


def start_prefect(svc: HttpService, *, db_port: int, pgpass: Path, auth_string: str) -> int:
    home = svc.folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(svc.port),
    ]
    env = base_env(
        {
            "PREFECT_HOME": str(home),
            # no password in the URL: asyncpg reads it from PGPASSFILE
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://prefect@127.0.0.1:{db_port}/prefect",
            "PGPASSFILE": str(pgpass),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"{svc.url}/api",
            # every API call but GET /api/health and /api/ready needs it (HTTP basic auth)
            "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        }
    )
    return svc.launch(argv, env)
