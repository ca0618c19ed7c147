"""Runs left RUNNING by a process that died (SIGKILL, OOM, a lost machine) are marked FAILED.

Every run mmpc starts carries the host and process that own it. A later pipeline or training on the
same host finds RUNNING runs whose process is gone and marks them FAILED, so the MLflow UI never shows
a run "running" forever. Runs of other hosts are left alone: whether their process lives cannot be
told from here (a scheduler's own timeouts cover them). The process start time, where the system tells
it, guards against a recycled process id.
"""

from __future__ import annotations

import logging
import os
import socket

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from mmpc import tags as tag

log = logging.getLogger(__name__)


def _start_ticks(pid: int) -> str:
    """The process start time in clock ticks after boot (Linux ``/proc``), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run."""
    pid = os.getpid()
    return {tag.HOST: socket.gethostname(), tag.PID: str(pid), tag.PID_START: _start_ticks(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    now = _start_ticks(pid)
    return not (start and now and now != start)  # the same id, another process: the owner is gone


def _fail(client: MlflowClient, run_id: str, reason: str) -> None:
    client.set_tag(run_id, tag.FAILED_REASON, reason)
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))


def fail_orphans(experiment_id: str, keep: set[str] | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs of ``experiment_id`` owned by a dead process of this host, except
    ``keep`` (a run about to be resumed); returns their ids."""
    client = MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{tag.HOST}` = '{host}'",
        max_results=1000,
    )
    failed = []
    for run in running:
        tags = run.data.tags
        if run.info.run_id in (keep or set()) or not tags.get(tag.PID, "").isdigit():
            continue
        pid = int(tags[tag.PID])
        if _alive(pid, tags.get(tag.PID_START, "")):
            continue
        _fail(client, run.info.run_id, f"process {pid} on {host} ended without finishing the run")
        log.warning("run %s (%s) was left RUNNING by process %d, which is gone: marked FAILED",
                    run.info.run_id, run.info.run_name, pid)  # fmt: skip
        failed.append(run.info.run_id)
    return failed


def adopt(run_id: str) -> None:
    """This process carries on an interrupted run: it becomes the owner, and a FAILED verdict given
    while nobody owned it is withdrawn."""
    client = MlflowClient()
    for key, value in owner_tags().items():
        client.set_tag(run_id, key, value)
    if tag.FAILED_REASON in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, tag.FAILED_REASON)


def fail_children(parent_run_id: str, reason: str) -> list[str]:
    """Mark FAILED the RUNNING runs nested under ``parent_run_id``; returns their ids."""
    client = MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    children = client.search_runs(
        [experiment],
        f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=1000,
    )
    for run in children:
        _fail(client, run.info.run_id, reason)
    return [r.info.run_id for r in children]
