"""Run the ``mmpc`` command line in this process and SIGKILL it at a named point of a level-1 training.

    python tests/kill_at.py POINT [mmpc arguments...]

The kill is real (no handler, no cleanup, no context manager exits), as ``kill -9`` from outside, but
it lands at a chosen place instead of a random one, so each point is tested every time.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import mlflow
from mlflow.tracking import MlflowClient

from mmpc import tracking
from mmpc.training import checkpoint, engine


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after_optimizer_steps(n: int) -> None:
    """During the first epoch, before its first checkpoint: the n-th optimiser step."""
    make = engine.make_optimizer
    steps = {"n": 0}

    def make_then_count(model, cfg):
        optimizer = make(model, cfg)

        def hook(*_):
            steps["n"] += 1
            if steps["n"] == n:
                _die()

        optimizer.register_step_post_hook(hook)
        return optimizer

    engine.make_optimizer = make_then_count


def _after_checkpoint(n: int) -> None:
    """Right after the n-th checkpoint is written."""
    save = checkpoint.save
    saves = {"n": 0}

    def save_then_count(*args, **kwargs):
        save(*args, **kwargs)
        saves["n"] += 1
        if saves["n"] == n:
            _die()

    checkpoint.save = save_then_count


def _after_epoch_logged(epoch: int) -> None:
    """After an epoch's metrics reached MLflow, before that epoch's checkpoint."""
    log_metrics = mlflow.log_metrics

    def log_then_check(metrics, step=None, **kwargs):
        log_metrics(metrics, step=step, **kwargs)
        if step == epoch and any(k.startswith("epoch_") for k in metrics):
            _die()

    mlflow.log_metrics = log_then_check


def _before(owner: object, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> Callable[[], None]:
    def install() -> None:
        original = getattr(owner, name)

        def kill_first(*args, **kwargs):
            if when(*args, **kwargs):
                _die()
            return original(*args, **kwargs)

        setattr(owner, name, kill_first)

    return install


def _after_parts_written(n: int) -> None:
    """A scoring job, right after its n-th Parquet part is written."""
    from mmpc.scoring.parts import Parts

    write = Parts.write
    written = {"n": 0}

    def write_then_count(self, index, frame):
        write(self, index, frame)
        written["n"] += 1
        if written["n"] == n:
            _die()

    Parts.write = write_then_count


POINTS: dict[str, Callable[[], None]] = {
    "first-epoch": lambda: _after_optimizer_steps(2),
    "after-checkpoint": lambda: _after_checkpoint(2),
    "epoch-logged": lambda: _after_epoch_logged(2),
    # while the trained model is evaluated: after the valid split, before the test split
    "evaluation": _before(tracking, "log_evaluation", lambda y, probs, codes, split, *_: split == "test"),
    # the model and its artifacts are logged, the version not yet created
    "registration": _before(MlflowClient, "_create_model_version"),
    # the version exists, its tags and @candidate alias not yet set
    "alias": _before(MlflowClient, "set_registered_model_alias"),
    # everything registered, the run not yet marked finished
    "run-end": _before(
        MlflowClient, "set_terminated", lambda self, run_id, status=None, **k: status == "FINISHED"
    ),
    "score-part": lambda: _after_parts_written(2),
}

if __name__ == "__main__":
    POINTS[sys.argv[1]]()
    from mmpc.cli import main

    sys.exit(main(sys.argv[2:]))
