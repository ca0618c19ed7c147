"""``mmpc evaluate``: any registered version, level-1 or ensemble, scored on a catalog split.

The figures (macro- and weighted-F1, accuracy, per-class precision/recall/F1, the confusion matrix,
the worst confusions and every misclassified product) are logged as one MLflow evaluation run: the
model version is the run's input (MLflow 3's logged-model link), the metrics are attached to that
logged model and to the evaluated dataset, and the version gets a tag naming the run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelInput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mmpc import descriptions, kinds, plots, run_names, tracking
from mmpc import metrics as M
from mmpc import tags as tag
from mmpc.catalog import SPLITS, Catalog
from mmpc.ensemble import MANIFEST, EnsemblePredictor
from mmpc.labels import RAKUTEN_NAMES
from mmpc.pipeline import code_version, predict_rows

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset

log = logging.getLogger(__name__)

ARTIFACT_DIR = "evaluation"


class EvaluationError(ValueError):
    """The version, split or catalog asked for cannot be evaluated; the message says which and why."""


@dataclass
class Evaluation:
    scores: dict[str, float]  # macro_f1, weighted_f1, accuracy, rows, rows_without_prediction
    per_class: pd.DataFrame
    confusion: np.ndarray
    worst: pd.DataFrame
    errors: pd.DataFrame


@dataclass
class EvaluationRun:
    model: str
    version: str
    kind: str
    catalog: str
    split: str
    run_id: str
    evaluation: Evaluation


def split_rows(catalog: Catalog, split: str) -> pd.DataFrame:
    """The rows of one split, or of the whole catalog for ``all``."""
    return catalog.frame.reset_index(drop=True) if split == "all" else catalog.split(split)


def evaluate(frame: pd.DataFrame, probs: np.ndarray, codes: list[int], worst: int = 10) -> Evaluation:
    """Figures of class probabilities against the rows' labels. Rows without a prediction (an image
    model on a product without a photo: NaN) are left out and counted."""
    ok = ~np.isnan(probs).any(axis=1)
    y, p = frame["label"].to_numpy()[ok], probs[ok]
    y_pred = p.argmax(1)
    scores = M.summary(y, y_pred)
    scores["rows"] = float(ok.sum())
    scores["rows_without_prediction"] = float((~ok).sum())
    cm = M.confusion(y, y_pred, len(codes))
    rows = frame.loc[ok].reset_index(drop=True)
    wrong = np.flatnonzero(y_pred != y)
    code_arr = np.asarray(codes)
    errors = pd.DataFrame(
        {
            "productid": rows["productid"].to_numpy()[wrong],
            "true": code_arr[y[wrong]],
            "true_name": [RAKUTEN_NAMES.get(int(c), "") for c in code_arr[y[wrong]]],
            "predicted": code_arr[y_pred[wrong]],
            "predicted_name": [RAKUTEN_NAMES.get(int(c), "") for c in code_arr[y_pred[wrong]]],
            "p_predicted": p[wrong, y_pred[wrong]],
            "p_true": p[wrong, y[wrong]],
            "text": rows["text"].to_numpy()[wrong],
        }
    ).sort_values("p_predicted", ascending=False, kind="stable")  # confident mistakes first
    return Evaluation(scores, M.per_class(y, y_pred, codes), cm, M.worst_confusions(cm, codes, worst), errors)


def _headline(run: EvaluationRun) -> list[str]:
    """What was scored on what, and the overall figures."""
    s = run.evaluation.scores
    missing = int(s["rows_without_prediction"])
    return [
        f"{run.model} v{run.version} ({run.kind}) on {run.catalog}/{run.split}: {int(s['rows'])} products"
        + (f", {missing} without a prediction" if s["rows_without_prediction"] else ""),
        "",
        "| metric | value |",
        "|---|---|",
        f"| macro-F1 | {s['macro_f1']:.4f} |",
        f"| weighted-F1 | {s['weighted_f1']:.4f} |",
        f"| accuracy | {s['accuracy']:.4f} |",
    ]


def _per_class_lines(per_class: pd.DataFrame) -> list[str]:
    lines = ["| prdtypecode | name | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    for r in per_class.itertuples(index=False):
        lines.append(
            f"| {r.prdtypecode} | {r.name} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.support} |"
        )
    return lines


def _worst_lines(worst: pd.DataFrame) -> list[str]:
    lines = ["worst confusions (true -> predicted):", "", "| true | predicted | products | share of true |"]
    lines.append("|---|---|---|---|")
    for r in worst.itertuples(index=False):
        lines.append(
            f"| {r.true} {r.true_name} | {r.predicted} {r.predicted_name} "
            f"| {r.count} | {r.share_of_true:.1%} |"
        )
    return lines


def table(run: EvaluationRun) -> str:
    """What the command prints: the headline figures, per-class table, worst confusions."""
    ev = run.evaluation
    lines = [*_headline(run), "", *_per_class_lines(ev.per_class), "", *_worst_lines(ev.worst)]
    lines += ["", f"MLflow evaluation run {run.run_id}"]
    return "\n".join(lines)


def write_artifacts(ev: Evaluation, codes: list[int], folder: Path, split: str, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    plots.confusion_png(ev.confusion, codes, folder / f"{split}_confusion.png", title)
    pd.DataFrame(ev.confusion, index=codes, columns=codes).rename_axis("true \\ predicted").to_csv(
        folder / f"{split}_confusion.csv"
    )
    ev.per_class.to_csv(folder / f"{split}_per_class.csv", index=False)
    ev.worst.to_csv(folder / f"{split}_worst_confusions.csv", index=False)
    ev.errors.to_csv(folder / f"{split}_errors.csv", index=False)


def load_predictor(mv: ModelVersion, dst: Path, device: torch.device) -> tuple[str, object]:
    """(kind, predictor) of a registered version: the ensemble or a level-1 model, from its artifacts."""
    local = tracking.download_artifacts(mv, dst)
    bundle = local / "artifacts" / "ensemble"
    if (bundle / MANIFEST).is_file():
        return "ensemble", EnsemblePredictor(bundle, device)
    predictor = kinds.load(tracking.level1_folder(local), device)
    return predictor.kind, predictor


def _tag_key(catalog: str, split: str) -> str:
    return tag.EVALUATION_PREFIX + re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{catalog}.{split}")


def _version(model: str, ref: str, workdir: Path) -> ModelVersion:
    """The registered version asked for, or an EvaluationError naming the store it was looked for in."""
    uri = tracking.configure(workdir)
    try:
        return tracking.resolve(model, ref)
    except MlflowException as exc:
        name = model if model.startswith(tracking.REGISTRY_PREFIX) else tracking.registered_name(model)
        raise EvaluationError(f"no version {ref!r} of {name} in {uri}: {exc.message}") from None


def _run_tags(mv: ModelVersion, split: str) -> dict[str, str]:
    return {
        tag.STEP: "evaluate",
        tag.EVALUATED_MODEL: mv.name,
        tag.EVALUATED_VERSION: str(mv.version),
        tag.EVALUATED_RUN: mv.run_id or "",
        tag.SPLIT: split,
        tag.CODE_VERSION: code_version(),
    }


def _load_checked(mv: ModelVersion, dst: Path, device: torch.device, codes: list[int]) -> tuple[str, object]:
    """The version's predictor, refused when it predicts other codes than the catalog's."""
    kind, predictor = load_predictor(mv, dst, device)
    if list(predictor.codes) != codes:
        raise EvaluationError(
            f"{mv.name} v{mv.version} predicts codes {predictor.codes}, the catalog has {codes}"
        )
    return kind, predictor


def _log_inputs(
    mv: ModelVersion, kind: str, catalog: Catalog, frame: pd.DataFrame, split: str
) -> tuple[Dataset, str | None]:
    """The run's inputs: the catalog, and the scored rows as a dataset linked to the logged model."""
    mlflow.set_tag(tag.KIND, kind)
    tracking.log_catalog(catalog)
    # The dataset a training run logged for the same split: the scores line up in the UI.
    dataset = tracking.split_dataset(catalog, split, frame)
    model_id = tracking.logged_model_id(mv)
    mlflow.log_input(dataset, context=split, model=LoggedModelInput(model_id) if model_id else None)
    mlflow.log_params({"model": mv.name, "version": str(mv.version), "split": split, "kind": kind})
    return dataset, model_id


def _log_scores(ev: Evaluation, split: str, dataset: Dataset, model_id: str | None) -> None:
    metrics = {f"{split}_{k}": v for k, v in ev.scores.items()}
    metrics.update({f"{split}_f1.{r.prdtypecode}": float(r.f1) for r in ev.per_class.itertuples()})
    # Attached to the logged model and the dataset as well as the run: the model's page lists them.
    mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)


def _log_figures(
    ev: Evaluation, codes: list[int], split: str, title: str, folder: Path, out: Path | None
) -> None:
    """The figures' files, logged under ``evaluation/`` and also written to ``out`` when asked."""
    write_artifacts(ev, codes, folder, split, title)
    mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_DIR)
    if out is not None:
        write_artifacts(ev, codes, Path(out), split, title)


def run_evaluation(
    model: str,
    ref: str,
    catalog: Catalog,
    split: str,
    workdir: Path,
    *,
    device: torch.device | None = None,
    worst: int = 10,
    out: Path | None = None,
    parent_run_id: str | None = None,
) -> EvaluationRun:
    """Score ``mmpc-<model>`` version/alias ``ref`` on ``split`` of ``catalog``; log an evaluation run
    (nested under ``parent_run_id``: the retrain that published the version)."""
    if split != "all" and split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; choose from {[*SPLITS, 'all']}")
    mv = _version(model, ref, workdir)
    frame = split_rows(catalog, split)
    if frame.empty:
        raise EvaluationError(f"split {split!r} of catalog {catalog.name} has no products")
    codes = list(catalog.labels.codes)
    exp = tracking.experiment_id(catalog.name, workdir)
    name = run_names.run_name(f"evaluate {mv.name} v{mv.version} {split}")
    with (
        mlflow.start_run(
            experiment_id=exp, run_name=name, parent_run_id=parent_run_id, tags=_run_tags(mv, split)
        ) as run,
        tracking.scratch() as tmp,
    ):
        kind, predictor = _load_checked(mv, tmp / "model", device or torch.device("cpu"), codes)
        dataset, model_id = _log_inputs(mv, kind, catalog, frame, split)
        probs = predict_rows(predictor.predict_proba, frame, predictor.uses_images)
        ev = evaluate(frame, probs, codes, worst)
        _log_scores(ev, split, dataset, model_id)
        title = f"{mv.name} v{mv.version} on {catalog.name}/{split}: macro-F1 {ev.scores['macro_f1']:.4f}"
        _log_figures(ev, codes, split, title, tmp / ARTIFACT_DIR, out)
        client = MlflowClient()
        client.set_model_version_tag(mv.name, str(mv.version), _tag_key(catalog.name, split), run.info.run_id)
        descriptions.describe_version(client.get_model_version(mv.name, str(mv.version)))  # links this run
        result = EvaluationRun(mv.name, str(mv.version), kind, catalog.name, split, run.info.run_id, ev)
        mlflow.log_text(table(result) + "\n", f"{ARTIFACT_DIR}/{split}_summary.md")
        test_f1 = ev.scores["macro_f1"] if split == "test" else None
        tracking.log_summary(
            run.info.run_id, mv.name, test_f1, str(mv.version), split=split, macro_f1=ev.scores["macro_f1"]
        )
    log.info(
        "%s v%s on %s/%s: macro-F1 %.4f", mv.name, mv.version, catalog.name, split, ev.scores["macro_f1"]
    )
    return result
