"""A catalog with broken rows stops ``mmpc train``, ``mmpc stack`` and the ``retrain`` flow before any
training, with a report naming each offending row; with ``catalog.drop_invalid`` the rows are left out
and every run that read the catalog records how many and which."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from robustness import case

from mmpc.catalog import CatalogError, image_filename
from mmpc.cli import main
from mmpc.demo_catalog import write_demo_catalog

STOPS = "mmpc train and mmpc stack exit 2 before any MLflow run; the message names row, productid and reason"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog", size=600, seed=1)


def _frames(root: Path) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    x = pd.read_csv(root / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False)
    y = pd.read_csv(root / "Y_train_CVw08PX.csv", index_col=0, dtype=str, keep_default_na=False)
    return (root / "X_train_update.csv").read_text().splitlines(keepends=True), x, y


def _open_quote(root: Path) -> list[tuple[str, str, str]]:
    """A title that opens a quote and never closes it: the next records are read into it."""
    lines, _, _ = _frames(root)
    i = next(j for j, line in enumerate(lines) if line.startswith("10,"))
    lines[i] = '10,"' + lines[i][3:]
    (root / "X_train_update.csv").write_text("".join(lines))
    return [
        ("10", "", "a quote left open swallows rows ['11', '12']"),
        ("11", "", "swallowed by the open quote of row 10"),
        ("12", "", "swallowed by the open quote of row 10"),
    ]


def _missing_images(root: Path) -> list[tuple[str, str, str]]:
    _, x, _ = _frames(root)
    out = []
    for row in ("20", "21"):
        name = image_filename(int(x.loc[row, "imageid"]), int(x.loc[row, "productid"]))
        (root / "images" / "image_train" / name).unlink()
        out.append((row, x.loc[row, "productid"], name))
    return out


def _unknown_label(root: Path) -> list[tuple[str, str, str]]:
    _, x, y = _frames(root)
    y.loc["30", "prdtypecode"] = "9999"
    y.to_csv(root / "Y_train_CVw08PX.csv")
    return [("30", x.loc["30", "productid"], "9999")]


def _duplicate_productid(root: Path) -> list[tuple[str, str, str]]:
    _, x, _ = _frames(root)
    images = root / "images" / "image_train"
    iid, own, first = x.loc["41", "imageid"], x.loc["41", "productid"], x.loc["40", "productid"]
    # The copy keeps a photo under its new name, so that the duplicate is all that is wrong with it.
    shutil.copy(images / image_filename(int(iid), int(own)), images / image_filename(int(iid), int(first)))
    x.loc["41", "productid"] = first
    x.to_csv(root / "X_train_update.csv")
    return [("41", first, "first at row 40")]


def _unreadable_images(root: Path) -> list[tuple[str, str, str]]:
    """One photo emptied to 0 bytes, one cut in half: present, but not images a model can train on."""
    _, x, _ = _frames(root)
    out = []
    for row in ("50", "51"):
        path = (
            root
            / "images"
            / "image_train"
            / image_filename(int(x.loc[row, "imageid"]), int(x.loc[row, "productid"]))
        )
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if row == "51" else b"")
        out.append((row, x.loc[row, "productid"], path.name))
    return out


# The quote last: the others rewrite the CSV files through pandas, which would re-quote the broken line.
FAULTS = {
    "image": (_missing_images, "image file missing"),
    "unreadable": (_unreadable_images, "image file unreadable"),
    "label": (_unknown_label, "label missing or not in the label set"),
    "duplicate": (_duplicate_productid, "duplicate productid"),
    "quote": (_open_quote, "malformed CSV record"),
}


def _broken(demo: Path, dst: Path, *faults: str) -> tuple[Path, list[tuple[str, str, str, str]]]:
    root = Path(shutil.copytree(demo, dst))
    expected = []
    for fault in faults:
        breaker, reason = FAULTS[fault]
        expected += [(row, pid, reason, value) for row, pid, value in breaker(root)]
    return root, expected


def _runs(workdir: Path) -> list:
    if not (workdir / "mlflow.db").exists():
        return []
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    "fault",
    [
        case(
            "catalog", "bad CSV quoting: a quote left open in a title swallows the next rows", STOPS, "quote"
        ),
        case("catalog", "missing image files", STOPS, "image"),
        case("catalog", "unreadable image files (one of 0 bytes, one cut in half)", STOPS, "unreadable"),
        case("catalog", "unknown label (a code outside the label set)", STOPS, "label"),
        case("catalog", "duplicate productid", STOPS, "duplicate"),
    ],
)
def test_a_broken_catalog_stops_before_any_training(demo, tmp_path, capsys, fault, observed):
    root, expected = _broken(demo, tmp_path / "catalog", fault)
    workdir = tmp_path / "work"
    common = ["--catalog", str(root), "--workdir", str(workdir)]
    for argv in (["train", "tfidf", *common], ["stack", "--models", "tfidf=1", *common]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: invalid catalog {root}: 1 problem(s)")
        assert "catalog.drop_invalid=true" in err  # the way out is named
        reason = expected[0][2]
        assert f"- {reason}: {len(expected)} row(s)" in err
        for row, pid, _, value in expected:
            shown = [line for line in err.splitlines() if f"row {row}: productid '{pid}', value " in line]
            assert len(shown) == 1 and value in shown[0], err
    assert _runs(workdir) == []
    row, pid, reason, value = expected[0]
    observed(
        "exit 2",
        f"no MLflow run; reported: {reason}, {len(expected)} row(s), e.g. row {row} "
        f"(productid {pid!r}): {value}",
    )


@pytest.mark.robustness(
    "catalog",
    "all five faults at once, with catalog.drop_invalid=true (mmpc train, then mmpc stack)",
    "the rows are left out; a log line names them; every run has param data.dropped_rows and "
    "data/dropped_rows.csv listing row, productid, reason",
)
def test_drop_invalid_leaves_the_rows_out_and_records_them(demo, tmp_path, capsys, caplog, observed):
    root, expected = _broken(demo, tmp_path / "catalog", *FAULTS)
    workdir = tmp_path / "work"
    common = ["--catalog", str(root), "--workdir", str(workdir)]
    with caplog.at_level(logging.WARNING, logger="mmpc.catalog"):
        assert main(["train", "tfidf", *common, "--set", "catalog.drop_invalid=true"]) == 0
        assert main(["stack", "--models", "tfidf=@candidate", *common, "--drop-invalid",
                     "--set", "stacking.num_boost_round=50"]) == 0  # fmt: skip
    capsys.readouterr()
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(logged) == 2  # once per command
    for row, pid, _, _ in expected:
        assert f"row {row} (productid {pid!r})" in logged[0]

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = _runs(workdir)
    assert {r.data.tags["mmpc.step"] for r in runs} == {"level1", "stack"}
    want = {(int(row), pid, reason) for row, pid, reason, _ in expected}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["data.dropped_rows"] == str(len(expected))
        path = client.download_artifacts(
            run.info.run_id, "data/dropped_rows.csv", str(tmp_path / run.info.run_id)
        )
        table = pd.read_csv(path, dtype={"productid": str}, keep_default_na=False)
        assert list(table.columns) == ["row", "productid", "reason", "detail"]
        assert set(zip(table["row"], table["productid"], table["reason"], strict=True)) == want
        assert int(run.data.params["data.rows.train"]) > 0
    observed(
        "exit 0",
        f"{len(expected)} rows left out ({', '.join(sorted({r for _, _, r, _ in expected}))}); "
        f"{len(runs)} runs FINISHED, each with data.dropped_rows={len(expected)} and data/dropped_rows.csv",
    )


@pytest.mark.robustness(
    "catalog",
    "every image file is 0 bytes (with and without catalog.drop_invalid=true)",
    "mmpc train exits 2 before any MLflow run, naming how many image files and one of them",
)
def test_a_catalog_whose_images_all_fail_to_decode_is_refused(demo, tmp_path, capsys, observed):
    root = Path(shutil.copytree(demo, tmp_path / "catalog"))
    photos = sorted((root / "images" / "image_train").iterdir())
    for photo in photos:
        photo.write_bytes(b"")
    workdir = tmp_path / "work"
    for drop in ("false", "true"):
        argv = ["train", "tfidf", "--catalog", str(root), "--workdir", str(workdir)]
        assert main([*argv, "--set", f"catalog.drop_invalid={drop}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"none of its {len(photos)} image files decodes, e.g. {root}/images/image_train/image_" in err
        assert "empty image" in err
    assert _runs(workdir) == []
    observed("exit 2", err.removeprefix("error: ").replace(str(root), "<catalog>"))


@pytest.mark.slow
@pytest.mark.robustness(
    "catalog",
    "retrain flow on a catalog with broken rows",
    "the check-catalog task fails once (bad input is not retried), no MLflow run is created, the flow "
    "fails with the report",
)
def test_the_retrain_flow_stops_at_the_data_check(demo, tmp_path, observed):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain

    root, _ = _broken(demo, tmp_path / "catalog", "label", "duplicate")
    workdir = tmp_path / "work"
    with prefect_test_harness():
        with pytest.raises(CatalogError) as err:
            retrain(catalog=str(root), recipe="demo", workdir=str(workdir))
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs()
    assert "2 problem(s)" in str(err.value)
    assert [(t.name.split("-")[0], t.run_count, t.state.type.value) for t in tasks] == [
        ("check", 1, "FAILED")
    ]
    assert _runs(workdir) == []
    reported = str(err.value).splitlines()[1]
    observed("flow failed", f"in check-catalog after 1 attempt, 0 MLflow runs: {reported}")
