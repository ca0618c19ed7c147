"""``torchrun`` with DistributedDataParallel on the CPU (gloo, 2 processes): the same entry point
completes, rank 0 alone logs and registers, and the loss curve matches one process with the same
global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mmpc.demo_catalog import write_demo_catalog

pytestmark = pytest.mark.slow

# Dropout off and a moderate learning rate: two processes on half batches then compute the single
# process's gradient, exactly when a batch splits evenly, and nearly when its size is odd (each rank
# averages its own half); the curves stay within the tolerance below.
ARGS = [
    "--set",
    "models.flaubert.train.epochs=3",
    "--set",
    "models.flaubert.train.batch_size=16",
    "--set",
    "models.flaubert.dropout=0.0",
    "--set",
    "models.flaubert.backbone_config.dropout=0.0",
    "--set",
    "models.flaubert.backbone_config.attention_dropout=0.0",
    "--set",
    "models.flaubert.train.patience=5",
    "--set",
    "models.flaubert.train.lr=5e-4",
]
# Stated tolerance: per-epoch mean train loss within 2% (relative) of the single-process run.
TOLERANCE = 0.02


def _history(workdir: Path, metric: str) -> tuple[list[float], MlflowClient, list]:
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mmpc/catalog").experiment_id])
    values = sorted(client.get_metric_history(runs[0].info.run_id, metric), key=lambda m: m.step)
    return [m.value for m in values], client, runs


def test_two_process_ddp_matches_one_process(tmp_path):
    catalog = write_demo_catalog(tmp_path / "catalog", size=500, seed=11)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    bin_dir = Path(sys.executable).parent
    common = ["train", "flaubert", "--catalog", str(catalog), *ARGS]
    single = subprocess.run(
        [sys.executable, "-m", "mmpc.cli", *common, "--workdir", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(
        [
            str(bin_dir / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mmpc.cli",
            *common,
            "--workdir",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    one, _, _ = _history(tmp_path / "one", "epoch_train_loss")
    two, client, runs = _history(tmp_path / "two", "epoch_train_loss")
    assert len(runs) == 1, "only rank 0 opens an MLflow run"
    assert len(two) == len(one) == 3, "every epoch logged once"
    np.testing.assert_allclose(two, one, rtol=TOLERANCE)
    assert len(client.search_model_versions("name = 'mmpc-flaubert'")) == 1
    assert ddp.stdout.count('"version"') == 1, "only rank 0 reports"
