"""Failure alerts: a retrain or scoring flow run that fails or crashes POSTs one JSON message to the
webhook named by ``MMPC_ALERT_WEBHOOK`` (nothing is sent while it is unset).

The message carries the flow, the flow run's id and name, its state, a link to it in the Prefect UI
(when ``PREFECT_UI_URL`` is set or can be inferred from ``PREFECT_API_URL``), the step that failed
and the first line of the error; ``text`` repeats them in one line, so a Slack or Mattermost incoming
webhook shows it as is. Values of secret-looking environment variables and the user:password part of
URLs are masked. The hooks sit on the outermost flows only (``retrain``, ``score``): a failing nested
flow or task fails its parent, and a retried task fails nothing until its retries are spent, so a
failed run sends exactly one message. A hook never raises: an unreachable webhook is a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from typing import Any

WEBHOOK_ENV = "MMPC_ALERT_WEBHOOK"
POST_TIMEOUT_SECONDS = 5.0
# A step wrapper of the flows adds this note to the exception a step raised (flows/retrain.py).
STEP_NOTE = "mmpc step: "

_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|CREDENTIAL|WEBHOOK|DATABASE_URL")
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/\s@]+@")

logger = logging.getLogger("mmpc.alerts")


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """A Prefect ``on_failure`` / ``on_crashed`` hook: one POST to the webhook, never an exception."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return
    try:
        post(url, failure_payload(flow, flow_run, state))
    except Exception as exc:  # the URL itself is not logged: it often embeds a token
        logger.warning(
            "failure alert for flow run %s not sent: %s", getattr(flow_run, "id", "?"), type(exc).__name__
        )


def failure_payload(flow: Any, flow_run: Any, state: Any) -> dict[str, Any]:
    exc = _exception(state)
    step = (_noted_step(exc) if exc is not None else None) or _failed_task_run(flow_run.id)
    error = _first_line(state.message or (repr(exc) if exc is not None else "")) or state.name
    payload = {
        "flow": flow.name,
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "state": state.name,
        "url": _ui_link(flow_run.id),
        "failed_step": step,
        "error": error,
    }
    at = f" at step {step}" if step else ""
    payload["text"] = f"mmpc: {flow.name} run {flow_run.name} {state.name}{at}: {error}" + (
        f" {payload['url']}" if payload["url"] else ""
    )
    return {k: redact(v) if isinstance(v, str) else v for k, v in payload.items()}


def post(url: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS) as response:
        response.read()


def redact(text: str) -> str:
    """``text`` without URL credentials or the values of secret-looking environment variables."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name.upper()) and value in text:
            text = text.replace(value, "***")
    return text


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _exception(state: Any) -> BaseException | None:
    data = state.data
    data = getattr(data, "result", data)  # a ResultRecord holds the exception in ``result``
    return data if isinstance(data, BaseException) else None


def _noted_step(exc: BaseException) -> str | None:
    """The step named in the notes of ``exc`` or of the exceptions it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for note in getattr(exc, "__notes__", ()):
            if note.startswith(STEP_NOTE):
                return note[len(STEP_NOTE) :]
        exc = exc.__cause__ or exc.__context__
    return None


def _failed_task_run(flow_run_id: Any) -> str | None:
    """The first task run the server records as failed or crashed in the flow run (a crash leaves no
    exception to read the step from); None when none is recorded yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(
                        type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                    )
                ),
            )
    except Exception:
        return None
    runs = sorted(runs, key=lambda r: r.state.timestamp if r.state else r.expected_start_time)
    return runs[0].name if runs else None


def _ui_link(flow_run_id: Any) -> str | None:
    from prefect.utilities.urls import url_for

    try:
        return url_for("flow-run", obj_id=flow_run_id)
    except Exception:
        return None
