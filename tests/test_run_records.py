"""What a person comparing retrains in the MLflow UI reads, checked in a real store after two retrains
of a small generated catalog with different seeds (the pipeline's Python API, TF-IDF and FlauBERT
stacked): run names that tell the retrains apart, each training run's splits as datasets with their
contexts, test scores on the test dataset for every logged model, system metrics, the logged models'
params, a ``summary.json`` at every run's root, and artifacts readable as they are shown."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mmpc import pipeline, run_names, tracking
from mmpc import tags as tag
from mmpc.demo_catalog import write_demo_catalog
from mmpc.evaluation import run_evaluation
from mmpc.labels import describe
from mmpc.recipe import load_recipe, parse_overrides

pytestmark = pytest.mark.slow  # two retrains: about a minute on two CPU cores

SEEDS = (0, 7)
MEMBERS = ("tfidf", "flaubert")
TRAINING_STEPS = ("level1", "stack")


def _retrain(catalog_dir: Path, workdir: Path, seed: int) -> str:
    """One retrain as the flow runs it: the pipeline run, the level-1 models, the stack; its run id."""
    recipe = load_recipe("demo+fast+tiny", parse_overrides([f"seed={seed}"]))
    catalog = pipeline.open_catalog(catalog_dir, recipe, workdir)
    parent = pipeline.start_pipeline_run(catalog, recipe, workdir)
    versions = {}
    for name in MEMBERS:
        versions[name] = pipeline.train_level1(catalog, recipe, name, workdir, parent_run_id=parent).version
    published = pipeline.stack_and_publish(catalog, recipe, workdir, versions, parent_run_id=parent)
    pipeline.end_pipeline_run(
        parent,
        True,
        {"stack_test_macro_f1": published.scores["stack"]},
        {tag.ENSEMBLE_VERSION: published.version},
    )
    return parent


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("records")
    catalog_dir = write_demo_catalog(root / "catalog", size=400, seed=3)
    workdir = root / "work"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        parents = [_retrain(catalog_dir, workdir, seed) for seed in SEEDS]
        recipe = load_recipe("demo+fast+tiny")
        catalog = pipeline.open_catalog(catalog_dir, recipe, workdir)
        evaluation = run_evaluation("ensemble", "2", catalog, "test", workdir)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("mmpc/catalog").experiment_id
    runs = client.search_runs([exp], order_by=["attributes.start_time"])
    test = catalog.split("test")
    return {"client": client, "runs": runs, "parents": parents, "evaluation": evaluation.run_id, "test": test}


def _training(store) -> list:
    return [r for r in store["runs"] if r.data.tags.get(tag.STEP) in TRAINING_STEPS]


def _text(store, run_id: str, path: str) -> str:
    local = store["client"].download_artifacts(run_id, path)
    return Path(local).read_text()


def test_run_names_tell_the_retrains_apart(store):
    names = [r.info.run_name for r in store["runs"]]
    assert len(set(names)) == len(names), names
    for r in store["runs"]:
        step, name = r.data.tags.get(tag.STEP), r.info.run_name
        if step in TRAINING_STEPS or step == "pipeline":
            assert f"{run_names.SEP}seed {r.data.tags[tag.SEED]}{run_names.SEP}" in name, name
        if step == "level1":
            assert run_names.what(name) == r.data.tags[tag.MODEL]
        if step == "stack":
            assert run_names.what(name) == "stack"
        if step == "pipeline":
            assert run_names.what(name) == "retrain demo+fast+tiny"
    # a run that registered a version says which
    for r in _training(store):
        version = json.loads(_text(store, r.info.run_id, tracking.SUMMARY_FILE))["registered_version"]
        assert r.info.run_name.endswith(f"{run_names.SEP}v{version}")
    evaluation = store["client"].get_run(store["evaluation"]).info.run_name
    assert run_names.what(evaluation) == "evaluate mmpc-ensemble v2 test"


def test_every_training_run_logs_its_splits_as_datasets(store):
    expected = {
        "level1": {"catalog-train": "training", "catalog-valid": "validation", "catalog-test": "testing"},
        "stack": {"catalog-stack": "training", "catalog-test": "testing"},
    }
    digests = set()
    for r in _training(store):
        inputs = {
            d.dataset.name: {t.value for t in d.tags if t.key == "mlflow.data.context"}
            for d in r.inputs.dataset_inputs
        }
        assert inputs == {k: {v} for k, v in expected[r.data.tags[tag.STEP]].items()}, r.info.run_name
        test = next(d.dataset for d in r.inputs.dataset_inputs if d.dataset.name == "catalog-test")
        assert json.loads(test.schema)["mlflow_colspec"][0]["name"] == "productid"
        digests.add(test.digest)
    # the same test split is one dataset everywhere, the evaluation run's included
    evaluation = store["client"].get_run(store["evaluation"])
    digests |= {d.dataset.digest for d in evaluation.inputs.dataset_inputs}
    assert len(digests) == 1


def test_every_logged_model_has_its_test_macro_f1_on_the_test_dataset(store):
    client = store["client"]
    for name in ("mmpc-tfidf", "mmpc-flaubert", "mmpc-ensemble"):
        for mv in client.search_model_versions(f"name = '{name}'"):
            model = client.get_logged_model(tracking.logged_model_id(mv))
            on_test = {m.key: m.value for m in model.metrics if m.dataset_name == "catalog-test"}
            assert on_test["test_macro_f1"] == pytest.approx(float(mv.tags["test_macro_f1"]), abs=1e-6), name


def test_training_runs_carry_system_metrics_and_leave_no_monitor_running(store):
    for r in _training(store):
        assert "system/cpu_utilization_percentage" in r.data.metrics, r.info.run_name
        assert "system/system_memory_usage_megabytes" in r.data.metrics, r.info.run_name
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def test_logged_models_carry_their_key_params(store):
    client = store["client"]
    level1 = {"kind", "model", "seed", "recipe"}
    for name, keys in {
        "mmpc-tfidf": level1 | {"C", "calibration"},
        "mmpc-flaubert": level1 | {"backbone", "epochs", "lr", "batch_size"},
        "mmpc-ensemble": {
            "kind",
            "seed",
            "recipe",
            "member_versions",
            "lightgbm.rounds",
            "lightgbm.num_leaves",
        },
    }.items():
        for mv in client.search_model_versions(f"name = '{name}'"):
            params = client.get_logged_model(tracking.logged_model_id(mv)).params
            assert keys <= set(params), (name, sorted(params))
            assert params["seed"] == str(SEEDS[int(mv.version) - 1])
    ensemble = client.get_model_version("mmpc-ensemble", "2")
    params = client.get_logged_model(tracking.logged_model_id(ensemble)).params
    assert params["member_versions"] == "tfidf v2, flaubert v2" and params["kind"] == "ensemble"


def test_every_run_has_a_summary_file_at_its_root(store):
    for r in store["runs"]:
        top = {a.path for a in store["client"].list_artifacts(r.info.run_id)}
        assert tracking.SUMMARY_FILE in top, r.info.run_name
        summary = json.loads(_text(store, r.info.run_id, tracking.SUMMARY_FILE))
        assert summary["catalog"] == "catalog" and summary["data_fingerprint"]
        assert set(summary["split_sizes"]) == {"train", "valid", "stack", "test"}
        assert summary["registered_version"] and 0 <= summary["test_macro_f1"] <= 1
    for parent, seed in zip(store["parents"], SEEDS, strict=True):
        summary = json.loads(_text(store, parent, tracking.SUMMARY_FILE))
        assert summary["seed"] == seed and summary["recipe"] == "demo+fast+tiny"
        assert summary["registered_version"] == str(SEEDS.index(seed) + 1)


def test_per_class_reports_and_the_confusion_matrix_name_the_product_types(store):
    for r in _training(store):
        report = _text(store, r.info.run_id, "evaluation/test_report.txt")
        assert describe(2583) in report and describe(10) in report
        per_class = pd.read_csv(io.StringIO(_text(store, r.info.run_id, "evaluation/test_per_class.csv")))
        assert len(per_class) == 27 and per_class["name"].str.len().gt(0).all()
        matrix = pd.read_csv(
            io.StringIO(_text(store, r.info.run_id, "evaluation/test_confusion.csv")), index_col=0
        )
        assert matrix.shape == (27, 27) and describe(2583) in matrix.index
    png = store["client"].download_artifacts(_training(store)[0].info.run_id, "evaluation/test_confusion.png")
    with Image.open(png) as img:  # drawn at the artifact viewer's width: shown unscaled
        assert 900 <= img.width <= 1000


def test_table2_names_each_product_and_its_true_class(store):
    stack = next(r for r in store["runs"] if r.data.tags.get(tag.STEP) == "stack")
    text = _text(store, stack.info.run_id, "explanations/table2_only_one_model_right.csv")
    table = pd.read_csv(io.StringIO(text))
    assert {"productid", "designation", "true", "true_name", "only_right", "driver"} <= set(table.columns)
    assert len(table) > 0
    truth = store["test"].set_index("productid")
    for row in table.itertuples():  # each row is the test product it names, with its own title and class
        assert truth.loc[row.productid, "designation"] == row.designation
        assert truth.loc[row.productid, "prdtypecode"] == row.true and describe(row.true).endswith(
            row.true_name
        )
