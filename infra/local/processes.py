"""Background services as process groups: start detached, find again from a pid file, stop cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A service that would not start, answer or stop; the message names it and its log file."""


def free_port(exclude: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (and not in ``exclude``)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (exclude or set()):
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def alive(pid: int | None) -> bool:
    """True for a running process; a zombie counts as gone (and is reaped when it is our child)."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # started by another process (an earlier `up`): not ours to reap
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(pid_file: Path, expect: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line names ``expect``
    (a recycled pid belongs to someone else)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ValueError):
        return None
    return pid if expect in cmdline and alive(pid) else None


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    pid_file: Path,
    cwd: Path,
) -> int:
    """Start ``argv`` in its own session (so stopping it takes its worker processes too), output
    appended to ``log_file``; returns its pid, also written to ``pid_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.returncode = 0  # detached on purpose: no "still running" warning when this object goes
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(pid: int, grace: float) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid) and not _group_alive(pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # killpg(0) also succeeds for zombies: look for a live member
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_file: Path,
    pid: int | None = None,
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took. Fails early if ``pid`` dies."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # not answering yet
            pass
        if pid is not None and not alive(pid):
            raise ServiceError(f"{what} exited during start-up; see {log_file}:\n{tail(log_file)}")
        if time.monotonic() - t0 > timeout:
            raise ServiceError(f"{what} not healthy after {timeout:.0f} s; see {log_file}:\n{tail(log_file)}")
        time.sleep(0.25)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
