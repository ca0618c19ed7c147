"""A work folder's SQLite store held by another writer: the commands that read or move the registry
wait SQLite's bounded busy timeout, then exit 3 with one line naming the store file, no traceback.
The lock is real: an exclusive transaction held by this test process while the command runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from robustness import case
from servers import REPO, user_env

from mmpc import tracking
from mmpc.demo_catalog import write_demo_catalog

NAME = "mmpc-ensemble"
R = "registry"
EXPECTED = "exit 3, one line naming the store file and the other process, no traceback"
Argv = Callable[[Path], list[str]]


@pytest.fixture
def locked_workdir(tmp_path) -> Iterator[Path]:
    """A work folder whose store has a champion and a second version, locked by an open exclusive
    transaction (as a long write by another process holds it)."""
    workdir = tmp_path / "work"
    tracking.configure(workdir)
    client = MlflowClient()
    client.create_registered_model(NAME)
    (workdir / "model").mkdir()
    for _ in range(2):
        client.create_model_version(NAME, str(workdir / "model"))
    client.set_registered_model_alias(NAME, "champion", "2")
    lock = sqlite3.connect(workdir / "mlflow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        yield workdir
    finally:
        lock.rollback()
        lock.close()
        mlflow.set_tracking_uri("")


def _evaluate(workdir: Path) -> list[str]:
    catalog = write_demo_catalog(workdir.parent / "catalog", size=200, seed=3)
    return [
        "evaluate",
        "--model",
        "ensemble",
        "--version",
        "1",
        "--catalog",
        str(catalog),
        "--workdir",
        str(workdir),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        case(
            R,
            "SQLite store locked by another writer: `mmpc promote`",
            EXPECTED,
            lambda w: ["promote", "1", "--workdir", str(w)],
        ),
        case(
            R,
            "SQLite store locked by another writer: `mmpc rollback`",
            EXPECTED,
            lambda w: ["rollback", "--workdir", str(w)],
        ),
        case(R, "SQLite store locked by another writer: `mmpc evaluate`", EXPECTED, _evaluate),
    ],
)
def test_a_locked_store_is_one_line_and_exit_3(locked_workdir, argv: Argv, observed):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mmpc.cli", *argv(locked_workdir)],
        cwd=REPO,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    waited = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    store = str(locked_workdir / "mlflow.db")
    assert line.startswith(f"error: the MLflow store {store} is locked: another process holds it"), line
    assert waited < 120, f"{waited:.0f} s"
    observed("exit 3", line.replace(store, "<workdir>/mlflow.db").removeprefix("error: "))
