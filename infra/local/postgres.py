"""PostgreSQL from the distribution's server binaries: one cluster, TCP on 127.0.0.1 only, no Unix
socket, password (SCRAM) logins; a database and an owner role per service."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from infra.local.processes import ServiceError, tail, wait_until

ADMIN = "mmpc_admin"


def find_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest Debian/Ubuntu ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if candidates:
        return candidates[-1]
    raise ServiceError(
        f"PostgreSQL's {name!r} was not found on PATH nor under /usr/lib/postgresql/*/bin: "
        "install the server (Debian/Ubuntu: apt-get install postgresql)"
    )


@dataclass
class Postgres:
    folder: Path  # <root>/postgres
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "postgres.log"

    # PostgreSQL refuses to run as root: then it runs as the distribution's ``postgres`` account.
    def _account(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise ServiceError("running as root, and no 'postgres' or 'nobody' account to run PostgreSQL as")

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        account = self._account()
        kwargs = {}
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        return subprocess.run(
            argv, cwd=self.folder, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def _prepare_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        account = self._account()
        if account is None:
            return
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        # the account must be able to walk down to its folder
        for parent in self.folder.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH and parent.stat().st_uid != account.pw_uid:
                raise ServiceError(
                    f"PostgreSQL runs as {account.pw_name!r} (it refuses root), which cannot enter "
                    f"{parent} (mode {stat.filemode(mode)}): choose a root folder it can reach, "
                    "or make that folder o+x"
                )

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self, admin_password: str) -> None:
        """A new cluster: SCRAM passwords for TCP, no Unix socket, listening on 127.0.0.1:port."""
        self._prepare_folder()
        pwfile = self.folder / ".initdb-pw"
        pwfile.write_text(admin_password + "\n")
        pwfile.chmod(0o600)
        account = self._account()
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            done = self._run(
                [
                    find_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    ADMIN,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=reject",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ServiceError(f"PostgreSQL initdb failed in {self.data}:\n{done.stdout}{done.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# mmpc local topology: loopback TCP only, no Unix socket\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                "unix_socket_directories = ''\n"
                "max_connections = 100\n"
                "shared_buffers = 128MB\n"
            )

    def running(self) -> bool:
        return (
            self.initialised()
            and self._run([find_bin("pg_ctl"), "-D", str(self.data), "status"]).returncode == 0
        )

    def start(self) -> None:
        done = self._run(
            [find_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60", "start"]
        )
        if done.returncode != 0:
            raise ServiceError(
                f"PostgreSQL did not start (port {self.port}); see {self.log_file}:\n"
                f"{done.stdout}{done.stderr}\n{tail(self.log_file)}"
            )

    def stop(self) -> None:
        if not self.running():
            return
        done = self._run([find_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])
        if done.returncode != 0:
            raise ServiceError(f"PostgreSQL did not stop; see {self.log_file}:\n{done.stdout}{done.stderr}")

    def connect(self, user: str, password: str, dbname: str = "postgres"):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname, connect_timeout=5
        )

    def wait_healthy(self, admin_password: str, timeout: float = 60) -> float:
        def check() -> bool:
            with self.connect(ADMIN, admin_password) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)

        return wait_until(check, what="PostgreSQL", timeout=timeout, log_file=self.log_file)

    def ensure_database(self, admin_password: str, name: str, owner_password: str) -> None:
        """Role ``name`` (login, the given password) owning database ``name``; idempotent."""
        conn = self.connect(ADMIN, admin_password)
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(name), sql.Literal(owner_password)
                        )
                    )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(name)
                        )
                    )
        finally:
            conn.close()
