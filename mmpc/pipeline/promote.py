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

from mmpc import descriptions, packaging, promotion, tracking
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


def decide_promotion(
    catalog: Catalog, mv: ModelVersion, pipeline_run_id: str | None = None
) -> promotion.Decision:
    """Move @champion to ``mv`` when its test macro-F1 is at least the champion's on this catalog's
    test split; the decision is recorded on the version's stacking run and on the retrain run
    ``pipeline_run_id`` (tags, and the two scores compared as metrics)."""
    score = float(mv.tags["test_macro_f1"])
    before = promotion.champion(mv.name)
    rescored: dict[str, float] = {}
    rescore = _remembered(_rescore(catalog, catalog.split("test")), rescored)
    decision = promotion.promote_if_better(mv, score, rescore)
    outcome = _outcome(mv, score, decision, before, rescored)
    for run_id in dict.fromkeys(r for r in (mv.run_id, pipeline_run_id) if r):
        descriptions.record_promotion(run_id, outcome)
    log.info(
        "%s v%s: %s (%s)",
        mv.name,
        mv.version,
        "promoted to @champion" if decision.promoted else "not promoted",
        decision.reason,
    )
    return decision


def _remembered(
    rescore: Callable[[ModelVersion], float], seen: dict[str, float]
) -> Callable[[ModelVersion], float]:
    """``rescore``, keeping each score it computed by version: the decision reports the one compared."""

    def score(mv: ModelVersion) -> float:
        seen[str(mv.version)] = value = rescore(mv)
        return value

    return score


def _outcome(
    mv: ModelVersion,
    score: float,
    decision: promotion.Decision,
    before: ModelVersion | None,
    rescored: dict[str, float],
) -> descriptions.Promotion:
    """The decision with the two scores it compared (the champion's as re-scored, if it was)."""
    compared = before if before is not None and str(before.version) != str(mv.version) else None
    compared_score = None
    if compared is not None:
        version = str(compared.version)
        tagged = compared.tags.get("test_macro_f1")
        compared_score = rescored.get(version, float(tagged) if tagged else None)
    return descriptions.Promotion(
        decision.promoted,
        decision.reason,
        str(mv.version),
        score,
        decision.champion_version,
        str(compared.version) if compared is not None else None,
        compared_score,
    )


def no_promotion(mv: ModelVersion) -> promotion.Decision:
    current = promotion.champion(mv.name)
    return promotion.Decision(False, "promotion not asked", current and str(current.version))


def promote_version(
    catalog: Catalog, workdir: Path, version: str, pipeline_run_id: str | None = None
) -> promotion.Decision:
    """The promotion step on its own: ``mmpc-ensemble`` ``version`` against the current champion;
    the decision is also recorded on the retrain run ``pipeline_run_id``."""
    tracking.configure(workdir)
    return decide_promotion(catalog, tracking.resolve("ensemble", version), pipeline_run_id)
