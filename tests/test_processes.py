"""The process harness (``infra.local.processes``) that tests, benchmarks and the local topology start
their servers with: a free port, the health URL waited for, the log captured, the whole process group
stopped, and a server that dies or never answers reported with its log."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.local import processes

# A server taking --host/--port like `mlflow models serve`; it starts a child that outlives nothing
# but its group, so stopping the leader alone would leave it behind.
SERVER = textwrap.dedent(
    """
    import argparse, http.server, subprocess, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--host"); p.add_argument("--port", type=int); p.add_argument("--delay", type=float)
    a = p.parse_args()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    time.sleep(a.delay)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()

    print("serving", flush=True)
    http.server.HTTPServer((a.host, a.port), Handler).serve_forever()
    """
)


def _server(tmp_path: Path, delay: float = 0.3) -> list[str]:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return [sys.executable, str(script), "--delay", str(delay)]


def _child_pid(log: Path) -> int:
    return int(next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("child")))


def test_serves_on_a_free_port_logs_and_stops_the_whole_group(tmp_path):
    log = tmp_path / "logs" / "server.log"
    with processes.serve_http(
        _server(tmp_path), what="toy server", env=os.environ, log_file=log, health_path="/ping", timeout=30
    ) as server:
        assert server.alive() and server.url is not None
        assert processes.http_ok(server.url + "/ping")
        child = _child_pid(log)
        assert processes.alive(child)
        assert (processes.group_cpu_seconds([server.pid]) or 0.0) >= 0.0
    assert not server.alive() and not processes.alive(child)
    assert "serving" in log.read_text()


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('no model at that URI', flush=True)\nsys.exit(3)\n")
    started = time.monotonic()
    with pytest.raises(processes.ServiceError, match="exited during start-up") as err:
        processes.serve_http(
            [sys.executable, str(script)],
            what="broken server",
            env=os.environ,
            log_file=tmp_path / "fails.log",
            health_path="/ping",
            timeout=60,
        )
    assert "no model at that URI" in str(err.value)
    assert time.monotonic() - started < 30  # not the whole timeout


def test_a_server_that_never_answers_is_stopped(tmp_path):
    log = tmp_path / "slow.log"
    with pytest.raises(processes.ServiceError, match="not healthy after"):
        processes.serve_http(
            _server(tmp_path, delay=600),
            what="slow server",
            env=os.environ,
            log_file=log,
            health_path="/ping",
            timeout=2,
        )
    child = _child_pid(log)
    deadline = time.monotonic() + 10
    while processes.alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes.alive(child)


def test_running_waits_for_any_check(tmp_path):
    marker = tmp_path / "ready"
    argv = [
        sys.executable,
        "-c",
        f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(600)",
    ]
    with processes.running(
        argv, what="sleeper", env=os.environ, log_file=tmp_path / "sleeper.log", ready=marker.exists, grace=5
    ) as proc:
        assert proc.alive()
    assert not proc.alive() and proc.returncode is not None
