"""The promotion step: a new ensemble version takes @champion when it scores at least the champion's
test macro-F1 on this catalog (a champion published on an older catalog is re-scored first)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mmpc import packaging, promotion, tracking
from mmpc import tags as tag
from mmpc.catalog import Catalog
from mmpc.metrics import macro_f1
from mmpc.pipeline.inference import CHUNK, request_example

log = logging.getLogger(__name__)


def _rescore(catalog: Catalog, test: pd.DataFrame) -> Callable[[ModelVersion], float]:
    """Scores a registered ensemble on this test split (a champion published on an older catalog)."""

    def score(mv: ModelVersion) -> float:
        with packaging.own_imports():
            model = mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}")
        preds = []
        for start in range(0, len(test), CHUNK):
            chunk = test.iloc[start : start + CHUNK]
            preds.append(model.predict(request_example(chunk, n=len(chunk)))["prdtypecode"].to_numpy())
        y_pred = np.concatenate(preds) if preds else np.zeros(0, dtype=int)
        return macro_f1(test["label"].to_numpy(), np.asarray(catalog.labels.indices(y_pred), dtype=int))

    return score


def decide_promotion(catalog: Catalog, mv: ModelVersion) -> promotion.Decision:
    """Move @champion to ``mv`` when its test macro-F1 is at least the champion's on this catalog's
    test split; the decision is recorded on the version's stacking run."""
    score = float(mv.tags["test_macro_f1"])
    decision = promotion.promote_if_better(mv, score, _rescore(catalog, catalog.split("test")))
    MlflowClient().set_tag(mv.run_id, tag.PROMOTED, str(decision.promoted))
    MlflowClient().set_tag(mv.run_id, tag.PROMOTION_REASON, decision.reason)
    log.info(
        "%s v%s: %s (%s)",
        mv.name,
        mv.version,
        "promoted to @champion" if decision.promoted else "not promoted",
        decision.reason,
    )
    return decision


def no_promotion(mv: ModelVersion) -> promotion.Decision:
    current = promotion.champion(mv.name)
    return promotion.Decision(False, "promotion not asked", current and str(current.version))


def promote_version(catalog: Catalog, workdir: Path, version: str) -> promotion.Decision:
    """The promotion step on its own: ``mmpc-ensemble`` ``version`` against the current champion."""
    tracking.configure(workdir)
    return decide_promotion(catalog, tracking.resolve("ensemble", version))
