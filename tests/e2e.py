"""The end-to-end platform for tests: the pipeline's settings, ``mlflow models serve`` started and
stopped, and the checks every prediction must pass."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mmpc.labels import RAKUTEN_CODES

LEVEL1 = ("flaubert", "camembert", "seresnext", "fusion")
# Fewer epochs than the demo: the tests check the plumbing, `make demo` shows the quality.
FAST = {
    "models.seresnext.train.epochs": 3,
    "models.fusion.train.epochs": 6,
    "stacking.num_boost_round": 100,
}
TIMEOUT = (5, 120)  # connect, read: a request never hangs a test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def invoke(self, payload: dict | None = None, body: bytes | None = None) -> requests.Response:
        if body is not None:
            return requests.post(
                f"{self.url}/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT,
            )
        return requests.post(f"{self.url}/invocations", json=payload, timeout=TIMEOUT)


@contextmanager
def serve(
    model_uri: str, tracking_uri: str, logdir: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """The model served on a free loopback port; stopped (its whole process group) on exit."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        **(env or {}),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    log_path = logdir / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                os.path.join(bin_dir, "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(f"http://127.0.0.1:{port}", proc, log_path)
        try:
            _wait_ready(server)
            yield server
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"mlflow models serve exited: {server.log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow models serve did not answer /ping within {timeout:.0f} s")


def check_predictions(predictions: list[dict], k: int) -> None:
    for row in predictions:
        assert row["prdtypecode"] in RAKUTEN_CODES
        assert 0.0 <= row["probability"] <= 1.0
        assert len(row["top_codes"]) == len(row["top_probabilities"]) == k
        assert row["top_codes"][0] == row["prdtypecode"]
        assert row["top_probabilities"][0] == pytest.approx(row["probability"])
        assert row["top_probabilities"] == sorted(row["top_probabilities"], reverse=True)
        assert all(c in RAKUTEN_CODES for c in row["top_codes"]) and len(set(row["top_codes"])) == k
        assert sum(row["top_probabilities"]) <= 1.0 + 1e-6
