"""bench/score.py --tiny: it builds a small store with the retrain flow, scores a generated catalog with
the local and the Spark engine (and finds the same answers), one product per request over HTTP, the
TF-IDF model alone on two CSVs of texts, and ends with one JSON line holding the figures and targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "score.py"

TARGETS = {"local_at_least_3x_http", "tfidf_memory_within_10pct", "spark_within_2x_local", "spark_identical"}


@pytest.mark.slow
def test_tiny_run_ends_with_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = ["--tiny", "--recipe", "demo+fast+tiny", "--store-size", "500"]
    argv += ["--workdir", tmp_path / "work"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (figures["sizes"], figures["tfidf_sizes"], figures["http_sample"]) == ([300], [2000, 4000], 50)
    assert set(figures["targets"]) == TARGETS
    assert all(isinstance(v, bool) for v in figures["targets"].values())
    for key in ("local", "spark", "http"):
        assert figures[f"{key}_products_s"] > 0, key
    assert figures["local_over_http"] > 0 and figures["spark_over_local"] > 0
    # the Spark engine answers as the local engine does, on every product
    assert figures["spark_identical"] is True and figures["engines"]["300"]["compare"]["rows"] == 300
    for engine in ("local", "spark"):
        run = figures["engines"]["300"][engine]
        assert run["rows"] == 300 and run["maxrss_mb"] > 0 and run["tree_peak_mb"] > 0
    assert figures["engines"]["300"]["spark"]["tree_processes"] > 1  # the JVM and its Python workers
    assert [figures["tfidf"][n]["rows"] for n in ("2000", "4000")] == [2000, 4000]
    assert set(figures["tfidf_peak_rss_mb"]) == {"2000", "4000"} and figures["tfidf_memory_growth"] > -1
    assert figures["http"]["1"]["products"] == 50
    assert (tmp_path / "work" / "mlflow.db").is_file()  # the store was built where --workdir said
