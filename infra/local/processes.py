"""Servers and background services as process groups: start one with its output in a log file, wait
until it answers (a port, a health URL or any check), stop it with everything it spawned.

Two ways in, one mechanism:

- ``launch`` / ``serve_http`` / ``running``: a process of this session (a test's or a benchmark's
  server), stopped when its ``with`` block ends;
- ``start`` / ``read_pid`` / ``stop``: a detached service found again later from its pid file
  (``python -m infra.local up`` then ``down`` from another process).

Every process starts in its own session, so stopping its group takes its workers too (``mlflow
models serve`` and ``mlflow server`` run uvicorn or gunicorn workers under the command).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service that would not start, answer or stop; the message names it and its log file."""


def mlflow_serve_argv(model_uri: str, workers: int = 1) -> list[str]:
    """``mlflow models serve`` of a registered model with this environment's MLflow, as a user runs it
    (``--env-manager local``: the interpreter's own libraries; add ``--port``)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--workers",
        str(workers),
    ]


def free_port(exclude: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (and not in ``exclude``)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in (exclude or set()):
            return port


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# ------------------------------------------------------------------------------- the process table


@dataclass(frozen=True)
class _Stat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    cpu_ticks: int  # user + system


def _stat(pid: int | str) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # from `state`: ppid [1], pgrp [2], utime/stime [11, 12]
    return _Stat(int(pid), fields[0], int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))


def _all_stats() -> Iterator[_Stat]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(entry.name)) is not None:
            yield st


def children(parent: int) -> set[int]:
    """The live child processes of ``parent``."""
    return {st.pid for st in _all_stats() if st.ppid == parent and st.state not in ("Z", "X")}


def alive(pid: int | None) -> bool:
    """True for a running process; a zombie counts as gone (and is reaped when it is our child)."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # started by another process (an earlier `up`), or reaped already by its Popen
    st = _stat(pid)
    return st is not None and st.state not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # killpg(0) also succeeds for zombies: look for a live member
    return any(st.pgrp == pgid and st.state not in ("Z", "X") for st in _all_stats())


def group_cpu_seconds(pgids: Iterable[int]) -> float | None:
    """CPU seconds (user + system) used so far by the live processes of these groups; None off Linux."""
    if not Path("/proc/self/stat").is_file():
        return None
    groups = set(pgids)
    ticks = sum(st.cpu_ticks for st in _all_stats() if st.pgrp in groups)
    return ticks / os.sysconf("SC_CLK_TCK")


def read_pid(pid_file: Path, expect: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line names ``expect``
    (a recycled pid belongs to someone else)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ValueError):
        return None
    return pid if expect in cmdline and alive(pid) else None


# ------------------------------------------------------------------------------ start, wait, stop


def stop(pid: int, grace: float, leader_alive: Callable[[], bool] | None = None) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds; returns once the
    leader (``leader_alive``, by default its pid) and every member are gone."""
    leader_alive = leader_alive or partial(alive, pid)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not leader_alive() and not _group_alive(pid):
                return
            time.sleep(0.1)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_file: Path,
    pid: int | None = None,
    running: Callable[[], bool] | None = None,
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took. Fails early, with the log's tail,
    if the process (``running``, else ``pid``) exits."""
    if running is None and pid is not None:
        running = partial(alive, pid)
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # not answering yet
            pass
        if running is not None and not running():
            raise ServiceError(f"{what} exited during start-up; see {log_file}:\n{tail(log_file)}")
        if time.monotonic() - t0 > timeout:
            raise ServiceError(f"{what} not healthy after {timeout:.0f} s; see {log_file}:\n{tail(log_file)}")
        time.sleep(0.25)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


@dataclass
class Process:
    """A process group this session started: its leader, its log and, for a server, its URL.
    A ``with`` block stops it (the whole group) at its end."""

    what: str
    popen: subprocess.Popen
    log_file: Path
    url: str | None = None
    health_path: str | None = None
    stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 15) -> str:
        return tail(self.log_file, lines)

    def wait_ready(self, check: Callable[[], bool] | None = None, timeout: float = 120) -> float:
        """Until ``check`` holds (default: the health URL answers 200); seconds taken."""
        if check is None:
            if self.url is None or self.health_path is None:
                raise ValueError(f"{self.what}: no health URL to wait for; pass a check")
            check = partial(http_ok, self.url + self.health_path)
        return wait_until(check, what=self.what, timeout=timeout, log_file=self.log_file, running=self.alive)

    def stop(self, grace: float = 20) -> None:
        if not self.stopped:
            stop(self.pid, grace, leader_alive=self.alive)
            self.stopped = True

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str],
    log_file: Path,
    cwd: Path | None = None,
    append: bool = False,
) -> Process:
    """Start ``argv`` in its own session, stdout and stderr into ``log_file``; no waiting."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab" if append else "wb") as log:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(what, popen, log_file)


def started(process: Process, check: Callable[[], bool] | None = None, timeout: float = 120) -> Process:
    """``process`` once ready (see ``Process.wait_ready``); stopped if it never gets there."""
    try:
        process.wait_ready(check, timeout)
    except BaseException:
        process.stop()
        raise
    return process


def serve_http(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str],
    log_file: Path,
    health_path: str,
    timeout: float = 120,
    wait: bool = True,
) -> Process:
    """A server taking ``--host 127.0.0.1 --port N``, on a free port, with its URL; by default
    returned once ``health_path`` answers 200. Use it as ``with serve_http(...) as server:``."""
    port = free_port()
    process = launch([*argv, "--host", HOST, "--port", str(port)], what=what, env=env, log_file=log_file)
    process.url, process.health_path = f"http://{HOST}:{port}", health_path
    return started(process, timeout=timeout) if wait else process


@contextmanager
def running(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str],
    log_file: Path,
    ready: Callable[[], bool],
    timeout: float = 120,
    grace: float = 20,
    cwd: Path | None = None,
) -> Iterator[Process]:
    """Any process, once ``ready`` holds (a port open, a file written ...), stopped on exit."""
    process = started(launch(argv, what=what, env=env, log_file=log_file, cwd=cwd), ready, timeout)
    try:
        yield process
    finally:
        process.stop(grace)


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    pid_file: Path,
    cwd: Path,
) -> int:
    """Start a detached service, output appended to ``log_file``; returns its pid, also written to
    ``pid_file`` (``read_pid`` finds it again from another process, ``stop`` ends it)."""
    process = launch(argv, what=Path(argv[0]).name, env=env, log_file=log_file, cwd=cwd, append=True)
    process.popen.returncode = 0  # detached on purpose: no "still running" warning when this object goes
    pid_file.write_text(f"{process.pid}\n")
    return process.pid
