"""A run whose process died does not stay RUNNING: the next pipeline on the same host marks it FAILED,
and a failed pipeline fails the steps still RUNNING under it. Live processes' runs, other hosts' runs
and a run about to be resumed are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from servers import user_env

from mmpc import orphans, pipeline, tracking
from mmpc import tags as tag
from mmpc.demo_catalog import write_demo_catalog
from mmpc.recipe import load_recipe

# Opens a pipeline run as mmpc does, prints its id, then dies by SIGKILL or waits for stdin to close.
OWNER = """
import os, signal, sys
from pathlib import Path
from mmpc import pipeline
from mmpc.recipe import load_recipe
recipe = load_recipe("demo")
catalog = pipeline.open_catalog(sys.argv[1], recipe)
print(pipeline.start_pipeline_run(catalog, recipe, Path(sys.argv[2])), flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


@pytest.fixture
def store(tmp_path):
    catalog = write_demo_catalog(tmp_path / "catalog", size=150, seed=3)
    workdir = tmp_path / "work"
    tracking.configure(workdir)
    recipe = load_recipe("demo")
    yield pipeline.open_catalog(catalog, recipe), recipe, workdir
    mlflow.set_tracking_uri("")


def _owner(catalog: Path, workdir: Path, mode: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(catalog), str(workdir), mode],
        env=user_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


@pytest.mark.robustness(
    "training",
    "a process killed (SIGKILL) while its pipeline run is RUNNING",
    "the next pipeline on that host marks the run FAILED with the reason; runs of live processes, of "
    "other hosts and a run about to be resumed stay RUNNING",
)
def test_runs_of_dead_processes_are_marked_failed(store, observed):
    catalog, recipe, workdir = store
    # The SQLite store is created here first: two processes must not initialise it at once.
    exp = tracking.experiment_id(catalog.name, workdir)
    live, live_run = _owner(catalog.root, workdir, "wait")
    dead, dead_run = _owner(catalog.root, workdir, "die")
    assert dead.wait(timeout=120) == -signal.SIGKILL
    client = MlflowClient()
    assert client.get_run(dead_run).info.status == "RUNNING"  # what a kill leaves behind

    def run_with(**tags: str) -> str:
        return client.create_run(exp, tags={**orphans.owner_tags(), **tags}).info.run_id

    recycled = run_with(**{tag.PID_START: "1"})  # our pid, but not our process: its owner is gone
    elsewhere = run_with(**{tag.HOST: "another-host", tag.PID: str(dead.pid)})
    resumed = run_with(**{tag.PID: str(dead.pid)})
    assert set(orphans.fail_orphans(exp, keep={resumed})) == {dead_run, recycled}
    try:
        new_run = pipeline.start_pipeline_run(catalog, recipe, workdir)
        status = {r: client.get_run(r).info.status for r in (dead_run, live_run, elsewhere, resumed, new_run)}
        assert status == {
            dead_run: "FAILED",
            live_run: "RUNNING",
            elsewhere: "RUNNING",
            resumed: "FAILED",  # kept only by the sweep that was about to resume it
            new_run: "RUNNING",
        }
    finally:
        live.stdin.close()
        live.wait(timeout=60)
    reason = client.get_run(dead_run).data.tags[tag.FAILED_REASON]
    assert reason == f"process {dead.pid} on {os.uname().nodename} ended without finishing the run"
    tags = client.get_run(new_run).data.tags
    assert tags[tag.PID] == str(os.getpid()) and tags[tag.HOST] == os.uname().nodename
    shown = reason.replace(str(dead.pid), "<pid>").replace(os.uname().nodename, "<host>")
    observed("killed run FAILED", f"{shown}; live, other-host and kept runs RUNNING")


@pytest.mark.robustness(
    "training",
    "a pipeline that fails while steps under it are still RUNNING",
    "the pipeline run and its RUNNING steps are marked FAILED; finished steps stay FINISHED",
)
def test_a_failed_pipeline_fails_its_running_steps(store, observed):
    catalog, recipe, workdir = store
    parent = pipeline.start_pipeline_run(catalog, recipe, workdir)
    client = MlflowClient()
    exp = client.get_run(parent).info.experiment_id
    running, done = (
        client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id for _ in range(2)
    )
    client.set_terminated(done, "FINISHED")
    pipeline.end_pipeline_run(parent, ok=False)
    status = {r: client.get_run(r).info.status for r in (parent, running, done)}
    assert status == {parent: "FAILED", running: "FAILED", done: "FINISHED"}
    assert (
        client.get_run(running).data.tags[tag.FAILED_REASON]
        == "the pipeline failed before this step finished"
    )
    observed("pipeline FAILED", "its RUNNING step FAILED (reason tagged), its finished step FINISHED")


def test_a_resumed_run_changes_owner_and_loses_the_failed_verdict(store):
    catalog, _, workdir = store
    client = MlflowClient()
    exp = tracking.experiment_id(catalog.name, workdir)
    run = client.create_run(exp, tags={tag.HOST: os.uname().nodename, tag.PID: "999999999"})
    assert orphans.fail_orphans(exp) == [run.info.run_id]
    orphans.adopt(run.info.run_id)
    tags = client.get_run(run.info.run_id).data.tags
    assert tags[tag.PID] == str(os.getpid()) and tag.FAILED_REASON not in tags
