"""Peak memory of a process tree: a subprocess run to its end while a thread sums the resident set
of it and every descendant (Spark's JVM and its Python workers included) from ``/proc``.

Two figures per run: the sampled peak of that sum (every ``interval`` seconds; pages shared between
forked workers count once per process), and the kernel's own peak RSS of the subprocess itself
(``ru_maxrss``, reported by the subprocess at its end: exact, but that process alone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        out[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    return out


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # gone between the scan and the read


def tree_rss(root: int) -> tuple[int, int]:
    """(resident bytes of ``root`` and all its descendants, how many processes)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return sum(_rss_bytes(p) for p in seen), len(seen)


@dataclass
class TreePeak:
    """The largest resident sum seen over a process tree, sampled on a thread."""

    root: int
    interval: float = 0.2
    peak_bytes: int = 0
    peak_processes: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, count = tree_rss(self.root)
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, count
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Measured:
    """A subprocess's stdout and exit status with the peak resident memory of its tree."""

    returncode: int
    stdout: str
    wall_s: float
    tree_peak_mb: float
    tree_processes: int


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_file: Path,
    cwd: Path | None = None,
    timeout: float = 7200,
) -> Measured:
    """``argv`` to its end (stderr into ``log_file``), its process tree sampled all along."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "wb") as log:
        # Its own session: whatever it leaves running (a JVM after a failure) is stopped with it.
        proc = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        with TreePeak(proc.pid) as peak:
            try:
                out, _ = proc.communicate(timeout=timeout)
            finally:
                _stop_group(proc)
    return Measured(
        proc.returncode,
        out.decode(errors="replace"),
        time.perf_counter() - t0,
        peak.peak_bytes / MB,
        peak.peak_processes,
    )
