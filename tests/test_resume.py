"""Resumable training: a level-1 training killed at any point continues, with the same command, in the
same MLflow run, with no duplicated metric steps and one registered version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e import resumable_flaubert
from mlflow.tracking import MlflowClient

from mmpc.demo_catalog import write_demo_catalog
from mmpc.kinds.base import TrainConfig
from mmpc.models.batching import LengthBucketSampler
from mmpc.training import checkpoint
from mmpc.training.data import TensorDictDataset
from mmpc.training.engine import fit


def test_sampler_resumes_at_the_same_batch():
    lengths = np.random.default_rng(0).integers(1, 100, 500)
    full = LengthBucketSampler(lengths, 16, seed=4)
    full.set_epoch(3)
    batches = list(full)
    resumed = LengthBucketSampler(lengths, 16, seed=4)
    resumed.set_epoch(3, start_batch=7)
    assert list(resumed) == batches[7:] and len(resumed) == len(batches) - 7
    other = LengthBucketSampler(lengths, 16, seed=4)
    other.set_epoch(4)
    assert list(other) != batches  # a new order every epoch


def _toy_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return TensorDictDataset({"x": x, "labels": y})


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 4)
        )

    def forward(self, x):
        return self.net(x)


def _loaders(data):
    from torch.utils.data import DataLoader

    sampler = LengthBucketSampler(len(data), 32, seed=1)
    return (
        DataLoader(data, batch_sampler=sampler, generator=torch.Generator().manual_seed(1)),
        DataLoader(data, batch_size=128, generator=torch.Generator().manual_seed(1)),
    )


class _Stop(Exception):
    pass


def test_fit_resumed_from_a_mid_epoch_checkpoint_matches_an_uninterrupted_fit(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=4, lr=1e-2, patience=10, checkpoint_every_steps=5, batch_size=32)
    data = _toy_problem()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    reference = _Toy()
    ref_result = fit(reference, *_loaders(data), cfg, device=cpu)

    ckpt = tmp_path / "ckpt"
    logged: list[int] = []

    def fit_with_checkpoints(model):
        return fit(
            model,
            *_loaders(data),
            cfg,
            device=cpu,
            checkpoint_dir=ckpt,
            log_metrics=lambda metrics, step: logged.append(step),
        )

    # Interrupt mid-way through epoch 2: the 4th checkpoint comes after the epoch-1 one and two
    # mid-epoch ones.
    calls = {"n": 0}
    original = checkpoint.save

    def save_then_maybe_stop(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Stop

    torch.manual_seed(0)
    with monkeypatch.context() as mp:
        mp.setattr(checkpoint, "save", save_then_maybe_stop)
        with pytest.raises(_Stop):
            fit_with_checkpoints(_Toy())
    assert checkpoint.exists(ckpt)
    torch.manual_seed(123)  # a fresh process would start from other RNG states: the checkpoint restores them
    resumed_model = _Toy()
    result = fit_with_checkpoints(resumed_model)
    assert logged == [1, 2, 3, 4]  # every epoch logged once
    assert result.epochs_run == ref_result.epochs_run
    for a, b in zip(reference.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# Each run of the command is killed at the next point, resuming from what the previous one left; the
# last one completes. Together they cover a kill before any checkpoint, right after one, between an
# epoch's metrics and its checkpoint, during evaluation, around registration and before the run ends.
KILL_POINTS = (
    "first-epoch",
    "after-checkpoint",
    "epoch-logged",
    "evaluation",
    "registration",
    "alias",
    "run-end",
)


@pytest.mark.slow
@pytest.mark.robustness(
    "training",
    "SIGKILL of a level-1 training, then the same command, at 7 points in turn: " + ", ".join(KILL_POINTS),
    "resumes every time; 1 MLflow run, every epoch logged once, 1 registered version with its tags and alias",
)
def test_training_killed_at_each_point_resumes_in_the_same_run(tmp_path, observed):
    catalog = write_demo_catalog(tmp_path / "catalog", size=400, seed=5)
    workdir = tmp_path / "work"
    epochs = 3
    args = [
        "train",
        "flaubert",
        "--catalog",
        str(catalog),
        "--workdir",
        str(workdir),
        *resumable_flaubert(epochs),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    ckpts = workdir / "checkpoints" / "catalog"
    for point in KILL_POINTS:
        killed = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("kill_at.py")), point, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-3000:])
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("mmpc/catalog").experiment_id])
        assert len(runs) == 1, (point, [r.info.status for r in runs])
    done = subprocess.run(
        [sys.executable, "-m", "mmpc.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mmpc/catalog").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "epoch_valid_macro_f1")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    versions = client.search_model_versions("name = 'mmpc-flaubert'")
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id
    version = client.get_model_version_by_alias("mmpc-flaubert", "candidate")
    assert version.version == versions[0].version
    assert float(version.tags["test_macro_f1"]) == pytest.approx(
        runs[0].data.metrics["test_macro_f1"], abs=1e-6
    )
    assert not list(ckpts.glob("flaubert-*"))  # checkpoints go once the model is registered
    observed(
        f"exit {done.returncode}",
        f"after {len(KILL_POINTS)} kills, {len(runs)} run ({runs[0].info.status}), "
        f"epochs logged {sorted(m.step for m in history)}, {len(versions)} version (@candidate, tagged)",
    )
