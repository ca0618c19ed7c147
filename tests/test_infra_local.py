"""The production topology on 127.0.0.1 (``infra/local``): a real PostgreSQL, a real S3 server
(SeaweedFS), an MLflow server on both and a Prefect server on PostgreSQL. The demo pipeline runs
against it through ``mlflow run . -e retrain``; then the runs and versions are read from PostgreSQL,
the model files from the bucket (boto3, not MLflow), the champion is served from a fresh process,
and no credential shows up in runs, artifacts, logs or command lines. Both servers require
authentication: the pipeline runs as MLflow's ``training`` account with Prefect's auth string, the
``reader`` account reads but cannot write, and a client without credentials is refused."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import psycopg2
import pytest
import requests
from e2e import LEVEL1
from mlflow.tracking import MlflowClient
from servers import REPO, mlflow_run, user_env

from infra.local import Topology
from infra.local.processes import alive, port_open
from infra.local.topology import CLIENT_UNSET, SECRET_ENV
from mmpc import run_names, tracking
from mmpc.demo_catalog import write_demo_catalog
from mmpc.labels import RAKUTEN_CODES

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Few epochs: this checks where everything lands, `make demo` shows the quality.
FAST = (
    "models.flaubert.train.epochs=2 models.camembert.train.epochs=2 models.seresnext.train.epochs=2 "
    "models.fusion.train.epochs=3 stacking.num_boost_round=60 stacking.folds=3"
)


@pytest.fixture(scope="module")
def topology():
    # Not under pytest's basetemp (mode 0700): as root, PostgreSQL runs as its own account, which
    # must be able to reach its folder.
    root = Path(tempfile.mkdtemp(prefix="mmpc-infra-"))
    topo = Topology(root)
    try:
        first = topo.up()
        second = topo.up()
        # this process reads the servers as `training` (MLflow's client takes them from the environment)
        with pytest.MonkeyPatch.context() as mp:
            for name in CLIENT_UNSET:
                mp.delenv(name, raising=False)
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.setenv(name, topo.client_env("training")[name])
            yield {"topo": topo, "first": first, "second": second}
    finally:
        topo.down()
        shutil.rmtree(root, ignore_errors=True)


def _account_env(topo: Topology, account: str | None, **extra: str) -> dict[str, str]:
    """A user's shell after ``eval "$(python -m infra.local env --account ACCOUNT)"``."""
    env = user_env(**topo.client_env(account), **extra)
    credentials = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
    for name in (*CLIENT_UNSET, *credentials):
        if name not in topo.client_env(account):
            env.pop(name, None)
    return env


@contextmanager
def _prefect(topo: Topology, auth_string: str | None) -> Iterator:
    """Prefect's own client at the topology's server, with or without the auth string."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    values = {PREFECT_API_URL: topo.prefect_api_url}
    unset = {PREFECT_API_KEY}  # an API key would replace the auth string
    if auth_string is None:
        unset.add(PREFECT_API_AUTH_STRING)
    else:
        values[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(values, restore_defaults=unset), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def pipeline(topology, tmp_path_factory):
    """``mlflow run . -e retrain`` as the ``training`` account, with the URLs at the servers."""
    topo = topology["topo"]
    work = tmp_path_factory.mktemp("infra-pipeline")
    catalog = write_demo_catalog(work / "catalog", size=600, seed=11)
    env = {k: v for k, v in _account_env(topo, "training").items() if not k.startswith("AWS_")}
    assert env["MLFLOW_TRACKING_USERNAME"] == "training" and "PREFECT_API_AUTH_STRING" in env
    t0 = time.monotonic()
    proc = mlflow_run(
        "retrain",
        {"catalog": catalog, "workdir": work / "work", "overrides": FAST},
        env,
        experiment="mmpc/catalog",
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    client = MlflowClient(tracking_uri=topo.mlflow_url, registry_uri=topo.mlflow_url)
    return {"proc": proc, "client": client, "work": work, "env": env, "seconds": seconds}


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def _started(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/<pid>/stat): with the pid, who it is (pids recycle)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on, from /proc."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr, port = fields[1].split(":")
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else f"[{addr}]"
                found.add((ip, int(port, 16)))
    return found


def test_up_is_idempotent_and_every_service_listens_on_loopback_only(topology):
    topo, first, second = topology["topo"], topology["first"], topology["second"]
    assert first.healthy and {s.name for s in first.services if s.started} == {
        "postgres",
        "seaweedfs",
        "mlflow",
        "prefect",
    }
    assert second.healthy and not [s.name for s in second.services if s.started]
    assert {s.name: s.pid for s in second.services} == {s.name: s.pid for s in first.services}
    assert topo.status().healthy
    pids = set().union(*(_tree(pid) for pid in topo.pids().values() if pid))
    sockets = _listening(pids)
    assert {port for _, port in sockets} >= {topo.settings().ports[k] for k in ("postgres", "s3", "mlflow")}
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
    # the data of every service under the one root
    for folder in ("postgres/data", "seaweedfs/data", "prefect/home", "secrets"):
        assert (topo.root / folder).is_dir()
    assert (topo.root / "secrets").stat().st_mode & 0o077 == 0
    # the accounts were created at the first up, and left alone by the second
    log = (topo.root / "mlflow" / "mlflow.log").read_text()
    assert log.count("POST /api/2.0/mlflow/users/create") == 2
    assert "users/update-password" not in log


def test_runs_and_registered_versions_are_rows_in_postgres(topology, pipeline):
    topo = topology["topo"]
    secrets = topo.secrets()
    port = topo.settings().ports["postgres"]
    with (
        psycopg2.connect(
            host="127.0.0.1",
            port=port,
            dbname="mlflow",
            user="mlflow",
            password=secrets["pg_mlflow_password"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            "SELECT r.name, r.status FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE e.name = 'mmpc/catalog'"
        )
        runs = cur.fetchall()
        cur.execute("SELECT name, version FROM model_versions")
        versions = set(cur.fetchall())
        cur.execute("SELECT name, alias, version FROM registered_model_aliases")
        aliases = {(n, a): v for n, a, v in cur.fetchall()}
    whats = {run_names.what(n) for n, _ in runs}
    assert {"stack", *LEVEL1} <= whats and any(w.startswith("retrain ") for w in whats), whats
    assert {s for _, s in runs} == {"FINISHED"}
    assert {(f"mmpc-{m}", 1) for m in (*LEVEL1, "ensemble")} <= versions
    assert aliases[("mmpc-ensemble", "champion")] == 1
    # the Prefect server's flow runs are rows in its own database
    with (
        psycopg2.connect(
            host="127.0.0.1",
            port=port,
            dbname="prefect",
            user="prefect",
            password=secrets["pg_prefect_password"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id")
        flow_runs = cur.fetchall()
    assert ("retrain", "COMPLETED") in flow_runs


def test_project_run_holds_the_pipeline_run_as_its_child(pipeline):
    client = pipeline["client"]
    exp = client.get_experiment_by_name("mmpc/catalog")
    (project,) = client.search_runs([exp.experiment_id], "tags.`mlflow.project.entryPoint` = 'retrain'")
    assert project.info.status == "FINISHED"
    parent = client.get_run(project.data.tags["mmpc.pipeline_run_id"])
    assert parent.data.tags["mlflow.parentRunId"] == project.info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    # the level-1 models, the stack and the evaluation of the version it published
    assert {run_names.what(r.info.run_name) for r in children} == {
        *LEVEL1,
        "stack",
        "evaluate mmpc-ensemble v1 test",
    }
    assert (
        project.data.tags["mmpc.registered_version"] == "1" and project.data.tags["mmpc.promoted"] == "True"
    )
    # artifacts go through the server's proxy: nothing was written beside the work folder
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    assert not (pipeline["work"] / "work" / "mlartifacts").exists()


def test_model_files_are_objects_in_the_bucket(topology, pipeline, monkeypatch):
    topo = topology["topo"]
    for key, value in topo.s3_env().items():  # boto3 through the AWS profile, not through MLflow
        monkeypatch.setenv(key, value)
    s3 = boto3.Session(profile_name=topo.s3_env()["AWS_PROFILE"]).client("s3")
    bucket = topo.settings().bucket
    client = pipeline["client"]
    for name in (*LEVEL1, "ensemble"):
        mv = client.get_model_version_by_alias(f"mmpc-{name}", "candidate")
        location = client.get_logged_model(tracking.logged_model_id(mv)).artifact_location
        assert location.startswith("mlflow-artifacts:/"), location
        prefix = f"{topo.settings().artifacts_prefix}/{location.split(':/', 1)[1].lstrip('/')}/"
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        files = {k.rsplit("/", 1)[-1] for k in keys}
        assert "MLmodel" in files and "model.safetensors" in files, (name, keys)
        if name == "ensemble":
            assert "booster.txt" in files
            body = s3.get_object(Bucket=bucket, Key=next(k for k in keys if k.endswith("/booster.txt")))
            assert body["Body"].read(64).startswith(b"tree")


def test_champion_is_served_behind_the_proxy_reading_the_registry_as_reader(topology, pipeline, tmp_path):
    """The team's scoring endpoint on this topology: ``python -m infra.serving`` with the `reader`
    account and the tracking URI alone (artifacts come through the server), TLS and the token."""
    topo = topology["topo"]
    env = {k: v for k, v in _account_env(topo, "reader").items() if not k.startswith("AWS_")}
    assert env["MLFLOW_TRACKING_USERNAME"] == "reader" and "PREFECT_API_AUTH_STRING" not in env
    root = tmp_path / "serving"

    def serving(*args: str) -> subprocess.CompletedProcess:
        return _module("infra.serving", ["--root", str(root), *args], env)

    up = serving("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        port = json.loads((root / "stack.json").read_text())["port"]
        token = (root / "secrets" / "token").read_text().strip()
        body = {"dataframe_records": [{"designation": "Coussin velours 45x45"}, {"designation": "Console"}]}
        resp = requests.post(
            f"https://127.0.0.1:{port}/invocations", json=body, verify=str(root / "ca.pem"),
            headers={"Authorization": f"Bearer {token}"}, timeout=120,
        )  # fmt: skip
        champion = pipeline["client"].get_model_version_by_alias("mmpc-ensemble", "champion")
        logs = "".join(p.read_text(errors="replace") for p in (root / "logs").glob("*.log"))
    finally:
        assert serving("down").returncode == 0
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Mmpc-Model-Version"] == str(champion.version)
    predictions = resp.json()["predictions"]
    assert len(predictions) == 2 and all(p["prdtypecode"] in RAKUTEN_CODES for p in predictions)
    assert not any(v in logs + up.stdout + up.stderr for v in topo.secret_values())


def _mlflow_call(topo: Topology, path: str, body: dict, auth: tuple[str, str] | None) -> requests.Response:
    """One POST to the MLflow server's REST API, as a client without MLflow's retries sends it."""
    return requests.post(f"{topo.mlflow_url}/api/2.0/mlflow/{path}", json=body, auth=auth, timeout=(5, 60))


def _login(topo: Topology, account: str) -> tuple[str, str]:
    env = topo.client_env(account)
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def test_mlflow_refuses_a_client_without_credentials_or_with_a_wrong_password(topology, pipeline):
    topo = topology["topo"]
    search = {"experiment_ids": ["0"], "max_results": 1}
    assert requests.get(f"{topo.mlflow_url}/health", timeout=10).status_code == 200  # probes need none
    assert _mlflow_call(topo, "runs/search", search, None).status_code == 401
    assert _mlflow_call(topo, "runs/search", search, ("training", "not-the-password")).status_code == 401
    assert _mlflow_call(topo, "runs/search", search, ("nobody", "not-the-password")).status_code == 401
    assert _mlflow_call(topo, "runs/search", search, _login(topo, "reader")).status_code == 200
    # MLflow's own client, from a shell that has the URL but no account
    env = _account_env(topo, None)
    code = "from mlflow import MlflowClient; MlflowClient().search_experiments()"
    refused = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr[-2000:]


def test_reader_cannot_write_where_training_can(topology, pipeline):
    topo = topology["topo"]
    reader, training = _login(topo, "reader"), _login(topo, "training")
    client = pipeline["client"]
    exp = client.get_experiment_by_name("mmpc/catalog")
    champion = client.get_model_version_by_alias("mmpc-ensemble", "champion")
    new_run = {"experiment_id": exp.experiment_id, "run_name": "auth-check"}
    new_version = {
        "name": "mmpc-ensemble",
        "source": champion.source,
        "run_id": champion.run_id,
        "model_id": tracking.logged_model_id(champion),
    }
    alias = {"name": "mmpc-ensemble", "alias": "auth-check", "version": champion.version}
    assert _mlflow_call(topo, "runs/create", new_run, reader).status_code == 403
    assert _mlflow_call(topo, "model-versions/create", new_version, reader).status_code == 403
    assert _mlflow_call(topo, "registered-models/alias", alias, reader).status_code == 403
    assert client.get_registered_model("mmpc-ensemble").latest_versions  # reading is allowed
    # training owns what the pipeline created: the same calls go through (on a model of its own,
    # so the pipeline's registry stays as the other tests expect it)
    run = _mlflow_call(topo, "runs/create", new_run, training)
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    assert _mlflow_call(topo, "runs/update", {"run_id": run_id, "status": "FINISHED"}, training).ok
    assert _mlflow_call(topo, "registered-models/create", {"name": "mmpc-auth-check"}, training).ok
    version = _mlflow_call(
        topo, "model-versions/create", {**new_version, "name": "mmpc-auth-check"}, training
    )
    assert version.status_code == 200, version.text
    number = version.json()["model_version"]["version"]
    aliased = {"name": "mmpc-auth-check", "alias": "champion", "version": number}
    assert _mlflow_call(topo, "registered-models/alias", aliased, training).status_code == 200
    assert _mlflow_call(topo, "registered-models/alias", {**aliased, "alias": "x"}, reader).status_code == 403


def test_prefect_refuses_a_client_without_the_auth_string(topology):
    from prefect.exceptions import PrefectHTTPStatusError

    topo = topology["topo"]
    assert requests.get(f"{topo.prefect_api_url}/health", timeout=10).status_code == 200  # probes need none
    assert requests.post(f"{topo.prefect_api_url}/flows/filter", json={}, timeout=10).status_code == 401
    with _prefect(topo, None) as client, pytest.raises(PrefectHTTPStatusError, match="401"):
        client.read_flows()
    with _prefect(topo, "not-the-auth-string") as client, pytest.raises(PrefectHTTPStatusError, match="401"):
        client.read_flows()
    with _prefect(topo, topo.client_env("training")["PREFECT_API_AUTH_STRING"]) as client:
        assert isinstance(client.read_flows(), list)


HELLO = """from prefect import flow


@flow
def hello(name: str) -> str:
    return f"hello {name}"
"""


def test_a_worker_with_the_auth_string_runs_a_deployment(topology, tmp_path):
    """A process work pool, a deployment of a one-line flow, ``prefect worker start --run-once``."""
    topo = topology["topo"]
    (tmp_path / "hello.py").write_text(HELLO)
    auth = topo.client_env("training")["PREFECT_API_AUTH_STRING"]
    with _prefect(topo, auth) as client:
        from prefect.client.schemas.actions import WorkPoolCreate

        client.create_work_pool(WorkPoolCreate(name="mmpc-auth-check", type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("hello")
        deployment_id = client.create_deployment(
            flow_id,
            "auth-check",
            work_pool_name="mmpc-auth-check",
            entrypoint="hello.py:hello",
            path=str(tmp_path),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path)}}],
        )
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters={"name": "team"})
    env = _account_env(topo, "training", PREFECT_HOME=str(tmp_path / "prefect-home"))
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "mmpc-auth-check", "--run-once"]
    worker = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    output = worker.stdout[-4000:] + worker.stderr[-4000:]
    assert worker.returncode == 0, output
    with _prefect(topo, auth) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state is not None and finished.state.is_completed(), output
    assert not any(v in worker.stdout + worker.stderr for v in topo.secret_values())


def test_env_prints_an_accounts_credentials_for_eval(topology):
    topo = topology["topo"]
    printed = _module("infra.local", ["--root", str(topo.root), "env", "--account", "training"], user_env())
    assert printed.returncode == 0, printed.stderr
    # eval in a shell that has an API key; the lines go through stdin, never a command line
    script = 'eval "$(cat)"\nenv\n'
    shell = subprocess.run(
        ["bash", "-c", script],
        input=printed.stdout,
        env=user_env(PREFECT_API_KEY="x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    seen = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    assert {k: seen.get(k) for k in topo.client_env("training")} == topo.client_env("training")
    assert "PREFECT_API_KEY" not in seen
    reader = _module("infra.local", ["--root", str(topo.root), "env", "--account", "reader"], user_env())
    assert (
        "MLFLOW_TRACKING_USERNAME=reader" in reader.stdout and "PREFECT_API_AUTH_STRING" not in reader.stdout
    )
    # client.env stays free of credentials
    assert not any(v in (topo.root / "client.env").read_text() for v in topo.secret_values())
    unknown = _module("infra.local", ["--root", str(topo.root), "env", "--account", "admin"], user_env())
    assert unknown.returncode == 2 and "invalid choice: 'admin'" in unknown.stderr


def test_no_credential_in_runs_models_logs_or_command_lines(topology, pipeline, monkeypatch):
    topo = topology["topo"]
    values = topo.secret_values()
    assert len(values) == len(SECRET_ENV) and all(len(v) >= 16 for v in values)

    def leaked(text: str) -> bool:
        return any(v in text for v in values)

    client = pipeline["client"]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)
    assert len(runs) >= 7
    for run in runs:
        for key, value in (*run.data.params.items(), *run.data.tags.items(), *run.data.metrics.items()):
            assert not leaked(f"{key}={value}"), f"run {run.info.run_id}: {key}"
    for model in client.search_registered_models():
        assert not leaked(json.dumps(model.tags))
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            assert not leaked(json.dumps(mv.tags)) and not leaked(mv.source or "")
    assert not leaked(pipeline["proc"].stdout + pipeline["proc"].stderr)
    # every artifact (run files, logged models) as text, read from the bucket itself
    for key, value in topo.s3_env().items():
        monkeypatch.setenv(key, value)
    s3 = boto3.Session(profile_name=topo.s3_env()["AWS_PROFILE"]).client("s3")
    bucket, objects = topo.settings().bucket, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            objects += 1
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            assert not leaked(body.decode(errors="replace")), obj["Key"]
    assert objects >= 20
    logs = list(topo.root.glob("*/*.log"))
    assert {p.parent.name for p in logs} >= {"postgres", "seaweedfs", "mlflow", "prefect"}
    for log in logs:
        assert not leaked(log.read_text(errors="replace")), log
    for pid in set().union(*(_tree(p) for p in topo.pids().values() if p)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        assert not leaked(cmdline), cmdline


def test_gpu_work_pool_templates_are_accepted_by_the_prefect_server(topology):
    from prefect.client.schemas.actions import WorkPoolCreate

    topo = topology["topo"]
    with _prefect(topo, topo.client_env("training")["PREFECT_API_AUTH_STRING"]) as client:
        for kind in ("docker", "kubernetes"):
            template = json.loads((REPO / "infra" / "workpools" / f"gpu-{kind}.json").read_text())
            pool = client.create_work_pool(
                WorkPoolCreate(name=f"mmpc-gpu-{kind}", type=kind, base_job_template=template),
                overwrite=True,
            )
            assert pool.base_job_template["variables"]["properties"]["gpu_count"]["default"] == 1


def _module(module: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m module argv...`` as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *argv], env=env, capture_output=True, text=True, timeout=900
    )


def test_a_catalog_in_the_bucket_is_mirrored_and_retrained_from_s3(topology, tmp_path, monkeypatch):
    """A catalog under ``s3://bucket/prefix``, read with the AWS profile (no key in the environment):
    ``retrain`` mirrors it and trains on it, an unchanged catalog downloads nothing, a changed object
    is the only one fetched again, and a prefix with nothing under it is one clear error."""
    topo = topology["topo"]
    bucket = topo.settings().bucket
    for key, value in topo.s3_env().items():
        monkeypatch.setenv(key, value)
    s3 = boto3.Session(profile_name=topo.s3_env()["AWS_PROFILE"]).client("s3")
    local = write_demo_catalog(tmp_path / "shop", size=600, seed=12)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    for rel in files:
        s3.upload_file(str(local / rel), bucket, f"catalogs/shop/{rel}")
    location = f"s3://{bucket}/catalogs/shop"
    work = tmp_path / "work"
    env = _account_env(topo, "training", **topo.s3_env())
    args = ["--catalog", location, "--workdir", str(work), "--models", "tfidf"]

    first = _module("flows", ["retrain", *args], env)
    assert first.returncode == 0, first.stderr[-6000:]
    assert json.loads(first.stdout.strip().splitlines()[-1])["trained"] == ["tfidf"]
    mirror = work / "catalogs" / bucket / "catalogs" / "shop"
    for rel in files:
        assert (mirror / rel).read_bytes() == (local / rel).read_bytes(), rel
    client = MlflowClient(tracking_uri=topo.mlflow_url, registry_uri=topo.mlflow_url)
    experiment = client.get_experiment_by_name("mmpc/shop")  # named after the prefix, as a folder would be
    assert experiment is not None and client.search_runs([experiment.experiment_id])
    inodes = {rel: (mirror / rel).stat().st_ino for rel in files}

    second = _module("flows", ["retrain", *args], env)
    assert second.returncode == 0, second.stderr[-6000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["published"] is False
    assert {rel: (mirror / rel).stat().st_ino for rel in files} == inodes  # nothing downloaded again

    from mmpc import locations

    changed, other = [rel for rel in files if rel.endswith(".jpg")][:2]  # a photo replaced
    s3.put_object(Bucket=bucket, Key=f"catalogs/shop/{changed}", Body=(local / other).read_bytes())
    locations.materialize(location, work / "catalogs")
    fetched = {rel for rel in files if (mirror / rel).stat().st_ino != inodes[rel]}
    assert fetched == {changed} and (mirror / changed).read_bytes() == (local / other).read_bytes()

    checked = _module("mmpc.cli", ["check", location, "--workdir", str(work)], env)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "600 products" in checked.stdout and "fingerprint " in checked.stdout

    # mmpc score reads the same prefix (the mirror), with the model from the servers' registry
    scores = work / "scores"
    argv = ["score", location, "--output", str(scores), "--workdir", str(work), "--model", "tfidf"]
    scored = _module("mmpc.cli", [*argv, "--version", "@candidate"], env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    manifest = json.loads((scores / "_manifest.json").read_text())
    assert manifest["rows"] == 600 and manifest["model"] == "mmpc-tfidf" and manifest["parts"]

    nowhere = ["train", "tfidf", "--catalog", f"s3://{bucket}/catalogs/none", "--workdir", str(work)]
    missing = _module("mmpc.cli", nowhere, env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: s3://{bucket}/catalogs/none: no objects under this prefix"
    )


def test_down_stops_everything_frees_the_ports_and_a_new_up_finds_the_data(topology, pipeline):
    topo = topology["topo"]
    processes = {pid: _started(pid) for pid in set().union(*(_tree(p) for p in topo.pids().values() if p))}
    ports = topo.settings().ports
    before = pipeline["client"].get_model_version_by_alias("mmpc-ensemble", "champion")
    topo.down()
    left = [pid for pid, started in processes.items() if alive(pid) and _started(pid) == started]
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left]
    assert not [name for name, port in ports.items() if port_open(port)]
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{ports['s3']}.sock"))
    assert not topo.status().healthy
    # the registry and the bucket survive a restart
    assert topo.up().healthy
    champion = pipeline["client"].get_model_version_by_alias("mmpc-ensemble", "champion")
    assert (champion.version, champion.run_id) == (before.version, before.run_id)
