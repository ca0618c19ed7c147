"""The MLflow UI as a user sees it after two retrains, in a real browser: headless Chromium (the
Debian package ``make`` installs) driven by Playwright, against ``mlflow ui`` on the store.

What a user must see without opening a column picker: the link mmpc builds lands on the runs list
with every model's and the stack's test macro-F1 of both retrains, distinct run names and their
datasets; the registered ensemble names its @champion; a version page shows its score and members
first. Screenshots go to ``$MMPC_SCREENSHOTS`` (else a folder of the test session), printed."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import on_store
from e2e import LEVEL1
from servers import BIN, background_server, user_env

from mmpc import tracking

RECIPE = "demo+fast+tiny"  # the plumbing of the UI, not the models' quality
SECOND_SEED = 7
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 900}
WAIT_MS = 60_000  # the UI's first load on shared cores
# Every cell of the runs table by row and column id (AG Grid splits a row between its pinned and
# scrolling parts; both carry the row's index).
TABLE_JS = """() => { const rows = {};
  for (const row of document.querySelectorAll('.ag-row[row-index]')) {
    const cells = rows[row.getAttribute('row-index')] ||= {};
    for (const cell of row.querySelectorAll('[col-id]')) cells[cell.getAttribute('col-id')] = cell.innerText;
  }
  return Object.values(rows); }"""


def test_the_runs_list_link_names_the_ui_mode_and_mmpc_view(monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_URL", "http://mlflow.example:5001/")
    expected = "http://mlflow.example:5001/#/experiments/3/runs?workflowType=machine_learning"
    assert tracking.runs_list_link("3") == f"{expected}&viewStateShareKey={tracking.RUNS_VIEW}"
    assert tracking.runs_list_link("3", "http://127.0.0.1:5001").startswith("http://127.0.0.1:5001/#/")
    version = "http://mlflow.example:5001/#/models/mmpc-ensemble/versions/2?workflowType=machine_learning"
    assert tracking.version_link("ensemble", "2") == f"[mmpc-ensemble v2]({version})"
    monkeypatch.delenv("MLFLOW_UI_URL")
    assert tracking.runs_list_link("3") is None  # a local store has no UI address of its own


def test_ui_url_prints_the_link_and_gives_an_older_experiment_the_view(tmp_path, capsys):
    from mlflow import MlflowClient

    from mmpc.cli import main

    uri = tracking.configure(tmp_path)
    older = MlflowClient().create_experiment("mmpc/older")  # made before mmpc saved its view
    assert main(["ui-url", "--workdir", str(tmp_path), "--ui", "http://127.0.0.1:5001"]) == 0
    assert capsys.readouterr().out.strip() == tracking.runs_list_link(older, "http://127.0.0.1:5001")
    tags = MlflowClient().get_experiment(older).tags
    assert tags[tracking.EXPERIMENT_KIND[0]] == tracking.EXPERIMENT_KIND[1]
    view = json.loads(tags[f"mlflow.sharedViewState.{tracking.RUNS_VIEW}"])
    assert view["name"] == tracking.RUNS_VIEW and json.loads(view["state"]) == tracking.RUNS_VIEW_STATE
    assert main(["ui-url", "--workdir", str(tmp_path), "--experiment", "mmpc/none"]) == 2
    assert "no experiment mmpc/none" in capsys.readouterr().err
    assert uri.startswith("sqlite:")


@pytest.fixture(scope="module")
def two_retrains(tmp_path_factory, harness) -> dict:
    """Two retrains of a small generated catalog into one store, the second with another seed."""
    from flows.retrain import retrain
    from mmpc.demo_catalog import write_demo_catalog

    root = tmp_path_factory.mktemp("ui")
    catalog, workdir = write_demo_catalog(root / "catalog", size=600, seed=7), root / "work"
    retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(workdir))
    retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(workdir), overrides={"seed": SECOND_SEED})
    return {"workdir": workdir, "uri": f"sqlite:///{workdir / 'mlflow.db'}"}


@pytest.fixture(scope="module")
def ui(two_retrains) -> Iterator[str]:
    """``mlflow ui`` on the store, as ``make ui`` starts it."""
    argv = [str(BIN / "mlflow"), "ui", "--backend-store-uri", two_retrains["uri"], "--workers", "1"]
    env = user_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = two_retrains["workdir"] / "mlflow-ui.log"
    with background_server(argv, "/health", env, log, "mlflow ui") as server:
        yield server.url


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MMPC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nMLflow UI screenshots: {folder}", file=sys.stderr)
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page of the system's Chromium, a fresh profile, nothing downloaded."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    chromium = shutil.which("chromium")
    assert chromium, "no chromium on PATH: `make venv` installs the Debian package"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        context.close()


def training_runs_of(experiment_id: str) -> list:
    """The level-1 and stack runs of the experiment, as MLflow records them."""
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs([experiment_id])
    return [r for r in runs if r.data.tags.get("mmpc.step") in ("level1", "stack")]


def close_assistant(page) -> None:
    """The UI's assistant panel opens on a first visit, over a third of the page: closed, as a user would."""
    button = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if button.count():
        button.first.click()


def runs_table(page, url: str) -> list[dict[str, str]]:
    page.goto(url)
    page.wait_for_selector(".ag-row[row-index]")
    close_assistant(page)
    page.wait_for_timeout(1000)  # the grid settles its columns
    return page.evaluate(TABLE_JS)


def name_of(cells: dict[str, str]) -> str:
    return cells[tracking.RUNS_NAME_COLUMN].splitlines()[-1].strip()  # after the run's colour tag


@pytest.mark.slow
def test_the_link_lands_on_the_runs_list_with_every_score(two_retrains, ui, page, screenshots):
    with on_store(two_retrains["uri"]):
        experiment = tracking.find_experiment()
        url = tracking.runs_list_link(experiment.experiment_id, ui)
        runs = training_runs_of(experiment.experiment_id)
    rows = runs_table(page, url)
    page.screenshot(path=str(screenshots / "runs-list.png"))
    assert f"/experiments/{experiment.experiment_id}/runs" in page.url
    by_name = {name_of(cells): cells for cells in rows}
    names = [r.info.run_name for r in runs]
    assert len(runs) == 2 * (len(LEVEL1) + 1), names  # every model and the stack, both retrains
    assert len(set(names)) == len(names), f"run names repeat: {names}"
    for run in runs:
        cells = by_name.get(run.info.run_name)
        assert cells is not None, f"{run.info.run_name} not on the runs list: {sorted(by_name)}"
        shown = cells.get(tracking.RUNS_SCORE_COLUMN, "")
        score = run.data.metrics[tracking.TEST_SCORE]
        assert shown and float(shown) == pytest.approx(score), (run.info.run_name, shown)
        datasets = [d.dataset.name for d in run.inputs.dataset_inputs]
        shown = cells.get(tracking.RUNS_DATASET_COLUMN, "")
        assert datasets and any(name in shown for name in datasets), (run.info.run_name, datasets, shown)


@pytest.mark.slow
def test_the_two_retrains_side_by_side(two_retrains, ui, page, screenshots):
    with on_store(two_retrains["uri"]):
        experiment = tracking.find_experiment()
        runs = training_runs_of(experiment.experiment_id)
    stacks = [r for r in runs if r.data.tags["mmpc.step"] == "stack"]
    page.goto(f"{ui}/{tracking.compare_route(experiment.experiment_id, [r.info.run_id for r in stacks])}")
    names = [r.info.run_name for r in stacks]
    page.wait_for_function("names => names.every(n => document.body.innerText.includes(n))", arg=names)
    close_assistant(page)
    scores = [f"{tracking.TEST_SCORE}.{m}" for m in (*LEVEL1, "stack")]  # each stack run records them all
    plot(page, ["seed"], scores)
    for axis in ["seed", *scores]:
        page.locator("svg text", has_text=axis).first.wait_for()
    page.screenshot(path=str(screenshots / "compare-retrains.png"))


def plot(page, params: list[str], metrics: list[str]) -> None:
    """The compare page's parallel coordinates on ``params`` and ``metrics``, picked in its two boxes as
    a user does (the page starts on a system metric)."""
    page.get_by_role("button", name="Clear All").click()
    for box, names in zip(page.get_by_role("combobox").all()[:2], (params, metrics), strict=True):
        box.click()
        for name in names:
            box.fill(name)  # the box lists the names it matches, the first one highlighted
            page.wait_for_timeout(300)
            page.keyboard.press("Enter")
        page.keyboard.press("Escape")


@pytest.mark.slow
def test_the_registry_names_the_champion_and_a_version_shows_its_score_first(
    two_retrains, ui, page, screenshots, monkeypatch
):
    monkeypatch.setenv("MLFLOW_UI_URL", ui)
    with on_store(two_retrains["uri"]):
        champion = tracking.resolve("ensemble", "champion")
        link = tracking.version_link(champion.name, champion.version)  # as a retrain's summary has it
    page.goto(f"{ui}/#/models/{champion.name}")
    page.get_by_text("@champion").first.wait_for()
    assert f"@champion: {champion.name} v{champion.version}" in page.inner_text("body")

    page.goto(link[link.index("](") + 2 : -1])
    page.get_by_text("Members").first.wait_for()
    close_assistant(page)
    page.screenshot(path=str(screenshots / "version.png"))
    text = page.inner_text("body")
    score = f"test macro-F1 {float(champion.tags['test_macro_f1']):.4f}"
    members = [text.find(f"mmpc-{m} v") for m in LEVEL1]
    assert score in text and min(members) >= 0, text[:2000]
    # first: the score, then the members, before the version's tags and schema
    assert text.find(score) < min(members) and max(members) < text.find("Schema"), text[:2000]
