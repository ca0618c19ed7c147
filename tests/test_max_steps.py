"""``train.max_steps``: a cap on optimiser steps over the whole fit, resumed processes included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader

from mmpc.kinds.base import TrainConfig
from mmpc.models.batching import LengthBucketSampler
from mmpc.training import checkpoint
from mmpc.training.data import TensorDictDataset
from mmpc.training.engine import FitResult, fit

ROWS = 120  # 4 batches of 32 per epoch (the last one short)
CPU = torch.device("cpu")


def _data() -> TensorDictDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 8, generator=g)
    return TensorDictDataset({"x": x, "labels": (x[:, 0] > 0).long()})


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.net(x)


def _loaders(data: TensorDictDataset) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(data, batch_sampler=LengthBucketSampler(len(data), 32, seed=1))
    return train, DataLoader(data, batch_size=64)


class _Stop(Exception):
    """A kill, simulated right after a checkpoint is written."""


@contextmanager
def _counted_steps() -> Iterator[list[int]]:
    """The optimiser steps really taken, counted by torch's global step hook."""
    steps = [0]

    def count(*_) -> None:
        steps[0] += 1

    handle = register_optimizer_step_post_hook(count)
    try:
        yield steps
    finally:
        handle.remove()


def _fit(cfg: TrainConfig, ckpt: Path | None = None, logged: list[int] | None = None) -> FitResult:
    torch.manual_seed(0)
    sink = (lambda metrics, epoch: logged.append(epoch)) if logged is not None else None
    return fit(_Tiny(), *_loaders(_data()), cfg, device=CPU, checkpoint_dir=ckpt, log_metrics=sink)


@pytest.mark.parametrize(
    ("max_steps", "grad_accum", "epochs_run"),
    [(3, 1, 1), (4, 1, 1), (6, 1, 2), (3, 2, 2)],  # inside one epoch, at its end, across epochs, accumulated
)
def test_training_stops_after_max_steps_then_validates(max_steps, grad_accum, epochs_run):
    cfg = TrainConfig(
        epochs=10, lr=1e-2, patience=10, batch_size=32, grad_accum=grad_accum, max_steps=max_steps
    )
    with _counted_steps() as steps:
        result = _fit(cfg)
    assert steps[0] == max_steps
    assert result.epochs_run == epochs_run and len(result.history) == epochs_run
    assert result.best_epoch >= 1  # validated, the best epoch kept
    assert result.history[-1]["lr"] == pytest.approx(0.0)  # the linear schedule ends at the cap


def test_epochs_end_training_before_the_cap():
    cfg = TrainConfig(epochs=2, lr=1e-2, patience=10, batch_size=32, max_steps=100)
    with _counted_steps() as steps:
        result = _fit(cfg)
    assert steps[0] == 8 and result.epochs_run == 2


def test_a_resumed_training_never_exceeds_the_cap(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=10, lr=1e-2, patience=10, batch_size=32, max_steps=6, checkpoint_every_steps=2)
    ckpt, logged = tmp_path / "ckpt", []
    original, saves = checkpoint.save, [0]

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        saves[0] += 1
        if saves[0] == 4:  # steps 2, 4, epoch 1's end, then step 6 mid-epoch 2: before its validation
            raise _Stop

    with _counted_steps() as steps:
        with monkeypatch.context() as mp:
            mp.setattr(checkpoint, "save", save_then_stop)
            with pytest.raises(_Stop):
                _fit(cfg, ckpt, logged)
        assert steps[0] == 6 and logged == [1]
        result = _fit(cfg, ckpt, logged)  # validates epoch 2 without another step
        assert steps[0] == 6 and logged == [1, 2] and result.epochs_run == 2
        again = _fit(cfg, ckpt, logged)  # the finished training's checkpoint: nothing left to do
    assert steps[0] == 6 and logged == [1, 2] and again.epochs_run == 2


def test_max_steps_below_one_is_refused():
    with pytest.raises(ValueError, match="max_steps"):
        _fit(TrainConfig(max_steps=0))
