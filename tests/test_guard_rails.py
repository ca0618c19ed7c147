"""Guard rails of the retrain flow under Prefect's test harness: one retrain at a time (a second waits
for the ``mmpc-retrain`` slot, and fails naming it past ``timeouts.slot_wait_seconds``), a step past
its recipe limit fails the run with the step and the limit named, and a failed run posts exactly one
alert, without secrets, to a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmpc.demo_catalog import write_demo_catalog

RECIPE = "demo+fast+tiny"
SECRET = "mlflow-pass-GuardRails-5120"
UI = "http://prefect.mmpc.test"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("guard") / "catalog", size=60, seed=5)


@pytest.fixture()
def webhook(monkeypatch) -> Iterator[list[dict]]:
    """A JSON receiver on a free loopback port, named by MMPC_ALERT_WEBHOOK; yields what it got."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"raw": body.decode(), **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MMPC_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hooks/mmpc")
    yield received
    server.shutdown()
    server.server_close()


def _flow_run(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _hold_slot(held: threading.Event, release: threading.Event) -> None:
    from prefect.concurrency.sync import concurrency

    from flows.retrain import RETRAIN_SLOT

    with concurrency(RETRAIN_SLOT, occupy=1, strict=True):
        held.set()
        release.wait(120)


@pytest.fixture()
def other_retrain(harness) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The slot held as a running retrain holds it, until the test sets the release event."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.retrain import RETRAIN_SLOT

    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):  # made by an earlier test
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=RETRAIN_SLOT, limit=1))
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_slot, args=(held, release), daemon=True)
    holder.start()
    assert held.wait(60), "the slot was not taken"
    yield held, release
    release.set()
    holder.join(60)


def test_a_second_retrain_fails_naming_the_slot_past_its_wait(other_retrain, catalog, tmp_path):
    from flows.retrain import RetrainSlotBusy, retrain

    overrides = {"timeouts.slot_wait_seconds": 2}
    t0 = time.monotonic()
    with pytest.raises(RetrainSlotBusy) as err:
        retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(tmp_path / "work"), overrides=overrides)
    assert time.monotonic() - t0 < 60
    assert "another retrain held the mmpc-retrain concurrency slot" in str(err.value)
    assert "2 s" in str(err.value) and "timeouts.slot_wait_seconds" in str(err.value)
    assert not (tmp_path / "work").exists(), "nothing ran without the slot"


def test_a_second_retrain_waits_for_the_first_then_runs(other_retrain, tmp_path):
    from flows.retrain import retrain
    from mmpc.catalog import CatalogError
    from mmpc.locations import LocationError

    _, release = other_retrain
    threading.Timer(4, release.set).start()
    t0 = time.monotonic()
    # A missing catalog: once it holds the slot, the run fails at its first step, cheaply.
    with pytest.raises((CatalogError, LocationError, FileNotFoundError)):
        retrain(catalog=str(tmp_path / "missing"), recipe=RECIPE, workdir=str(tmp_path / "work"))
    assert release.is_set() and time.monotonic() - t0 >= 4, "the run started before the first ended"


def test_a_step_past_its_limit_fails_the_run_naming_the_step_and_the_limit(
    harness, catalog, tmp_path, webhook
):
    from flows.retrain import StepTimeout, retrain

    overrides = {"timeouts.steps.check-catalog": 0.01}
    with pytest.raises(StepTimeout) as err:
        retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(tmp_path / "work"), overrides=overrides)
    assert (
        "step check-catalog ran past its time limit of 0.01 s (recipe timeouts.steps.check-catalog)"
        in str(err.value)
    )
    (alert,) = webhook
    assert alert["failed_step"] == "check-catalog"
    run = _flow_run(alert["flow_run_id"])
    assert run.state.is_failed() and run.state.name == "TimedOut"
    assert "check-catalog" in run.state.message and "0.01 s" in run.state.message


def test_a_retrain_past_its_limit_fails_the_run_naming_the_limit(harness, catalog, tmp_path, monkeypatch):
    from flows.retrain import RetrainTimeout, retrain
    from mmpc import pipeline

    opened = pipeline.open_catalog

    def slow_open(*args, **kwargs):  # the first step outlasts the pipeline's limit, whatever the load
        time.sleep(6)
        return opened(*args, **kwargs)

    monkeypatch.setattr(pipeline, "open_catalog", slow_open)
    overrides = {"timeouts.retrain_flow_seconds": 2}
    with pytest.raises(RetrainTimeout) as err:
        retrain(
            catalog=str(catalog),
            recipe=RECIPE,
            workdir=str(tmp_path / "work"),
            models=["tfidf"],
            overrides=overrides,
        )
    assert "the retrain ran past its time limit of 2 s (recipe timeouts.retrain_flow_seconds)" in str(
        err.value
    )


def test_a_failed_retrain_posts_one_alert_without_secrets(harness, catalog, tmp_path, webhook, monkeypatch):
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    import flows.retrain as fr
    from mmpc import pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(1)
        raise ConnectionError(f"http://mmpc:{SECRET}@tracking.invalid:5000: connection refused\nsecond line")

    monkeypatch.setattr(pipeline, "open_catalog", unreachable)
    monkeypatch.setattr(fr.check_catalog, "retry_delay_seconds", [0, 0])
    with temporary_settings({PREFECT_UI_URL: UI}), pytest.raises(ConnectionError):
        fr.retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(tmp_path / "work"))
    assert len(attempts) == 3, "the transient fault was retried twice"
    (alert,) = webhook  # one message for the run, none per attempt
    assert alert["flow"] == "retrain" and alert["state"] == "Failed"
    run = _flow_run(alert["flow_run_id"])
    assert alert["flow_run_name"] == run.name and run.state.is_failed()
    assert alert["url"] == f"{UI}/runs/flow-run/{run.id}"
    assert alert["failed_step"] == "check-catalog"
    assert "ConnectionError" in alert["error"] and "tracking.invalid" in alert["error"]
    assert "second line" not in alert["error"]
    assert alert["url"] in alert["text"] and "check-catalog" in alert["text"]
    assert SECRET not in alert["raw"] and "/hooks/mmpc" not in alert["raw"]


def test_python_m_flows_reports_a_guard_rail_in_one_line(harness, catalog, tmp_path, capsys):
    from flows.__main__ import main as flows_main

    code = flows_main(
        ["retrain", "--catalog", str(catalog), "--recipe", RECIPE, "--workdir", str(tmp_path / "work"),
         "--set", "timeouts.steps.check-catalog=0.01"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert err[-1].startswith("error: step check-catalog ran past its time limit of 0.01 s")
    assert not [line for line in err if line.startswith("Traceback")]
