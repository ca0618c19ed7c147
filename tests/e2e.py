"""The end-to-end platform for tests: the pipeline's settings, ``mlflow models serve`` on a
registered model, and the checks every prediction must pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import Server, served_model, user_env

from mmpc.labels import RAKUTEN_CODES

LEVEL1 = ("flaubert", "camembert", "tfidf", "seresnext", "fusion")
# Fewer epochs than the demo (mlproject/overlays/fast.yaml): the tests check the plumbing, `make demo`
# shows the quality.
RECIPE = "demo+fast"


def resumable_flaubert(epochs: int) -> list[str]:
    """``--set`` options for a FlauBERT training that checkpoints often and never stops early: the
    tests that interrupt a training (kill, server outage) need an epoch boundary to hit."""
    options = {"epochs": epochs, "batch_size": 8, "checkpoint_every_steps": 4, "patience": 10}
    return [a for k, v in options.items() for a in ("--set", f"models.flaubert.train.{k}={v}")]


@contextmanager
def serve(
    model_uri: str, tracking_uri: str, logdir: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """The model served from the registry at ``tracking_uri`` on a free loopback port."""
    full_env = user_env(MLFLOW_TRACKING_URI=tracking_uri, **(env or {}))
    with served_model(model_uri, full_env, logdir / "serve.log") as server:
        yield server


def check_predictions(predictions: list[dict], k: int) -> None:
    for row in predictions:
        assert row["prdtypecode"] in RAKUTEN_CODES
        assert 0.0 <= row["probability"] <= 1.0
        assert len(row["top_codes"]) == len(row["top_probabilities"]) == k
        assert row["top_codes"][0] == row["prdtypecode"]
        assert row["top_probabilities"][0] == pytest.approx(row["probability"])
        assert row["top_probabilities"] == sorted(row["top_probabilities"], reverse=True)
        assert all(c in RAKUTEN_CODES for c in row["top_codes"]) and len(set(row["top_codes"])) == k
        assert sum(row["top_probabilities"]) <= 1.0 + 1e-6
