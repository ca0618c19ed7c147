"""The nightly scoring flow under Prefect's test harness: the first night scores every product, an
unchanged night scores nothing, and a night after edits and additions scores exactly those."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import on_store
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from mmpc.scoring.changes import INDEX
from mmpc.scoring.parts import Parts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nights(pipeline_run, tmp_path_factory):
    from flows.score import score

    root = tmp_path_factory.mktemp("nightly")
    catalog = root / "catalog"
    shutil.copytree(pipeline_run["catalog"], catalog)
    args = {"catalog": str(catalog), "root": str(root / "scores"), "workdir": str(pipeline_run["workdir"])}
    with on_store(pipeline_run["uri"]), prefect_test_harness():
        first = score(**args)
        unchanged = score(**args)
        x = pd.read_csv(catalog / "X_train_update.csv", index_col=0)
        x.loc[x.index[0], "description"] = "Nouvelle description du produit"
        extra = x.iloc[:2].copy()
        extra["productid"] = [900000001, 900000002]
        extra.index = [len(x), len(x) + 1]
        for (_, row), src in zip(extra.iterrows(), x.iloc[:2].itertuples(), strict=True):
            shutil.copy(
                catalog / "images" / "image_train" / f"image_{src.imageid}_product_{src.productid}.jpg",
                catalog / "images" / "image_train" / f"image_{row.imageid}_product_{row.productid}.jpg",
            )
        pd.concat([x, extra]).to_csv(catalog / "X_train_update.csv")
        edited = score(**args)
        with get_client(sync_client=True) as client:
            artifacts = [a for a in client.read_artifacts() if a.key == "score-summary"]
    return {
        "first": first,
        "unchanged": unchanged,
        "edited": edited,
        "artifacts": artifacts,
        "root": root,
        "x": x,
    }


def test_the_first_night_scores_every_product(nights):
    first = nights["first"]
    assert first["changed"] == first["total"] == len(nights["x"])
    assert first["manifest"]["rows"] == first["total"]
    assert len(Parts(first["output"]).read()) == first["total"]


def test_an_unchanged_night_scores_nothing(nights):
    unchanged = nights["unchanged"]
    assert unchanged["changed"] == 0 and unchanged["manifest"] is None


def test_edited_and_added_products_are_the_only_ones_scored(nights):
    edited = nights["edited"]
    assert edited["total"] == len(nights["x"]) + 2 and edited["changed"] == 3
    scored = Parts(edited["output"]).read()
    assert sorted(scored["productid"]) == sorted(
        [int(nights["x"]["productid"].iloc[0]), 900000001, 900000002]
    )
    index = pd.read_parquet(nights["root"] / "scores" / INDEX)
    assert len(index) == edited["total"] and index["productid"].is_unique


def test_each_night_leaves_a_summary_artifact(nights):
    texts = [a.data for a in nights["artifacts"]]
    assert len(texts) == 3 and any("Nothing to score" in t for t in texts)
    scored = [t for t in texts if "MLflow run" in t]
    assert len(scored) == 2 and all("class mix drift" in t and "mean_confidence" in t for t in scored)
