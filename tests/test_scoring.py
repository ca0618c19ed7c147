"""``mmpc score``: the champion over a whole catalog, a CSV or a Parquet file, into Parquet parts with a
manifest; one MLflow run per job; killed and run again it redoes no finished part; run again on an
unchanged input it does nothing; a bad row is reported, never fails the job."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import on_store
from mlflow.tracking import MlflowClient
from PIL import Image

from mmpc import scoring
from mmpc import tags as tag
from mmpc.scoring.parts import MANIFEST, Parts

pytestmark = pytest.mark.slow
KILL_AT = Path(__file__).with_name("kill_at.py")


def _mmpc(*args: str, env_uri: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    prefix = [sys.executable, str(KILL_AT), kill_at] if kill_at else [sys.executable, "-m", "mmpc.cli"]
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": env_uri}
    return subprocess.run([*prefix, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def scored(pipeline_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores") / "out"
    with on_store(pipeline_run["uri"]):
        manifest = scoring.score(pipeline_run["catalog"], out, pipeline_run["workdir"], chunk_rows=300)
    return {"out": out, "manifest": manifest}


@pytest.fixture(autouse=True)
def _store(e2e_store):
    """Every test here reads and writes the session pipeline's store."""
    return e2e_store


def test_the_catalog_is_scored_into_parts_with_a_manifest(pipeline_run, scored):
    manifest, out = scored["manifest"], scored["out"]
    frame = Parts(out).read()
    x = pd.read_csv(Path(pipeline_run["catalog"]) / "X_train_update.csv")
    assert manifest["rows"] == len(x) == len(frame) and manifest["parts"] == [
        f"part-0000{i}.parquet" for i in range(4)
    ]
    assert frame["productid"].tolist() == x["productid"].tolist()  # input order
    assert frame["prdtypecode"].notna().all() and frame["error"].isna().all()
    assert (frame["version"] == manifest["version"]).all() and set(frame["image_status"]) == {"ok"}
    assert all(
        len(c) == 3 and c[0] == p for c, p in zip(frame["top_codes"], frame["prdtypecode"], strict=True)
    )
    # the same answers as the registered model asked directly
    model = mlflow.pyfunc.load_model(f"models:/mmpc-ensemble/{manifest['version']}")
    direct = model.predict(_requests(x.head(20), Path(pipeline_run["catalog"])))
    assert direct["prdtypecode"].tolist() == frame["prdtypecode"].head(20).tolist()
    np.testing.assert_allclose(direct["probability"], frame["probability"].head(20), rtol=1e-6)


def _score_args(pipeline_run, out: Path) -> list[str]:
    """``mmpc score`` of the session pipeline's catalog into ``out``, chunks of 300 products."""
    catalog, workdir = str(pipeline_run["catalog"]), str(pipeline_run["workdir"])
    return ["score", catalog, "--output", str(out), "--workdir", workdir, "--chunk-rows", "300"]


def _requests(x: pd.DataFrame, catalog: Path) -> pd.DataFrame:
    import base64

    folder = catalog / "images" / "image_train"
    photos = [
        base64.b64encode((folder / f"image_{i}_product_{p}.jpg").read_bytes()).decode()
        for i, p in zip(x["imageid"], x["productid"], strict=True)
    ]
    return pd.DataFrame({"designation": x["designation"], "description": x["description"], "image": photos})


def test_one_mlflow_run_records_the_job(scored):
    run = MlflowClient().get_run(scored["manifest"]["run_id"])
    assert (
        run.data.tags[tag.STEP] == "score"
        and run.data.tags[tag.SCORED_VERSION] == scored["manifest"]["version"]
    )
    assert (
        run.data.metrics["rows"] == scored["manifest"]["rows"] and run.data.metrics["products_per_second"] > 0
    )
    assert 0 <= run.data.metrics["class_mix_js_distance"] < 0.5  # the catalog it was trained on
    assert run.data.metrics["image_missing_share"] == 0 and 0 < run.data.metrics["mean_confidence"] <= 1
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == scored["manifest"]["fingerprint"][:16]


def test_an_unchanged_input_scored_again_does_nothing(pipeline_run, scored):
    mtimes = {p.name: p.stat().st_mtime_ns for p in scored["out"].iterdir()}
    again = scoring.score(pipeline_run["catalog"], scored["out"], pipeline_run["workdir"], chunk_rows=300)
    assert again["run_id"] == scored["manifest"]["run_id"]
    assert {p.name: p.stat().st_mtime_ns for p in scored["out"].iterdir()} == mtimes


def test_killed_mid_job_it_continues_without_redoing_a_part(pipeline_run, scored, tmp_path):
    out = tmp_path / "out"
    args = _score_args(pipeline_run, out)
    killed = _mmpc(*args, env_uri=pipeline_run["uri"], kill_at="score-part")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    assert not (out / MANIFEST).exists()  # never visible as complete
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    done = _mmpc(*args, env_uri=pipeline_run["uri"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())  # not redone
    manifest = json.loads((out / MANIFEST).read_text())
    pd.testing.assert_frame_equal(Parts(out).read(), Parts(scored["out"]).read())
    run = MlflowClient().get_run(manifest["run_id"])  # the same run, resumed
    assert run.info.status == "FINISHED" and run.data.metrics["rows_this_attempt"] == manifest["rows"] - 600


def test_a_file_of_products_with_bad_rows_is_scored_row_by_row(pipeline_run, tmp_path):
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(photo, format="JPEG")
    (tmp_path / "ok.jpg").write_bytes(photo.getvalue())
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    products = pd.DataFrame(
        {
            "productid": [1, 2, 3, 4],
            "designation": ["Piscine tubulaire ronde", "", "Lot de 3 romans policiers", "Console portable"],
            "description": ["bleue", None, None, "noire"],
            "image": ["ok.jpg", "ok.jpg", "broken.jpg", "absent.jpg"],
        }
    )
    for fmt in ("csv", "parquet"):
        path = tmp_path / f"products.{fmt}"
        products.to_csv(path, index=False) if fmt == "csv" else products.to_parquet(path, index=False)
        out = scoring.score(path, tmp_path / f"out-{fmt}", pipeline_run["workdir"])
        frame = Parts(tmp_path / f"out-{fmt}").read()
        assert out["rows"] == 4 and frame["prdtypecode"].isna().tolist() == [False, True, False, False]
        assert frame["error"].tolist()[1] == "no designation (title)"
        assert frame["image_status"].tolist() == ["ok", "not_read", "invalid", "invalid"]


def test_bad_input_is_one_line_and_exit_2(pipeline_run, scored, tmp_path):
    work, uri = str(pipeline_run["workdir"]), pipeline_run["uri"]
    other = tmp_path / "other.csv"
    pd.DataFrame({"productid": [1], "designation": ["Livre"]}).to_csv(other, index=False)
    cases = {
        "holds the scores of another job": [
            "score",
            str(other),
            "--output",
            str(scored["out"]),
            "--workdir",
            work,
        ],
        "no such registered version": [
            "score",
            str(other),
            "--output",
            str(tmp_path / "o"),
            "--version",
            "@nope",
        ],
        "no such file or folder": ["score", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o2")],
    }
    for message, args in cases.items():
        if "--workdir" not in args:
            args += ["--workdir", work]
        done = _mmpc(*args, env_uri=uri)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-1500:]
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def spark_scored(pipeline_run, tmp_path_factory):
    """``mmpc score --engine spark`` as a user runs it: a process of its own, the store named."""
    out = tmp_path_factory.mktemp("spark") / "out"
    args = _score_args(pipeline_run, out)
    done = _mmpc(
        *args,
        "--engine",
        "spark",
        "--spark-master",
        "local[2]",
        env_uri=pipeline_run["uri"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "manifest": json.loads((out / MANIFEST).read_text())}


def test_the_spark_engine_gives_the_local_engines_answers(scored, spark_scored):
    """mlflow.pyfunc.spark_udf on a real local[2] Spark session, reading the catalog's CSV itself."""
    local, spark = Parts(scored["out"]).read(), Parts(spark_scored["out"]).read()
    assert spark_scored["manifest"]["rows"] == len(local) == len(spark)
    assert spark["productid"].tolist() == local["productid"].tolist()
    assert spark["prdtypecode"].tolist() == local["prdtypecode"].astype("int64").tolist()
    np.testing.assert_allclose(spark["probability"], local["probability"], rtol=1e-6)
    assert spark["top_codes"].map(list).tolist() == local["top_codes"].map(list).tolist()
    assert spark["image_status"].tolist() == local["image_status"].tolist()
    run = MlflowClient().get_run(spark_scored["manifest"]["run_id"])
    assert run.data.params["engine"] == "spark" and run.data.metrics["rows"] == len(local)


def test_the_spark_engine_reports_rows_without_a_title(pipeline_run, tmp_path):
    products = pd.DataFrame(
        {
            "productid": [7, 8],
            "designation": ["Lot de 3 romans policiers", ""],
            "description": ["poche", None],
        }
    )
    products.to_parquet(tmp_path / "p.parquet", index=False)
    scoring.score(tmp_path / "p.parquet", tmp_path / "out", pipeline_run["workdir"], engine="spark")
    frame = Parts(tmp_path / "out").read()
    assert frame["productid"].tolist() == [7, 8] and frame["error"].tolist()[1] == "no designation (title)"
    assert pd.notna(frame["prdtypecode"][0]) and pd.isna(frame["prdtypecode"][1])


def test_a_level1_model_is_scored_with_the_same_columns_by_both_engines(pipeline_run, tmp_path):
    """Any registered version: the TF-IDF model's per-code probabilities become the top-k columns."""
    x = pd.read_csv(Path(pipeline_run["catalog"]) / "X_train_update.csv").head(40)
    x[["productid", "designation", "description"]].to_csv(tmp_path / "p.csv", index=False)
    frames = {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        scoring.score(tmp_path / "p.csv", out, pipeline_run["workdir"], "tfidf", "@candidate", engine=engine)
        frames[engine] = Parts(out).read()
    local, spark = frames["local"], frames["spark"]
    assert local["prdtypecode"].notna().all() and set(local["image_status"]) == {"not_reported"}
    assert all(len(c) == 3 for c in local["top_codes"])
    assert spark["prdtypecode"].tolist() == local["prdtypecode"].astype("int64").tolist()
    np.testing.assert_allclose(spark["probability"], local["probability"], rtol=1e-6)
    assert spark["top_codes"].map(list).tolist() == local["top_codes"].map(list).tolist()
