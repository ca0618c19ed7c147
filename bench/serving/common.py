"""What every part of the serving benchmark shares: a clean stdout, progress lines, request batches."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator

import pandas as pd


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Library chatter (training progress, registry messages, native progress bars) goes to stderr,
    so stdout holds the report alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(frame) - size + 1, size)]


def payload(frame: pd.DataFrame) -> bytes:
    split = frame.to_dict(orient="split")
    return json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}}).encode()


@contextlib.contextmanager
def timed(stages: dict[str, list[float]], name: str) -> Iterator[None]:
    """Milliseconds of the block, appended to ``stages[name]``."""
    t0 = time.perf_counter()
    yield
    stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
