"""Run an mmpc command (``mmpc.cli`` or ``flows``) in this process and stop a service of the local
topology at a named point of a level-1 training, as an outage would.

    python tests/fault_at.py POINT SERVICE RESTART_AFTER MODULE [arguments...]

SERVICE is stopped for real (its process ends) when the training reaches POINT; with RESTART_AFTER
> 0 it is started again that many seconds later (the topology's root comes from MMPC_LOCAL_ROOT),
while the command goes on meeting the outage.
"""

from __future__ import annotations

import runpy
import sys
import threading
from collections.abc import Callable

import mlflow
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

from infra.local import Topology


def _outage(service: str, restart_after: float) -> Callable[[], None]:
    def stop() -> None:
        topo = Topology()
        topo.stop(service)
        print(f"fault_at: stopped {service}", file=sys.stderr, flush=True)
        if restart_after > 0:
            threading.Timer(restart_after, topo.up).start()

    return stop


def _after_epoch_logged(fault: Callable[[], None], epoch: int = 1) -> None:
    """Once an epoch's metrics reached MLflow: the server goes while training goes on."""
    log_metrics = mlflow.log_metrics
    done = {"fired": False}

    def log_then_fault(metrics, step=None, **kwargs):
        log_metrics(metrics, step=step, **kwargs)
        if not done["fired"] and step == epoch and any(k.startswith("epoch_") for k in metrics):
            done["fired"] = True
            fault()

    mlflow.log_metrics = log_then_fault


def _during_model_upload(fault: Callable[[], None], files: int = 1) -> None:
    """While the trained model's files are uploaded: after the first ``files`` of them."""
    log_model = mlflow.pyfunc.log_model
    log_artifact = HttpArtifactRepository.log_artifact
    state = {"logging": False, "uploaded": 0, "fired": False}

    def log_model_flagged(*args, **kwargs):
        state["logging"] = True
        try:
            return log_model(*args, **kwargs)
        finally:
            state["logging"] = False

    def upload_then_fault(self, local_file, artifact_path=None):
        log_artifact(self, local_file, artifact_path)
        if state["logging"] and not state["fired"]:
            state["uploaded"] += 1
            if state["uploaded"] == files:
                state["fired"] = True
                fault()

    mlflow.pyfunc.log_model = log_model_flagged
    HttpArtifactRepository.log_artifact = upload_then_fault


POINTS = {"epoch-logged": _after_epoch_logged, "model-upload": _during_model_upload}

if __name__ == "__main__":
    point, service, restart_after, module, *args = sys.argv[1:]
    POINTS[point](_outage(service, float(restart_after)))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
