"""``status.json``: the version serving now, the last rollout attempt and why it failed, the versions
that failed recently (not retried before ``retry_after_s``). Written whole, atomically."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from infra.serving.layout import Layout, write_atomic
from infra.serving.model_servers import ModelServer


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load(layout: Layout) -> dict[str, Any]:
    if not layout.status.is_file():
        return {"serving": None, "last_attempt": None, "failed": {}}
    return json.loads(layout.status.read_text())


def save(layout: Layout, status: dict[str, Any]) -> None:
    status["updated"] = now()
    write_atomic(layout.status, json.dumps(status, indent=2) + "\n")


def serving(status: dict[str, Any]) -> ModelServer | None:
    data = status.get("serving")
    return ModelServer.from_json({k: v for k, v in data.items() if k != "since"}) if data else None


def failed_recently(status: dict[str, Any], version: str, retry_after_s: float) -> bool:
    at = status.get("failed", {}).get(version)
    if at is None:
        return False
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(at)
    return age.total_seconds() < retry_after_s
