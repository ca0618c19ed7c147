"""The serving stack (``python -m infra.serving``): nginx with TLS and a bearer token in front of
``mlflow models serve``, following ``mmpc-ensemble@champion`` without a failed request. Real
processes and real HTTPS on 127.0.0.1, on a copy of the session pipeline's registry (its aliases move
here, never in the original that other tests read)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from mlflow import MlflowClient
from servers import BIN, REPO, TIMEOUT, user_env

from infra.local import processes
from infra.serving.__main__ import main as serving_main

pytestmark = pytest.mark.slow

NAME = "mmpc-ensemble"
ROW = {
    "dataframe_split": {
        "columns": ["designation", "description"],
        "data": [["Console de jeux portable", "Écran 7 pouces, deux manettes"]],
    }
}
ROLLOUT_TIMEOUT = 240  # one model server start (tens of seconds here), the switch and the drain


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    registry: MlflowClient
    versions: dict[str, str]  # first, second, third, broken

    def cli(self, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "infra.serving", "--root", str(self.root), *args]
        return subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    @property
    def settings(self) -> dict:
        return json.loads((self.root / "stack.json").read_text())

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.settings['port']}"

    @property
    def token(self) -> str:
        return (self.root / "secrets" / "token").read_text().strip()

    @property
    def ca(self) -> str:
        return str(self.root / "ca.pem")

    def status(self) -> dict:
        return json.loads((self.root / "status.json").read_text())

    def post(self, token: str | None = None, session: requests.Session | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        send = session.post if session else requests.post
        return send(f"{self.url}/invocations", json=ROW, headers=headers, verify=self.ca, timeout=TIMEOUT)

    def promote(self, key: str) -> None:
        self.registry.set_registered_model_alias(NAME, "champion", self.versions[key])

    def mmpc(self, *args: str) -> None:
        """``mmpc promote``/``rollback`` as a user runs them: they move the alias, nothing else."""
        done = subprocess.run(
            [str(BIN / "mmpc"), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr


def _broken_model(folder: Path) -> Path:
    """A model whose artifacts cannot load: its flavor names a module that does not exist."""
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mmpc_no_such_loader\n    python_version: '3.11'\n"
    )
    return folder


@pytest.fixture(scope="module")
def stack(pipeline_run, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("serving")
    db = root / "mlflow.db"
    shutil.copy(Path(pipeline_run["workdir"]) / "mlflow.db", db)  # artifacts stay the original's
    uri = f"sqlite:///{db}"
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = registry.get_model_version_by_alias(NAME, "champion")
    versions = {"first": str(champion.version)}
    # the champion's source names a logged model (models:/m-...), which MLflow would resolve in the
    # process's current store: its artifact folder, read from the copy, needs no resolving
    source = registry.get_logged_model(champion.source.removeprefix("models:/")).artifact_location
    for key in ("second", "third"):  # the champion's artifacts and tags (its test split): promotable
        made = registry.create_model_version(NAME, source, run_id=champion.run_id, tags=champion.tags)
        versions[key] = str(made.version)
    broken = _broken_model(root / "broken-model")
    versions["broken"] = str(registry.create_model_version(NAME, str(broken), run_id=champion.run_id).version)
    env = user_env(MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri)
    env.pop("MMPC_SERVING_TOKEN", None)
    made = Stack(root / "stack", env, registry, versions)
    started = time.monotonic()
    up = made.cli("up", "--poll", "1", "--start-timeout", str(ROLLOUT_TIMEOUT))
    print(f"up in {time.monotonic() - started:.1f} s:\n{up.stdout}{up.stderr}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield made
    finally:
        port = made.settings["port"]
        down = made.cli("down", timeout=120)
        assert down.returncode == 0, down.stderr
        assert not processes.port_open(port)
        assert not list((made.root / "run").glob("model-*.pid"))


def test_bad_settings_are_refused_with_one_line(tmp_path, monkeypatch, capsys):
    assert serving_main(["--root", str(tmp_path / "a"), "up", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: port 70000 is not a TCP port (1-65535)"
    monkeypatch.setenv("MMPC_SERVING_TOKEN", 'short"; }')
    assert serving_main(["--root", str(tmp_path / "b"), "up", "--port", "8443"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MMPC_SERVING_TOKEN must be") and "\n" not in err


def test_every_request_needs_the_token(stack):
    for token in (None, "not-the-token-at-all"):
        refused = stack.post(token)
        assert refused.status_code == 401
        assert refused.headers["Content-Type"] == "application/json"
        assert "Bearer" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    answered = stack.post(stack.token)
    assert answered.status_code == 200, answered.text
    [row] = answered.json()["predictions"]
    assert isinstance(row["prdtypecode"], int) and 0 <= row["probability"] <= 1
    assert answered.headers["X-Mmpc-Model-Version"] == stack.versions["first"]
    health = requests.get(f"{stack.url}/health", verify=stack.ca, timeout=TIMEOUT)
    assert health.status_code == 200
    assert health.headers["X-Mmpc-Model-Version"] == stack.versions["first"]


def test_a_body_that_is_not_json_is_415_at_the_proxy(stack):
    """No Content-Type (the model server would answer 500), CSV or Parquet (decoded before mmpc's
    limits run): nginx answers 415 and the body never reaches a model server."""
    for content_type in (None, "text/csv", "application/vnd.apache.parquet"):
        headers = {"Authorization": f"Bearer {stack.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        refused = requests.post(
            f"{stack.url}/invocations",
            data=b"designation\nLampe\n",
            headers=headers,
            verify=stack.ca,
            timeout=TIMEOUT,
        )
        assert refused.status_code == 415, (content_type, refused.text)
        assert "Content-Type: application/json" in refused.json()["error"]
    assert stack.post(stack.token).status_code == 200


def test_tls_is_verified_against_the_generated_ca(stack):
    assert requests.get(f"{stack.url}/health", verify=stack.ca, timeout=TIMEOUT).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not know the stack's CA
        requests.get(f"{stack.url}/health", timeout=TIMEOUT)
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{stack.url}/health", context=ssl.create_default_context(), timeout=10)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    pem = (stack.root / "tls" / "server.pem").read_bytes()
    san = x509.load_pem_x509_certificates(pem)[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert (stack.root / "tls").stat().st_mode & 0o777 == 0o700
    for private in ("tls/ca.key", "tls/server.key", "secrets/token", "secrets/auth.conf"):
        assert (stack.root / private).stat().st_mode & 0o777 == 0o600, private
    assert stack.token not in (stack.root / "nginx.conf").read_text()


class Traffic(threading.Thread):
    """Requests one after another, each on a new connection, until stopped: every answer's version
    in order and every failure."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.answers: list[str | None] = []  # the version of each answer
        self.failures: list[str] = []
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        token = self.stack.token
        while not self.stopping.is_set():
            self.sent += 1
            try:
                resp = self.stack.post(token)
                if resp.status_code != 200 or len(resp.json()["predictions"]) != 1:
                    self.failures.append(f"{resp.status_code}: {resp.text[:200]}")
            except (requests.RequestException, ValueError, KeyError) as exc:
                self.failures.append(repr(exc))
                continue
            self.answers.append(resp.headers.get("X-Mmpc-Model-Version"))

    @property
    def versions(self) -> list[str | None]:
        """The versions answering, consecutive repeats folded."""
        return [v for i, v in enumerate(self.answers) if i == 0 or self.answers[i - 1] != v]


def _rolled_out(stack: Stack, traffic: Traffic, key: str, old_pid: int) -> float:
    """Seconds until the clients see ``key``'s version and the old model server is gone."""
    version, t0 = stack.versions[key], time.monotonic()
    while time.monotonic() - t0 < ROLLOUT_TIMEOUT:
        serving = stack.status()["serving"] or {}
        seen = traffic.answers[-1:] == [version] and serving.get("version") == version
        if seen and not processes.alive(old_pid):
            return time.monotonic() - t0
        time.sleep(0.5)
    log = (stack.root / "logs" / "controller.log").read_text()
    raise AssertionError(f"version {version} not rolled out; status {stack.status()}\n{log}")


def test_the_champion_moves_by_promote_rollback_and_retrain_without_a_failed_request(stack):
    traffic = Traffic(stack)
    traffic.start()
    moves = {  # by hand, with mmpc's own commands, then as a retrain's promotion moves it
        "second": lambda: stack.mmpc("promote", stack.versions["second"]),
        "first": lambda: stack.mmpc("rollback"),
        "third": lambda: stack.promote("third"),
    }
    settled = []  # (answers before the move, answers once rolled out, the version)
    try:
        for key, move in moves.items():
            old_pid, before = stack.status()["serving"]["pid"], len(traffic.answers)
            move()
            print(f"{key}: rolled out in {_rolled_out(stack, traffic, key, old_pid):.1f} s")
            settled.append((before, len(traffic.answers), stack.versions[key]))
            time.sleep(2)  # answers after the rollout, before the next move
    finally:
        traffic.stopping.set()
        traffic.join(timeout=150)
    print(f"{traffic.sent} requests, versions seen {traffic.versions}")
    assert traffic.failures == []
    # While nginx reloads, a connection its old workers took a moment earlier is still answered by
    # the old version; once the old server is stopped, only the new version answers.
    ends = [before for before, _, _ in settled[1:]] + [len(traffic.answers)]
    for (before, rolled, version), end in zip(settled, ends, strict=True):
        assert set(traffic.answers[rolled:end]) == {version}, traffic.answers[before:end]
    assert traffic.versions[0] == stack.versions["first"]
    assert len(list((stack.root / "run").glob("model-*.pid"))) == 1  # the old servers are stopped
    status = stack.cli("status")
    assert status.returncode == 0 and f"version {stack.versions['third']} on" in status.stdout


def test_a_broken_version_leaves_the_old_one_serving(stack):
    broken, serving = stack.versions["broken"], stack.versions["third"]
    stack.promote("broken")
    rolled = stack.cli("rollout")
    assert rolled.returncode == 1
    assert f"error: version {broken} not rolled out: model version {broken} exited" in rolled.stderr
    attempt = stack.status()["last_attempt"]
    assert attempt["version"] == broken and attempt["ok"] is False
    assert "mmpc_no_such_loader" in attempt["error"]
    assert stack.status()["serving"]["version"] == serving
    answered = stack.post(stack.token)
    assert answered.status_code == 200 and answered.headers["X-Mmpc-Model-Version"] == serving
    time.sleep(5)  # five polls of the controller: the failed version is not tried again
    log = (stack.root / "logs" / "controller.log").read_text()
    assert log.count(f"rolling out {NAME} version {broken} ") <= 1
    assert f"version {broken} failed at" in log


@pytest.mark.slow
def test_the_load_bench_ends_with_json_and_no_error(pipeline_run, tmp_path):
    """bench/serve_load.py, briefly, on the session's store (it serves a copy of it): the steady mix,
    then the hostile one with idle connections held open."""
    argv = [
        sys.executable, str(REPO / "bench" / "serve_load.py"), "--workdir", str(pipeline_run["workdir"]),
        "--catalog", str(pipeline_run["catalog"]), "--recipe", "demo+fast", "--clients", "2",
        "--minutes", "0.25", "--phases", "steady,hostile", "--idle", "20",
    ]  # fmt: skip
    env = user_env(TMPDIR=str(tmp_path))
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steady = json.loads(done.stdout.strip().splitlines()[-1])["steady"]
    assert steady["requests"] > 0 and steady["errors"] == 0, steady
    assert steady["by_case"].get("no-token", 0) + steady["by_case"].get("valid-1", 0) > 0
    assert steady["versions"] and steady["memory_mb"]["start"] > 100
    hostile = json.loads(done.stdout.strip().splitlines()[-1])["hostile"]
    assert hostile["requests"] > 0 and hostile["errors"] == 0, hostile
    assert hostile["idle"]["closed_by_server"] >= 20, hostile["idle"]  # nginx closes them at 10 s
