"""bench/serve.py on tiny settings: it builds a small store with the retrain flow, measures the
ensemble against the naive composition in process and over HTTP (one ensemble server), times the
stages from ``EnsemblePredictor.timings``, builds a recipe's models with random weights for the
paper-size part, and ends with one JSON line holding the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "serve.py"


@pytest.mark.slow
def test_tiny_run_ends_with_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [
        *("--recipe", "demo+fast+tiny", "--size", "500", "--workdir", tmp_path / "work"),
        *("--batch", "8", "--batches", "2", "--max-s", "5", "--profile-rounds", "4"),
        *("--no-naive-http", "--no-thread-variant", "--clients", "1", "--rounds", "1"),
        *("--http-batch", "4", "--http-requests", "4", "--single", "4"),
        *("--paper-size", "--paper-recipe", "demo+fast+tiny", "--paper-batch", "4"),
        *("--paper-batches", "1", "--paper-vocab", "500"),
    ]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("inprocess_ensemble_products_s", "inprocess_naive_products_s", "ratio", "agreement"):
        assert figures[key] > 0, key
    assert figures["http_ensemble_products_s"] > 0 and figures["p50_ms"] > 0
    assert figures["http_naive_products_s"] is None  # --no-naive-http
    assert figures["paper_size_ensemble_products_s"] > 0 and figures["paper_size_ratio"] > 0
    assert figures["build_s"] > 0 and figures["total_s"] >= figures["build_s"]
    # the stage breakdown comes from the predictor's own timings: one line per member and the booster
    for stage in ("member flaubert forward", "member fusion forward", "booster.predict"):
        assert stage in proc.stdout, stage
    assert (tmp_path / "work" / "mlflow.db").is_file()  # the store was built where --workdir said
