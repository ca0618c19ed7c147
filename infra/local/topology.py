"""The production topology on one machine, without containers: PostgreSQL, an S3 server (SeaweedFS),
an MLflow tracking server using both, and a Prefect server on PostgreSQL, all on 127.0.0.1.

Everything lives under one root folder::

    topology.json      ports and names (nothing secret)
    client.env         what a client needs but credentials: MLFLOW_TRACKING_URI, PREFECT_API_URL
    secrets/           0700: secrets.json (the source), pgpass, aws/credentials + aws/config, s3.json,
                       mlflow_auth.ini (the MLflow server's auth configuration)
    postgres/ seaweedfs/ mlflow/ prefect/    each service's data, log file and pid file

``up`` is idempotent (a healthy service is left alone), ``down`` stops every process it started and
frees every port. Secrets are generated at the first ``up`` (or taken from ``MMPC_LOCAL_*``
environment variables) and reach the services through files named in their environment, or the
environment itself.

Both HTTP servers require authentication. MLflow (its basic-auth app) knows an ``admin``, a
``training`` account (creates runs, registers versions) and a ``reader`` (reads only); Prefect wants
its one auth string. ``client_env(account)`` is a client's environment as that account.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra.local import accounts, processes, servers
from infra.local.postgres import ADMIN, Postgres
from infra.local.processes import ServiceError
from infra.local.seaweedfs import PORT_FLAGS, SeaweedFS, identities

DEFAULT_ROOT = Path(__file__).resolve().parent / ".data"
PROFILE = "mmpc-local"
SERVICES = ("postgres", "seaweedfs", "mlflow", "prefect")

# secret name -> environment variable that may provide it at the first `up`
SECRET_ENV = {
    "pg_admin_password": "MMPC_LOCAL_PG_ADMIN_PASSWORD",
    "pg_mlflow_password": "MMPC_LOCAL_PG_MLFLOW_PASSWORD",
    "pg_prefect_password": "MMPC_LOCAL_PG_PREFECT_PASSWORD",
    "s3_access_key": "MMPC_LOCAL_S3_ACCESS_KEY",
    "s3_secret_key": "MMPC_LOCAL_S3_SECRET_KEY",
    "mlflow_admin_password": "MMPC_LOCAL_MLFLOW_ADMIN_PASSWORD",
    "mlflow_training_password": "MMPC_LOCAL_MLFLOW_TRAINING_PASSWORD",
    "mlflow_reader_password": "MMPC_LOCAL_MLFLOW_READER_PASSWORD",
    "mlflow_flask_secret_key": "MMPC_LOCAL_MLFLOW_FLASK_SECRET_KEY",
    "prefect_auth_string": "MMPC_LOCAL_PREFECT_AUTH_STRING",
}
# Settings of a user's shell that would replace the credentials client_env gives: a Prefect API key
# wins over the auth string in parts of Prefect's client (401), an MLflow token over the password.
CLIENT_UNSET = ("PREFECT_API_KEY", "MLFLOW_TRACKING_TOKEN")


def _generate(name: str) -> str:
    if name == "s3_access_key":  # the shape of an AWS key id: 20 upper-case letters and digits
        return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20))
    return secrets.token_urlsafe(30)


@dataclass
class Settings:
    """What ``topology.json`` holds: ports and names, fixed at the first ``up``."""

    ports: dict[str, int]
    bucket: str = "mmpc"
    artifacts_prefix: str = "mlflow"

    @classmethod
    def fresh(cls, requested: dict[str, int] | None = None, bucket: str = "mmpc") -> Settings:
        names = ["postgres", "s3", "mlflow", "prefect", *(key for _, key in PORT_FLAGS)]
        ports: dict[str, int] = {}
        for name in names:
            wanted = (requested or {}).get(name) or 0
            ports[name] = wanted or processes.free_port(set(ports.values()))
        return cls(ports=ports, bucket=bucket)


@dataclass
class ServiceStatus:
    name: str
    healthy: bool
    pid: int | None
    url: str
    log_file: str
    seconds: float = 0.0  # time to become healthy at this `up` (0 when already up)
    started: bool = False


@dataclass
class Report:
    services: list[ServiceStatus] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)

    def table(self) -> str:
        rows = [f"{'service':<10} {'state':<6} {'pid':>7} {'start':>6}  {'url':<30} log"]
        for s in self.services:
            state = "up" if s.healthy else "down"
            took = f"{s.seconds:.1f}s" if s.started else "-"
            rows.append(f"{s.name:<10} {state:<6} {s.pid or '-':>7} {took:>6}  {s.url:<30} {s.log_file}")
        return "\n".join(rows)


class Topology:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get("MMPC_LOCAL_ROOT") or DEFAULT_ROOT).resolve()

    # -- files -----------------------------------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        return self.root / "topology.json"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def settings(self) -> Settings:
        try:
            return Settings(**json.loads(self.settings_file.read_text()))
        except FileNotFoundError:
            raise ServiceError(f"no local topology under {self.root}: run `up` first") from None

    def secrets(self) -> dict[str, str]:
        try:
            return json.loads((self.secrets_dir / "secrets.json").read_text())
        except FileNotFoundError:
            raise ServiceError(f"no secrets under {self.secrets_dir}: run `up` first") from None

    def secret_values(self) -> list[str]:
        """Every secret value, for checks that none leaked into runs, logs or command lines."""
        return list(self.secrets().values())

    def _write_private(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _init_files(self, requested_ports: dict[str, int] | None) -> None:
        """First `up`: ports, secrets and the files that carry them to the services."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.root.chmod(0o711)  # PostgreSQL's own account walks through to postgres/
        if not self.settings_file.exists():
            self.settings_file.write_text(
                json.dumps(asdict(Settings.fresh(requested_ports)), indent=1) + "\n"
            )
        self._init_secrets()
        st, sec = self.settings(), self.secrets()
        # the auth database (password hashes) is the MLflow server's alone
        (self.root / "mlflow").mkdir(mode=0o700, exist_ok=True)
        (self.root / "mlflow").chmod(0o700)
        self._write_private(
            self.mlflow_auth_config,
            accounts.auth_ini(self.root / "mlflow" / "basic_auth.db", sec["mlflow_admin_password"]),
        )
        pg = st.ports["postgres"]
        self._write_private(
            self.pgpass,
            "".join(
                f"127.0.0.1:{pg}:{db}:{user}:{sec[key]}\n"
                for db, user, key in (
                    ("*", ADMIN, "pg_admin_password"),
                    ("mlflow", "mlflow", "pg_mlflow_password"),
                    ("prefect", "prefect", "pg_prefect_password"),
                )
            ),
        )
        self._write_private(
            self.aws_credentials,
            f"[{PROFILE}]\naws_access_key_id = {sec['s3_access_key']}\n"
            f"aws_secret_access_key = {sec['s3_secret_key']}\n",
        )
        self._write_private(
            self.aws_config,
            f"[profile {PROFILE}]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:{st.ports['s3']}\n"
            "s3 =\n    addressing_style = path\n",
        )
        self._write_private(
            self.secrets_dir / "s3.json",
            json.dumps(identities(sec["s3_access_key"], sec["s3_secret_key"]), indent=1),
        )
        (self.root / "client.env").write_text(
            "".join(f"export {k}={v}\n" for k, v in self.client_env().items())
        )

    def _init_secrets(self) -> None:
        """Generate (or take from MMPC_LOCAL_*) each secret secrets.json lacks; keep the others."""
        path = self.secrets_dir / "secrets.json"
        values = self.secrets() if path.exists() else {}
        missing = {n: os.environ.get(var) or _generate(n) for n, var in SECRET_ENV.items() if n not in values}
        for name, value in missing.items():
            # MLflow's password policy wants 12 characters; shorter strings are guessable
            if name.startswith(("mlflow_", "prefect_")) and len(value) < 16:
                raise ServiceError(f"{SECRET_ENV[name]}: at least 16 characters, got {len(value)}")
        if missing or not path.exists():
            self._write_private(path, json.dumps(values | missing, indent=1) + "\n")
        self.secrets_dir.chmod(0o700)

    @property
    def mlflow_auth_config(self) -> Path:
        return self.secrets_dir / "mlflow_auth.ini"

    @property
    def pgpass(self) -> Path:
        return self.secrets_dir / "pgpass"

    @property
    def aws_credentials(self) -> Path:
        return self.secrets_dir / "aws" / "credentials"

    @property
    def aws_config(self) -> Path:
        return self.secrets_dir / "aws" / "config"

    # -- services --------------------------------------------------------------------------------
    def _postgres(self) -> Postgres:
        return Postgres(self.root / "postgres", self.settings().ports["postgres"])

    def _seaweedfs(self) -> SeaweedFS:
        st = self.settings()
        ports = {"s3": st.ports["s3"], **{key: st.ports[key] for _, key in PORT_FLAGS}}
        return SeaweedFS(self.root / "seaweedfs", ports, self.secrets_dir / "s3.json")

    def _mlflow(self) -> servers.HttpService:
        return servers.mlflow_server(self.root / "mlflow", self.settings().ports["mlflow"])

    def _prefect(self) -> servers.HttpService:
        return servers.prefect_server(self.root / "prefect", self.settings().ports["prefect"])

    @property
    def mlflow_url(self) -> str:
        return self._mlflow().url

    @property
    def prefect_api_url(self) -> str:
        return self._prefect().url + "/api"

    @property
    def s3_endpoint(self) -> str:
        return self._seaweedfs().endpoint

    @property
    def artifacts_uri(self) -> str:
        st = self.settings()
        return f"s3://{st.bucket}/{st.artifacts_prefix}"

    def client_env(self, account: str | None = None) -> dict[str, str]:
        """What mmpc, ``mlflow`` and ``python -m flows`` need to use this topology (the MLflow server
        proxies the artifact store, so no S3 key): the URLs, plus with ``account`` its credentials.

        ``training`` also gets Prefect's auth string (the pipeline is a Prefect flow); ``reader``
        does not, since that one string opens the whole Prefect API. Clients must not carry any of
        ``CLIENT_UNSET``.
        """
        env = {"MLFLOW_TRACKING_URI": self.mlflow_url, "PREFECT_API_URL": self.prefect_api_url}
        if account is None:
            return env
        if account not in accounts.ACCOUNTS:
            raise ServiceError(f"unknown account {account!r}; choose from {', '.join(accounts.ACCOUNTS)}")
        sec = self.secrets()
        if f"mlflow_{account}_password" not in sec:  # a root from before the servers had accounts
            raise ServiceError(f"no {account} account in {self.secrets_dir}: run `up` first")
        env |= {
            "MLFLOW_TRACKING_USERNAME": account,
            "MLFLOW_TRACKING_PASSWORD": sec[f"mlflow_{account}_password"],
        }
        if account == "training":
            env["PREFECT_API_AUTH_STRING"] = sec["prefect_auth_string"]
        return env

    def s3_env(self) -> dict[str, str]:
        """For direct access to the bucket (boto3, the AWS CLI): the profile, not the keys."""
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_credentials),
            "AWS_CONFIG_FILE": str(self.aws_config),
            "AWS_PROFILE": PROFILE,
        }

    def _check_port_free(self, port: int, service: str) -> None:
        if processes.port_open(port):
            raise ServiceError(
                f"{service}: port {port} on 127.0.0.1 is taken by another process; stop it, or pick "
                f"another root folder (ports are chosen at the first `up`, in {self.settings_file})"
            )

    def up(self, ports: dict[str, int] | None = None, timeout: float = 180) -> Report:
        """Start what is not running and wait until everything answers; leaves healthy services be."""
        t0 = time.monotonic()
        self._init_files(ports)
        sec = self.secrets()
        weed = self._seaweedfs()  # first: it starts while PostgreSQL initialises
        weed_pid, weed_started = weed.pid(), False
        if weed_pid is None:
            self._check_port_free(weed.ports["s3"], "seaweedfs")
            weed_pid, weed_started = weed.start(), True
        report = Report([self._up_postgres(sec, timeout)])
        t = time.monotonic()
        weed.wait_healthy(sec["s3_access_key"], sec["s3_secret_key"], weed_pid, timeout=timeout)
        weed.ensure_bucket(sec["s3_access_key"], sec["s3_secret_key"], self.settings().bucket)
        took = time.monotonic() - t if weed_started else 0.0
        report.services.append(
            ServiceStatus("seaweedfs", True, weed_pid, weed.endpoint, str(weed.log_file), took, weed_started)
        )
        report.services.extend(self._up_http(sec, weed.endpoint, timeout))
        report.seconds = time.monotonic() - t0
        return report

    def _up_postgres(self, sec: dict[str, str], timeout: float) -> ServiceStatus:
        pg, port, t = self._postgres(), self.settings().ports["postgres"], time.monotonic()
        started = False
        if not pg.initialised():
            pg.init(sec["pg_admin_password"])
        if not pg.running():
            self._check_port_free(port, "postgres")
            pg.start()
            started = True
        pg.wait_healthy(sec["pg_admin_password"], timeout=timeout)
        pg.ensure_database(sec["pg_admin_password"], "mlflow", sec["pg_mlflow_password"])
        pg.ensure_database(sec["pg_admin_password"], "prefect", sec["pg_prefect_password"])
        took = time.monotonic() - t if started else 0.0
        url = f"postgresql://127.0.0.1:{port}"
        return ServiceStatus("postgres", True, _postmaster_pid(pg), url, str(pg.log_file), took, started)

    def _start_http(self, svc: servers.HttpService, sec: dict[str, str], s3_endpoint: str) -> int:
        db_port = self.settings().ports["postgres"]
        if svc.name == "mlflow":
            return servers.start_mlflow(
                svc,
                db_port=db_port,
                pgpass=self.pgpass,
                aws_files=(self.aws_credentials, self.aws_config),
                profile=PROFILE,
                artifacts=self.artifacts_uri,
                s3_endpoint=s3_endpoint,
                auth_config=self.mlflow_auth_config,
                flask_secret_key=sec["mlflow_flask_secret_key"],
            )
        return servers.start_prefect(
            svc, db_port=db_port, pgpass=self.pgpass, auth_string=sec["prefect_auth_string"]
        )

    def _up_http(self, sec: dict[str, str], s3_endpoint: str, timeout: float) -> list[ServiceStatus]:
        """MLflow and Prefect migrate their databases at the first start: start both, then wait; the
        MLflow accounts once it answers."""
        launched: list[tuple[servers.HttpService, int | None, bool, float]] = []
        for svc in (self._mlflow(), self._prefect()):
            pid, t = svc.pid(), time.monotonic()
            if pid is not None or svc.healthy():
                launched.append((svc, pid, False, t))
                continue
            self._check_port_free(svc.port, svc.name)
            launched.append((svc, self._start_http(svc, sec, s3_endpoint), True, t))
        out = []
        for svc, pid, started, t in launched:
            svc.wait_healthy(pid, timeout)
            if svc.name == "mlflow":
                self._ensure_accounts(svc.url, sec)
            took = time.monotonic() - t if started else 0.0
            out.append(ServiceStatus(svc.name, True, svc.pid(), svc.url, str(svc.log_file), took, started))
        return out

    def _ensure_accounts(self, url: str, sec: dict[str, str]) -> list[str]:
        passwords = {name: sec[f"mlflow_{name}_password"] for name in accounts.ACCOUNTS}
        return accounts.ensure_accounts(url, sec["mlflow_admin_password"], passwords)

    def status(self) -> Report:
        report = Report()
        if not self.settings_file.exists():
            return report
        st = self.settings()
        pg = self._postgres()
        pg_up = False
        if pg.initialised() and pg.running():
            try:
                pg.wait_healthy(self.secrets()["pg_admin_password"], timeout=3)
                pg_up = True
            except ServiceError:
                pass
        report.services.append(
            ServiceStatus(
                "postgres",
                pg_up,
                _postmaster_pid(pg),
                f"postgresql://127.0.0.1:{st.ports['postgres']}",
                str(pg.log_file),
            )
        )
        weed = self._seaweedfs()
        weed_pid = weed.pid()
        weed_up = False
        if weed_pid:
            try:
                weed.wait_healthy(
                    self.secrets()["s3_access_key"], self.secrets()["s3_secret_key"], weed_pid, 3
                )
                weed_up = True
            except ServiceError:
                pass
        report.services.append(
            ServiceStatus("seaweedfs", weed_up, weed_pid, weed.endpoint, str(weed.log_file))
        )
        for svc in (self._mlflow(), self._prefect()):
            report.services.append(
                ServiceStatus(svc.name, svc.healthy(), svc.pid(), svc.url, str(svc.log_file))
            )
        return report

    def down(self) -> float:
        """Stop every service (the reverse of `up`) and check their ports are free; returns seconds."""
        t0 = time.monotonic()
        if not self.settings_file.exists():
            return 0.0
        self._prefect().stop()
        self._mlflow().stop()
        self._seaweedfs().stop()
        self._postgres().stop()
        busy = [f"{name} {port}" for name, port in self.settings().ports.items() if processes.port_open(port)]
        if busy:
            raise ServiceError(f"ports still answering after `down`: {', '.join(busy)}")
        return time.monotonic() - t0

    def stop(self, service: str) -> None:
        """Stop one service (its data stays); the next ``up`` starts it again."""
        stoppers = {
            "postgres": lambda: self._postgres().stop(),
            "seaweedfs": lambda: self._seaweedfs().stop(),
            "mlflow": lambda: self._mlflow().stop(),
            "prefect": lambda: self._prefect().stop(),
        }
        if service not in stoppers:
            raise ServiceError(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
        if self.settings_file.exists():
            stoppers[service]()

    def pids(self) -> dict[str, int | None]:
        """The main process of each service (PostgreSQL's postmaster), for checks from outside."""
        return {
            "postgres": _postmaster_pid(self._postgres()),
            "seaweedfs": self._seaweedfs().pid(),
            "mlflow": self._mlflow().pid(),
            "prefect": self._prefect().pid(),
        }


def _postmaster_pid(pg: Postgres) -> int | None:
    try:
        pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if processes.alive(pid) else None
