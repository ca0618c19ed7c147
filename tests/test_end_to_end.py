"""The whole platform on a small generated catalog: Prefect ``retrain`` with a temporary MLflow store,
then ``mlflow models serve`` on the champion, queried over real HTTP."""

from __future__ import annotations

import base64
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from e2e import LEVEL1, RECIPE, check_predictions
from mlflow.tracking import MlflowClient

from mmpc.labels import RAKUTEN_CODES

pytestmark = pytest.mark.slow


def test_every_level1_model_is_registered_with_its_run(pipeline_run):
    client = MlflowClient()
    result = pipeline_run["result"]
    for name in LEVEL1:
        mv = client.get_model_version_by_alias(f"mmpc-{name}", "candidate")
        assert str(mv.version) == result["level1"][name]["version"]
        run = client.get_run(mv.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == result["parent_run_id"]
        for metric in ("valid_macro_f1", "test_macro_f1", "epoch_train_loss", "epoch_valid_loss"):
            assert metric in run.data.metrics, (name, metric)
        # one value per epoch for the training curves
        history = client.get_metric_history(run.info.run_id, "epoch_valid_macro_f1")
        assert [m.step for m in history] == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
        assert run.data.params["seed"] == "0" and "mmpc.data_fingerprint" in run.data.tags
        files = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
        assert {"data/split_manifest.csv", "data/fingerprint.json", "data/class_counts.csv"} <= files
        evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/test_confusion.png" in evaluation and "evaluation/test_report.txt" in evaluation
    fusion = client.get_model_version_by_alias("mmpc-fusion", "candidate")
    assert fusion.tags["mmpc.input.flaubert"] == result["level1"]["flaubert"]["version"]


def test_level1_artifacts_hold_no_pickled_weights(pipeline_run, tmp_path):
    client = MlflowClient()
    mv = client.get_model_version_by_alias("mmpc-camembert", "candidate")
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/mmpc-camembert/{mv.version}", dst_path=str(tmp_path))
    )
    names = {p.name for p in local.rglob("*") if p.is_file()}
    assert "model.safetensors" in names and "meta.json" in names and "config.json" in names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".pt", ".bin", ".pth"))]


def test_level1_pyfunc_returns_probabilities(pipeline_run):
    model = mlflow.pyfunc.load_model("models:/mmpc-flaubert@candidate")
    out = model.predict(pd.DataFrame({"designation": ["Coussin velours bleu", "Console portable"]}))
    assert list(out.columns) == [str(c) for c in RAKUTEN_CODES]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-4)


def test_ensemble_is_published_with_members_and_champion(pipeline_run):
    client = MlflowClient()
    result = pipeline_run["result"]
    champion = client.get_model_version_by_alias("mmpc-ensemble", "champion")
    assert str(champion.version) == result["ensemble"]["version"]
    for name in LEVEL1:
        assert champion.tags[f"mmpc.member.{name}"] == result["level1"][name]["version"]
    assert float(champion.tags["test_macro_f1"]) == pytest.approx(
        result["ensemble"]["scores"]["stack"], abs=1e-5
    )
    stack_run = client.get_run(result["ensemble"]["run_id"])
    table = mlflow.artifacts.load_text(f"runs:/{stack_run.info.run_id}/table1_test_macro_f1.md")
    assert all(name in table for name in [*LEVEL1, "stack"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and "stack_test_macro_f1" in parent.data.metrics


def test_prefect_summary_artifact_holds_the_f1_table(pipeline_run):
    summaries = [a for a in pipeline_run["artifacts"] if a.key == "retrain-summary"]
    assert summaries, "the retrain flow leaves a markdown summary"
    text = summaries[-1].data
    assert "test macro-F1" in text and "**stack**" in text and "Decision" in text
    assert all(f"mmpc-{name}" in text for name in LEVEL1)


def test_any_subset_of_level1_models_can_be_stacked(pipeline_run):
    from mmpc import pipeline
    from mmpc.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    catalog = pipeline.open_catalog(pipeline_run["catalog"], recipe)
    versions = {n: pipeline_run["result"]["level1"][n]["version"] for n in ("camembert", "seresnext")}
    published = pipeline.stack_and_publish(catalog, recipe, pipeline_run["workdir"], versions, promote=False)
    assert set(published.scores) == {"camembert", "seresnext", "stack"} and not published.promoted
    model = mlflow.pyfunc.load_model(f"models:/mmpc-ensemble/{published.version}")
    out = model.predict(pd.DataFrame({"designation": ["Piscine hors sol"], "image": [None]}))
    assert out["prdtypecode"].iloc[0] in RAKUTEN_CODES and out["image_status"].iloc[0] == "missing"
    champion = MlflowClient().get_model_version_by_alias("mmpc-ensemble", "champion")
    assert str(champion.version) == pipeline_run["result"]["ensemble"]["version"]  # untouched


def test_served_champion_answers_text_only(served):
    resp = served.invoke(
        {
            "dataframe_split": {
                "columns": ["designation", "description"],
                "data": [
                    ["Coussin décoratif velours 45x45", "<p>Housse &eacute;l&eacute;gante</p>"],
                    ["Console de jeux portable", None],
                ],
            }
        },
    )
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert len(predictions) == 2
    check_predictions(predictions, k=3)
    assert {p["image_status"] for p in predictions} == {"missing"}


def test_served_champion_answers_text_and_image(served, pipeline_run):
    image = sorted((pipeline_run["catalog"] / "images" / "image_train").glob("*.jpg"))[0]
    b64 = base64.b64encode(image.read_bytes()).decode()
    resp = served.invoke(
        {
            "dataframe_records": [
                {"designation": "Lot de livres anciens", "description": "", "image": b64},
                {"designation": "Lot de livres anciens", "image": ""},
                {"designation": "Lot de livres anciens", "image": base64.b64encode(b"not an image").decode()},
            ],
            "params": {"top_k": 5},
        },
    )
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    check_predictions(predictions, k=5)
    assert [p["image_status"] for p in predictions] == ["ok", "missing", "invalid"]


def test_served_champion_explains_per_model_on_request(served):
    resp = served.invoke(
        {"dataframe_records": [{"designation": "Console de jeux portable"}], "params": {"explain": True}},
    )
    assert resp.status_code == 200, resp.text
    row = resp.json()["predictions"][0]
    assert set(row["contributions"]) == set(LEVEL1)
    assert all(isinstance(v, float) for v in row["contributions"].values())


def test_stacking_run_logs_shap_figure_and_table2(pipeline_run):
    client = MlflowClient()
    run_id = pipeline_run["result"]["ensemble"]["run_id"]
    files = {a.path for a in client.list_artifacts(run_id, "explanations")}
    assert {"explanations/shap_contributions.png", "explanations/table2_only_one_model_right.csv"} <= files
    assert all(f"shap_mean_abs.{m}" in client.get_run(run_id).data.metrics for m in LEVEL1)


def test_served_champion_refuses_a_request_without_designation(served):
    resp = served.invoke({"dataframe_records": [{"description": "sans titre"}]})
    assert resp.status_code == 400
    assert "designation" in resp.json()["message"]
    resp = served.invoke({"dataframe_records": [{"designation": "ok"}, {"designation": "   "}]})
    assert resp.status_code == 400 and "row 1" in resp.json()["message"]
    # and the server is still up for the next good request
    assert served.invoke({"dataframe_records": [{"designation": "Piscine tubulaire"}]}).status_code == 200
