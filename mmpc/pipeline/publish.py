"""The stack-and-publish step: level-1 probabilities on the ``stack`` split fit the LightGBM stacker;
everything is scored on ``test`` and explained with SHAP; the ensemble is registered as
``mmpc-ensemble`` (@candidate) and, if asked, offered for promotion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.data.dataset import Dataset
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mmpc import ensemble, kinds, orphans, run_names, stacking, tracking
from mmpc import tags as tag
from mmpc.catalog import Catalog
from mmpc.metrics import macro_f1
from mmpc.models.batching import resolve_device
from mmpc.pipeline import runs
from mmpc.pipeline.inference import download_level1, predict_rows, request_example
from mmpc.pipeline.keys import publish_key
from mmpc.pipeline.level1 import PYFUNC_DIR
from mmpc.pipeline.promote import decide_promotion, no_promotion
from mmpc.recipe import Recipe
from mmpc.serving import ensemble_signature
from mmpc.training.engine import seed_everything

log = logging.getLogger(__name__)
SPLITS = ("stack", "test")


@dataclass
class PublishResult:
    version: str
    run_id: str
    scores: dict[str, float]
    table: str
    promoted: bool
    reason: str
    champion_version: str | None
    reused: bool = False


@dataclass
class Stacked:
    """The fitted stacker and what it was scored on."""

    fitted: stacking.StackResult
    X_test: pd.DataFrame
    test_probs: np.ndarray  # the stack's probabilities on ``test``
    scores: dict[str, float]  # test macro-F1 of each member and of the stack
    test_scores: dict[str, float]  # the stack's test_macro_f1 etc., and test_macro_f1.<member>


def stack_and_publish(
    catalog: Catalog,
    recipe: Recipe,
    workdir: Path,
    versions: dict[str, str],
    *,
    parent_run_id: str | None = None,
    promote: bool = True,
    reuse: bool = True,
) -> PublishResult:
    """Stack the given level-1 versions on the ``stack`` split, score everything on ``test``, publish
    the ensemble as ``mmpc-ensemble`` (@candidate) and, with ``promote``, move @champion if it is at
    least as good. With ``reuse``, an ensemble already published from the same members, recipe and
    data (see ``publish_key``) is returned instead of a new version."""
    tracking.configure(workdir)
    key = publish_key(catalog, recipe, versions)
    if reuse and (found := tracking.find_version("ensemble", tag.PUBLISH_KEY, key)) is not None:
        log.info("ensemble: members and data unchanged, reusing %s v%s", found.name, found.version)
        return _published(catalog, found, promote, list(versions), reused=True)
    seed_everything(recipe.seed)
    exp = tracking.experiment_id(catalog.name, workdir)
    orphans.fail_orphans(exp)
    tags = {
        **runs.run_tags(recipe, catalog, "stack"),
        **{tag.member(n): str(v) for n, v in versions.items()},
        tag.PUBLISH_KEY: key,
    }
    with (
        tracking.start_training_run(
            experiment_id=exp,
            run_name=run_names.run_name("stack", recipe.seed),
            parent_run_id=parent_run_id,
            tags=tags,
        ) as run,
        tracking.scratch() as tmp,
    ):
        tracking.log_params(
            {"stacking": recipe.to_dict()["stacking"], "members": list(versions), "seed": recipe.seed}
        )
        data_tags = tracking.log_catalog(catalog)
        test_set = tracking.log_splits(catalog, SPLITS)["test"]
        folders = download_level1(versions, tmp / "level1")
        probs = _member_probabilities(catalog, folders, resolve_device(recipe.device))
        stacked = _stack(catalog, recipe, probs, list(versions), test_set)
        _log_explanations(stacked, catalog, probs["test"], list(versions), tmp)
        version_tags = {**data_tags, tag.RUN_ID: run.info.run_id, tag.PUBLISH_KEY: key}
        mv = _register(catalog, recipe, folders, versions, stacked, version_tags, tmp, test_set)
        tracking.name_version(run.info.run_id, mv.version)
        tracking.log_summary(run.info.run_id, "stack", stacked.scores["stack"], str(mv.version))
    return _published(catalog, mv, promote, list(versions))


def _member_probabilities(
    catalog: Catalog, folders: dict[str, Path], device: torch.device
) -> dict[str, dict[str, np.ndarray]]:
    """Each member's probabilities on the ``stack`` and ``test`` rows, by split then member."""
    models = {n: kinds.load(f, device) for n, f in folders.items()}
    return {
        split: {
            n: predict_rows(m.predict_proba, catalog.split(split), m.uses_images) for n, m in models.items()
        }
        for split in SPLITS
    }


def _stack(catalog: Catalog, recipe: Recipe, probs: dict, members: list[str], test_set: Dataset) -> Stacked:
    """Fit the stacker on ``stack`` and score it and every member on ``test`` (logged: Table 1), the
    stack's ``test_macro_f1`` against the ``test`` dataset like every level-1 model's."""
    codes = list(catalog.labels.codes)
    X_stack = stacking.features(probs["stack"], members, codes)
    X_test = stacking.features(probs["test"], members, codes)
    y_test = catalog.split("test")["label"].to_numpy()
    fitted = stacking.fit(
        X_stack, catalog.split("stack")["label"].to_numpy(), recipe.stacking, len(codes), recipe.seed
    )
    mlflow.log_metrics(
        {
            "cv_macro_f1": fitted.cv_macro_f1,
            "cv_logloss": fitted.cv_logloss,
            "best_rounds": fitted.best_rounds,
        }
    )
    scores = {}
    for n in members:
        p = probs["test"][n]
        ok = ~np.isnan(p).any(axis=1)  # rows the member has no input for (no photo) are not its to score
        scores[n] = macro_f1(y_test[ok], p[ok].argmax(1))
    test_probs = fitted.booster.predict(X_test)
    stack_scores = tracking.log_evaluation(y_test, test_probs, codes, "test", test_set)
    scores["stack"] = stack_scores["test_macro_f1"]
    members_f1 = {f"test_macro_f1.{n}": v for n, v in scores.items()}
    mlflow.log_metrics(members_f1, dataset=test_set)
    table = stacking.table(scores)
    mlflow.log_text(table + "\n", "table1_test_macro_f1.md")
    log.info("test macro-F1 (%d products):\n%s", len(y_test), table)
    test_scores = {k: v for k, v in stack_scores.items() if k != "test_rows"} | members_f1
    return Stacked(fitted, X_test, test_probs, scores, test_scores)


def _log_explanations(
    stacked: Stacked, catalog: Catalog, probs: dict[str, np.ndarray], members: list[str], tmp: Path
) -> None:
    """SHAP per level-1 model on the test split: Figure 2 (PNG) and Table 2 (CSV) of the paper."""
    codes = list(catalog.labels.codes)
    y = catalog.split("test")["label"].to_numpy()
    contributions, _ = stacking.Explainer(stacked.fitted.booster, members, codes).explain(stacked.X_test)
    folder = tmp / "explanations"
    folder.mkdir()
    stacking.contributions_png(contributions, folder / "shap_contributions.png")
    products = catalog.split("test")
    table2 = stacking.only_one_right(probs, y, stacked.test_probs.argmax(1), contributions, products)
    table2.to_csv(folder / "table2_only_one_model_right.csv", index=False)
    contributions.describe().to_csv(folder / "shap_contributions_summary.csv")
    mlflow.log_artifacts(str(folder), artifact_path="explanations")
    mlflow.log_metrics({f"shap_mean_abs.{m}": float(contributions[m].abs().mean()) for m in members})
    if len(table2):
        mlflow.log_metric("only_one_right_stack_recovered", float(table2["stack_right"].mean()))


def _register(
    catalog: Catalog,
    recipe: Recipe,
    folders: dict[str, Path],
    versions: dict[str, str],
    stacked: Stacked,
    tags: dict[str, str],
    tmp: Path,
    test_set: Dataset,
) -> ModelVersion:
    """The booster saved as text, the ensemble folder assembled, logged as a pyfunc and registered."""
    booster_dir = tmp / "booster"
    booster_dir.mkdir()
    stacking.save(stacked.fitted.booster, booster_dir)
    mlflow.log_artifact(str(booster_dir / stacking.BOOSTER_FILE), artifact_path="stacker")
    codes = list(catalog.labels.codes)
    cfg = recipe.ensemble
    bundle = ensemble.build(
        tmp / "ensemble",
        folders,
        versions,
        booster_dir / stacking.BOOSTER_FILE,
        codes,
        cfg.top_k,
        cfg.batch_size,
    )
    return tracking.log_pyfunc(
        PYFUNC_DIR / "ensemble_model.py",
        {"ensemble": str(bundle)},
        model="ensemble",
        signature=ensemble_signature(cfg.top_k),
        input_example=request_example(catalog.split("test")),
        params=_model_params(recipe, versions, stacked),
        scores=[(stacked.test_scores, test_set)],
        tags={
            **tags,
            "test_macro_f1": f"{stacked.scores['stack']:.6f}",
            "cv_macro_f1": f"{stacked.fitted.cv_macro_f1:.6f}",
            **{tag.member(n): str(v) for n, v in versions.items()},
        },
    )


def _model_params(recipe: Recipe, versions: dict[str, str], stacked: Stacked) -> dict[str, str]:
    """The ensemble's logged-model params: its members and their versions, the stacker's settings
    (MLflow adds the run's own params, which win on a shared key)."""
    lgb = {f"lightgbm.{k}": str(v) for k, v in recipe.stacking.params.items()}
    return {
        "kind": "ensemble",
        "member_versions": ", ".join(f"{n} v{v}" for n, v in versions.items()),
        **{f"member.{n}": str(v) for n, v in versions.items()},
        "seed": str(recipe.seed),
        "recipe": recipe.name,
        "lightgbm.rounds": str(stacked.fitted.best_rounds),
        "lightgbm.folds": str(recipe.stacking.folds),
        **lgb,
        "top_k": str(recipe.ensemble.top_k),
    }


def _published(
    catalog: Catalog, mv: ModelVersion, promote: bool, members: list[str], reused: bool = False
) -> PublishResult:
    """The scores of a published ensemble (from its stacking run), and the promotion decision."""
    metrics = MlflowClient().get_run(mv.run_id).data.metrics
    scores = {n: metrics[f"test_macro_f1.{n}"] for n in [*members, "stack"]}
    decision = decide_promotion(catalog, mv) if promote else no_promotion(mv)
    return PublishResult(
        str(mv.version),
        mv.run_id,
        scores,
        stacking.table(scores),
        decision.promoted,
        decision.reason,
        decision.champion_version,
        reused=reused,
    )
