"""Shared fixtures: offline settings, the real sample data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "rakuten"


@pytest.fixture(autouse=True)
def _no_tracking_leak(monkeypatch):
    """A test never writes to a tracking server named by the caller's environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
