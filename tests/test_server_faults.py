"""Outages of the production topology (``infra/local``) in the middle of a training: the MLflow
tracking server stopped and restarted, stopped for good, and the object store stopped while the
trained model's files are uploaded. Nothing is lost, nothing half-registered, no run left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest
from e2e import resumable_flaubert
from mlflow.tracking import MlflowClient
from servers import user_env

from infra.local import Topology
from infra.local.topology import CLIENT_UNSET
from mmpc import run_names, tracking
from mmpc.demo_catalog import write_demo_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FAULT_AT = Path(__file__).with_name("fault_at.py")
EPOCHS = 4
TRAIN = resumable_flaubert(EPOCHS)
# The MLflow client gives up after one quick retry: the outage reaches mmpc instead of being
# absorbed by the client's own backoff (minutes by default).
QUICK_CLIENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MMPC_RETRY_BACKOFF_SECONDS": "6",
}


@pytest.fixture(scope="module")
def topology():
    root = Path(tempfile.mkdtemp(prefix="mmpc-faults-"))
    topo = Topology(root)
    try:
        topo.up()
        # this process reads the server as `training`, as the commands under test run
        with pytest.MonkeyPatch.context() as mp:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.setenv(name, topo.client_env("training")[name])
            yield topo
    finally:
        topo.down()
        shutil.rmtree(root, ignore_errors=True)


def _env(topo: Topology) -> dict[str, str]:
    """The training account's shell (``python -m infra.local env --account training``)."""
    env = user_env(**topo.client_env("training"), **QUICK_CLIENT, MMPC_LOCAL_ROOT=str(topo.root))
    return {k: v for k, v in env.items() if not k.startswith("AWS_") and k not in CLIENT_UNSET}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)


def _with_fault(point: str, service: str, restart_after: float, module: str, args: list[str], env):
    return _run([sys.executable, str(FAULT_AT), point, service, str(restart_after), module, *args], env)


def _state(topo: Topology, catalog: Path) -> dict:
    client = MlflowClient(tracking_uri=topo.mlflow_url, registry_uri=topo.mlflow_url)
    exp = client.get_experiment_by_name(f"mmpc/{catalog.name}")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    level1 = [r for r in runs if run_names.what(r.info.run_name) == "flaubert"]
    versions = (
        client.search_model_versions(f"name = 'mmpc-flaubert' and run_id = '{level1[0].info.run_id}'")
        if level1
        else []
    )
    return {"client": client, "runs": runs, "level1": level1, "versions": versions}


def _epochs_logged_once(client: MlflowClient, run_id: str) -> list[int]:
    steps = sorted(m.step for m in client.get_metric_history(run_id, "epoch_valid_macro_f1"))
    assert steps == list(range(1, len(steps) + 1)), steps
    return steps


@pytest.mark.robustness(
    "training",
    "MLflow tracking server stopped after a level-1 epoch of `retrain`, restarted seconds later",
    "the flow's task retry carries it through: the training resumes in its run; 1 run FINISHED, "
    "every epoch logged once, 1 version",
)
def test_tracking_server_restarted_mid_run_the_flow_retries_through(topology, tmp_path, observed):
    catalog = write_demo_catalog(tmp_path / "outage-flow", size=300, seed=21)
    args = ["retrain", "--catalog", str(catalog), "--workdir", str(tmp_path / "work"), "--models", "flaubert"]
    done = _with_fault("epoch-logged", "mlflow", 2, "flows", [*args, *TRAIN], _env(topology))
    assert done.returncode == 0, done.stderr[-6000:]
    assert "fault_at: stopped mlflow" in done.stderr
    assert "Retry 1/2 will start" in done.stderr + done.stdout  # Prefect's task retry did it
    state = _state(topology, catalog)
    assert {r.info.status for r in state["runs"]} == {"FINISHED"}
    (run,) = state["level1"]
    steps = _epochs_logged_once(state["client"], run.info.run_id)
    assert steps == list(range(1, EPOCHS + 1))
    assert len(state["versions"]) == 1
    champion = state["client"].get_model_version_by_alias("mmpc-ensemble", "champion")
    assert champion.tags["mmpc.member.flaubert"] == state["versions"][0].version
    observed(
        f"exit {done.returncode}",
        f"after a task retry; {len(state['runs'])} runs all FINISHED, 1 flaubert run with epochs "
        f"{steps}, 1 version, ensemble published",
    )


@pytest.mark.robustness(
    "training",
    "MLflow tracking server stopped after a level-1 epoch of `mmpc train`, back only after it gave up",
    "exit 3 with a message naming the server; nothing registered; the same command then resumes "
    "the run: 1 run FINISHED, every epoch logged once, 1 version",
)
def test_tracking_server_down_fails_clearly_and_the_next_command_resumes(topology, tmp_path, observed):
    catalog = write_demo_catalog(tmp_path / "outage-cli", size=300, seed=22)
    args = ["train", "flaubert", "--catalog", str(catalog), "--workdir", str(tmp_path / "work"), *TRAIN]
    env = _env(topology)
    failed = _with_fault("epoch-logged", "mlflow", 0, "mmpc.cli", args, env)
    assert failed.returncode == 3, failed.stderr[-6000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: the MLflow tracking server at " + topology.mlflow_url), message
    assert "Traceback" not in failed.stderr
    topology.up()
    before = _state(topology, catalog)
    assert not before["versions"]  # nothing registered by the failed command
    resumed = _run([sys.executable, "-m", "mmpc.cli", *args], env)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    assert "resuming MLflow run" in resumed.stderr
    state = _state(topology, catalog)
    (run,) = state["level1"]
    assert run.info.status == "FINISHED" and run.info.run_id == before["level1"][0].info.run_id
    steps = _epochs_logged_once(state["client"], run.info.run_id)
    assert steps == list(range(1, EPOCHS + 1)) and len(state["versions"]) == 1
    # The port and the run id change from one session to the next; the record must not.
    shown = message.replace(topology.mlflow_url, "<tracking URL>")
    observed(
        f"exit {failed.returncode}",
        f"{shown[:100]}…; after the restart the same command resumed "
        f"the same run: FINISHED, epochs {steps}, 1 version",
    )


@pytest.mark.robustness(
    "training",
    "Object store stopped while the trained model's files are uploaded (after the first file)",
    "exit 3, no version registered; after the restart the same command registers 1 version whose "
    "files are all in the bucket",
)
def test_object_store_down_during_model_upload_registers_nothing(topology, tmp_path, observed):
    catalog = write_demo_catalog(tmp_path / "outage-s3", size=300, seed=23)
    args = ["train", "flaubert", "--catalog", str(catalog), "--workdir", str(tmp_path / "work"), *TRAIN]
    env = _env(topology)
    failed = _with_fault("model-upload", "seaweedfs", 0, "mmpc.cli", args, env)
    assert failed.returncode == 3, failed.stderr[-6000:]
    assert "fault_at: stopped seaweedfs" in failed.stderr
    topology.up()
    state = _state(topology, catalog)
    assert state["level1"] and not state["versions"]  # no version from this training's run

    resumed = _run([sys.executable, "-m", "mmpc.cli", *args], env)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    state = _state(topology, catalog)
    (run,) = state["level1"]
    (mv,) = state["versions"]
    assert run.info.status == "FINISHED"
    # the version's files, read from the bucket itself
    s3 = boto3.client(
        "s3",
        endpoint_url=topology.s3_endpoint,
        aws_access_key_id=topology.secrets()["s3_access_key"],
        aws_secret_access_key=topology.secrets()["s3_secret_key"],
        region_name="us-east-1",
    )
    location = state["client"].get_logged_model(tracking.logged_model_id(mv)).artifact_location
    prefix = f"{topology.settings().artifacts_prefix}/{location.split(':/', 1)[1].lstrip('/')}/"
    bucket = topology.settings().bucket
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    names = {o["Key"].rsplit("/", 1)[-1] for o in listed}
    assert {"MLmodel", "model.safetensors", "meta.json"} <= names, names
    observed(
        f"exit {failed.returncode}",
        "0 versions; after the restart: run FINISHED, 1 version, "
        f"{len(listed)} files in the bucket incl. MLmodel and model.safetensors",
    )
