"""`mmpc evaluate`: a registered level-1 version and a published ensemble, scored on a catalog split,
logged as an MLflow evaluation run linked to the model version, printed as a table."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mmpc import pipeline, tracking
from mmpc.cli import main
from mmpc.demo_catalog import write_demo_catalog
from mmpc.evaluation import evaluate
from mmpc.labels import RAKUTEN_CODES
from mmpc.recipe import load_recipe

# The TF-IDF kind alone keeps this fast: seconds to train, and an ensemble of it is still an ensemble.
RECIPE = "demo"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    catalog_dir = write_demo_catalog(root / "catalog", size=800, seed=5)
    workdir = root / "work"
    recipe = load_recipe(RECIPE, {"stacking.num_boost_round": 60})
    catalog = pipeline.open_catalog(catalog_dir, recipe)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        level1 = pipeline.train_level1(catalog, recipe, "tfidf", workdir)
        published = pipeline.stack_and_publish(catalog, recipe, workdir, {"tfidf": level1.version})
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return {"catalog": catalog_dir, "workdir": workdir, "level1": level1, "ensemble": published}


def _evaluate(registered, *args: str) -> int:
    return main(
        ["evaluate", *args, "--catalog", str(registered["catalog"]), "--workdir", str(registered["workdir"])]
    )


def _evaluation_runs(model: str) -> list:
    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        filter_string=f"tags.`mmpc.evaluated_model` = '{model}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs


def test_level1_version_is_evaluated_logged_and_linked(registered, capsys, tmp_path):
    version = registered["level1"].version
    assert _evaluate(registered, "--model", "mmpc-tfidf", "--version", version, "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"mmpc-tfidf v{version} (tfidf) on catalog/test" in out
    assert "| macro-F1 |" in out and "| weighted-F1 |" in out and "worst confusions" in out
    assert "| 2583 | pool and spa |" in out  # per-class rows name their code

    client = MlflowClient()
    run = client.get_run(_evaluation_runs("mmpc-tfidf")[0].info.run_id)  # search results omit model inputs
    assert run.data.tags["mmpc.evaluated_version"] == version and run.data.tags["mmpc.step"] == "evaluate"
    # same figure as the training run's own test evaluation: same model, same rows
    assert run.data.metrics["test_macro_f1"] == pytest.approx(registered["level1"].metrics["test_macro_f1"])
    assert {"test_weighted_f1", "test_accuracy", "test_f1.2583"} <= set(run.data.metrics)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/test_confusion.png",
        "evaluation/test_per_class.csv",
        "evaluation/test_worst_confusions.csv",
        "evaluation/test_errors.csv",
        "evaluation/test_summary.md",
    } <= files

    # MLflow 3's links: the model version is the run's input, its logged model holds the metrics
    mv = client.get_model_version("mmpc-tfidf", version)
    model_id = tracking.logged_model_id(mv)
    assert model_id and [m.model_id for m in run.inputs.model_inputs] == [model_id]
    assert run.inputs.dataset_inputs[0].dataset.name == "catalog-test"
    linked = {m.key for m in client.get_logged_model(model_id).metrics if m.run_id == run.info.run_id}
    assert "test_macro_f1" in linked
    assert mv.tags["mmpc.evaluation.catalog.test"] == run.info.run_id

    # the files a person opens: a 27 x 27 confusion matrix drawn at the MLflow artifact viewer's width
    # (never scaled down there), every error with its text
    with Image.open(tmp_path / "test_confusion.png") as img:
        assert 900 <= img.width <= 1000 and img.height >= 800
    cm = pd.read_csv(tmp_path / "test_confusion.csv", index_col=0)
    assert cm.shape == (27, 27) and list(cm.columns.astype(int)) == list(RAKUTEN_CODES)
    errors = pd.read_csv(tmp_path / "test_errors.csv")
    assert len(errors) == int(cm.to_numpy().sum() - np.trace(cm.to_numpy()))
    assert (errors["true"] != errors["predicted"]).all() and errors["text"].str.len().gt(0).all()


def test_ensemble_alias_is_evaluated(registered, capsys):
    assert _evaluate(registered, "--model", "ensemble", "--alias", "champion", "--split", "stack") == 0
    out = capsys.readouterr().out
    version = registered["ensemble"].version
    assert f"mmpc-ensemble v{version} (ensemble) on catalog/stack" in out
    run = _evaluation_runs("mmpc-ensemble")[0]
    assert run.data.tags["mmpc.kind"] == "ensemble" and "stack_macro_f1" in run.data.metrics


def test_unknown_version_is_a_clear_error(registered, capsys):
    assert _evaluate(registered, "--model", "tfidf", "--version", "99") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no version '99' of mmpc-tfidf") and "Traceback" not in err


def test_rows_without_a_prediction_are_counted_not_scored():
    frame = pd.DataFrame({"label": [0, 1, 1, 2], "productid": [1, 2, 3, 4], "text": ["a", "b", "c", "d"]})
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [np.nan] * 3, [0.6, 0.1, 0.3]])
    ev = evaluate(frame, probs, [10, 40, 50], worst=5)
    assert ev.scores["rows"] == 3 and ev.scores["rows_without_prediction"] == 1
    assert ev.scores["accuracy"] == pytest.approx(2 / 3)
    assert ev.worst.to_dict("records")[0] | {"share_of_true": 1.0} == {
        "true": 50,
        "true_name": "gaming accessories",
        "predicted": 10,
        "predicted_name": "used books",
        "count": 1,
        "share_of_true": 1.0,
    }
    assert list(ev.errors["productid"]) == [4]
