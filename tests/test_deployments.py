"""Deployments against a real ``prefect server start`` on 127.0.0.1: ``flows/prefect.yaml`` deployed with
its weekly schedule and run by a process worker, and ``python -m flows serve`` (``flow.serve``) on
one box; in both, a run triggered through the server completes and the next scheduled runs are listed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from servers import free_port, wait_healthy

from mmpc.demo_catalog import write_demo_catalog

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_PARAMETERS = {
    "recipe": "demo",
    "models": ["flaubert"],
    "overrides": {"models.flaubert.train.epochs": 1, "stacking.num_boost_round": 30},
}


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server on loopback with its own home and database; stopped at the end."""
    root = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(root / "home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PYTHONPATH": str(REPO),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_healthy(f"{api}/health", proc, root / "server.log", "prefect server")
    catalog = write_demo_catalog(root / "catalog", size=300, seed=3)
    yield {"api": api, "env": env, "root": root, "catalog": catalog, "workdir": root / "work"}
    _stop(proc)
    log.close()


def _client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: api})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def _wait_for_run(api: str, run_id, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _client(api) as client:
            run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(2)
    raise TimeoutError(f"flow run {run_id} not finished in {timeout} s")


def _scheduled(api: str, deployment_id) -> list:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + 60
    while True:
        with _client(api) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
            )
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def _deploy(name: str, env: dict[str, str]) -> None:
    """``prefect deploy`` of one deployment of flows/prefect.yaml, as its header says to run it."""
    argv = [
        str(BIN / "prefect"),
        "--no-prompt",
        "deploy",
        "--prefect-file",
        "flows/prefect.yaml",
        "--name",
        name,
    ]
    deployed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]


def test_prefect_yaml_deployment_is_scheduled_and_a_triggered_run_completes(server):
    env = {**server["env"], "MMPC_CATALOG": str(server["catalog"]), "MMPC_WORKDIR": str(server["workdir"])}
    prefect = str(BIN / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", "mmpc-local", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    _deploy("mmpc-retrain", env)

    with _client(server["api"]) as client:
        deployment = client.read_deployment_by_name("retrain/mmpc-retrain")
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
        assert deployment.parameters["catalog"] == str(server["catalog"])
        assert deployment.work_pool_name == "mmpc-local"
        # one run at a time; a run that comes due meanwhile waits for it
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        run = client.create_flow_run_from_deployment(deployment.id, parameters=RUN_PARAMETERS)

    worker = subprocess.run(
        [prefect, "worker", "start", "--pool", "mmpc-local", "--run-once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    finished = _wait_for_run(server["api"], run.id, timeout=60)
    assert finished.state.is_completed(), worker.stdout[-4000:] + worker.stderr[-4000:]

    upcoming = _scheduled(server["api"], deployment.id)
    assert upcoming, "the scheduler lists the next weekly runs"
    now = datetime.now(UTC)
    for r in upcoming:
        start = r.expected_start_time
        assert start > now and start.weekday() == 0 and (start.hour, start.minute) == (3, 0)


def test_the_nightly_scoring_deployment_is_scheduled(server):
    env = {
        **server["env"],
        "MMPC_CATALOG": str(server["catalog"]),
        "MMPC_WORKDIR": str(server["workdir"]),
        "MMPC_SCORES": str(server["root"] / "scores"),
    }
    prefect = str(BIN / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", "mmpc-local", "--type", "process"], env=env, capture_output=True
    )
    _deploy("mmpc-score-nightly", env)
    with _client(server["api"]) as client:
        deployment = client.read_deployment_by_name("score/mmpc-score-nightly")
        assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
        assert deployment.parameters["root"] == str(server["root"] / "scores")
        assert deployment.parameters["version"] == "@champion"
    upcoming = _scheduled(server["api"], deployment.id)
    assert upcoming and all(
        (r.expected_start_time.hour, r.expected_start_time.minute) == (2, 0) for r in upcoming
    )


def test_flow_serve_on_one_box_runs_a_triggered_run_and_lists_the_schedule(server):
    log = open(server["root"] / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows",
            "serve",
            "--name",
            "mmpc-one-box",
            "--catalog",
            str(server["catalog"]),
            "--workdir",
            str(server["workdir"]),
            "--cron",
            "30 2 * * 2",
        ],
        cwd=REPO,
        env=server["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        deployment = None
        while deployment is None:
            assert proc.poll() is None, (server["root"] / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "flow.serve did not create its deployment in 180 s"
            with _client(server["api"]) as client:
                try:
                    deployment = client.read_deployment_by_name("retrain/mmpc-one-box")
                except Exception:
                    time.sleep(1)
        assert [s.schedule.cron for s in deployment.schedules] == ["30 2 * * 2"]
        with _client(server["api"]) as client:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=RUN_PARAMETERS)
        finished = _wait_for_run(server["api"], run.id, timeout=600, proc=proc)
        assert finished.state.is_completed(), (server["root"] / "serve.log").read_text()[-4000:]
        upcoming = _scheduled(server["api"], deployment.id)
        assert upcoming and all(r.expected_start_time.weekday() == 1 for r in upcoming)
    finally:
        _stop(proc, signal.SIGINT)
        log.close()
