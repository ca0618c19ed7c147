"""Scheduled retraining under Prefect's test harness: unchanged steps are skipped through MLflow tags,
new products retrain and publish, transient faults are retried, and the summary reads well."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from e2e import LEVEL1
from mlflow.tracking import MlflowClient

from mmpc.demo_catalog import write_demo_catalog

pytestmark = pytest.mark.slow


RECIPE = "demo+fast"


def _versions(client: MlflowClient) -> dict[str, int]:
    return {
        m.name: len(client.search_model_versions(f"name = '{m.name}'"))
        for m in client.search_registered_models()
    }


def _grow(catalog: Path, extra: Path) -> int:
    """Append the products (and photos) of ``extra`` to ``catalog``; returns how many were added."""
    x, y = (pd.read_csv(catalog / f, index_col=0) for f in ("X_train_update.csv", "Y_train_CVw08PX.csv"))
    ex, ey = (pd.read_csv(extra / f, index_col=0) for f in ("X_train_update.csv", "Y_train_CVw08PX.csv"))
    ex.index = ey.index = range(len(x), len(x) + len(ex))
    pd.concat([x, ex]).to_csv(catalog / "X_train_update.csv", lineterminator="\n")
    pd.concat([y, ey]).to_csv(catalog / "Y_train_CVw08PX.csv", lineterminator="\n")
    for img in (extra / "images" / "image_train").iterdir():
        shutil.copy(img, catalog / "images" / "image_train" / img.name)
    return len(ex)


@pytest.fixture(scope="module")
def runs(harness, tmp_path_factory):
    """A first retrain and an unchanged second one, timed."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("flows")
    catalog = write_demo_catalog(root / "catalog", size=600, seed=11)
    workdir = root / "work"
    args = {"catalog": str(catalog), "recipe": RECIPE, "workdir": str(workdir)}
    uri = f"sqlite:///{workdir / 'mlflow.db'}"

    t0 = time.perf_counter()
    first = retrain(**args)
    t1 = time.perf_counter()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    before = _versions(MlflowClient(uri, registry_uri=uri))
    second = retrain(**args)
    t2 = time.perf_counter()
    after = _versions(MlflowClient(uri, registry_uri=uri))
    return {
        "args": args,
        "root": root,
        "uri": uri,
        "first": first,
        "second": second,
        "seconds": (t1 - t0, t2 - t1),
        "versions": (before, after),
    }


def _client(runs) -> MlflowClient:
    mlflow.set_tracking_uri(runs["uri"])
    mlflow.set_registry_uri(runs["uri"])
    return MlflowClient(runs["uri"], registry_uri=runs["uri"])


def test_unchanged_catalog_trains_and_publishes_nothing(runs):
    first, second = runs["first"], runs["second"]
    assert not any(r["reused"] for r in first["level1"].values()) and not first["ensemble"]["reused"]
    assert all(second["level1"][n]["reused"] for n in LEVEL1)
    assert {n: r["version"] for n, r in second["level1"].items()} == {
        n: r["version"] for n, r in first["level1"].items()
    }
    assert second["ensemble"]["reused"] and second["ensemble"]["version"] == first["ensemble"]["version"]
    before, after = runs["versions"]
    assert before == after, "an unchanged retrain registers no new version"
    client = _client(runs)
    level1_runs = client.search_runs(
        [client.get_run(first["parent_run_id"]).info.experiment_id], "tags.`mmpc.step` = 'level1'"
    )
    assert len(level1_runs) == len(LEVEL1), "no level-1 training run was started the second time"


def test_unchanged_retrain_takes_a_small_fraction_of_the_first(runs):
    first_s, second_s = runs["seconds"]
    assert second_s < 0.35 * first_s, f"first {first_s:.1f} s, unchanged second {second_s:.1f} s"


def test_summary_artifact_holds_the_f1_table_decision_and_links(runs):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        summaries = [a for a in client.read_artifacts() if a.key == "retrain-summary"]
    assert len(summaries) >= 2
    # the unchanged second retrain's summary (the server lists artifacts in no particular order)
    (text,) = [a.data for a in summaries if runs["second"]["parent_run_id"] in a.data]
    assert "| model | version | test macro-F1 |" in text and "**stack**" in text
    assert all(f"mmpc-{n} v{runs['first']['level1'][n]['version']}" in text for n in LEVEL1)
    assert "reused (inputs unchanged)" in text
    assert "**Decision:**" in text and "already the champion" in text
    assert "**Current champion:** mmpc-ensemble v1" in text
    # the first retrain evaluated its new ensemble: an evaluation run linked to the version
    ev = runs["first"]["ensemble"]["evaluation"]
    assert any(ev["run_id"] in a.data and "**Evaluation** of v1 on test" in a.data for a in summaries)
    run = _client(runs).get_run(ev["run_id"])
    assert run.data.tags["mmpc.evaluated_model"] == "mmpc-ensemble"
    assert run.data.tags["mmpc.evaluated_version"] == runs["first"]["ensemble"]["version"]
    # the served ensemble scores what the stacking run reported for it
    assert ev["macro_f1"] == pytest.approx(runs["first"]["ensemble"]["scores"]["stack"], abs=1e-3)
    assert "evaluation" not in runs["second"]["ensemble"]  # nothing new to evaluate


def test_reuse_is_found_through_mlflow_alone(runs, monkeypatch):
    """With Prefect's result store gone (a fresh PREFECT_HOME), the lookup still finds the versions:
    it reads only MLflow tags."""
    from mmpc import pipeline
    from mmpc.recipe import load_recipe

    _client(runs)
    recipe = load_recipe(RECIPE)
    catalog = pipeline.open_catalog(runs["args"]["catalog"], recipe)
    found = pipeline.find_level1(catalog, recipe, "flaubert")
    assert found is not None and found.version == runs["first"]["level1"]["flaubert"]["version"]
    changed = load_recipe(RECIPE, {"models.flaubert.train.lr": 1e-3})
    assert pipeline.find_level1(catalog, changed, "flaubert") is None, "a changed recipe retrains"


def test_a_transient_fault_is_retried_and_the_flow_completes(runs, monkeypatch):
    from prefect.client.orchestration import get_client

    import flows.retrain as fr
    from mmpc import pipeline

    real = pipeline.stack_and_publish
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("tracking server: connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "stack_and_publish", flaky)
    monkeypatch.setattr(fr.publish, "retry_delay_seconds", [0, 0])
    result = fr.retrain(**runs["args"])
    assert len(calls) == 2 and result["ensemble"]["version"] == runs["first"]["ensemble"]["version"]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs()
    publish_runs = [t for t in task_runs if t.name.startswith("stack-and-publish")]
    assert max(t.run_count for t in publish_runs) == 2


def test_parallel_level1_stage_runs_in_worker_processes(runs):
    from flows.retrain import retrain

    result = retrain(**runs["args"], parallel=2)
    assert all(result["level1"][n]["reused"] for n in LEVEL1) and result["ensemble"]["reused"]


def test_added_products_retrain_and_publish_a_new_ensemble(runs):
    from flows.retrain import retrain

    extra = write_demo_catalog(runs["root"] / "extra", size=120, seed=12)
    added = _grow(Path(runs["args"]["catalog"]), extra)
    assert added == 120
    third = retrain(**runs["args"])
    assert not any(r["reused"] for r in third["level1"].values())
    assert not third["ensemble"]["reused"]
    assert int(third["ensemble"]["version"]) == int(runs["first"]["ensemble"]["version"]) + 1
    client = _client(runs)
    for name in LEVEL1:
        assert len(client.search_model_versions(f"name = 'mmpc-{name}'")) == 2
