"""bench/train_throughput.py at its tiny scale: it times mmpc's own training step on the paper-shapes
recipe's models, scaled down, and ends with one JSON line holding every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "train_throughput.py"


def test_tiny_run_ends_with_json():
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "tiny", "--device", "cpu", "--synthetic"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["config"] == "tiny" and figures["recipe"] == "paper-shapes"
    assert (figures["steps"], figures["warmup"]) == (2, 1)
    # the recipe's text models, both ways, on the same samples
    for name in ("flaubert", "camembert"):
        for way in ("paper", "mmpc"):
            assert figures[f"{name}_{way}_samples_s"] > 0
            assert 0 < figures[f"{name}_{way}_padding_efficiency"] <= 1
        assert figures[f"{name}_ratio"] > 0
    # dynamic padding wastes less than padding every sample to max_len
    assert figures["flaubert_mmpc_padding_efficiency"] > figures["flaubert_paper_padding_efficiency"]
    for key in ("image_images_s", "image_model_only_images_s", "image_loader_only_images_s"):
        assert figures[key] > 0
    breakdown = figures["projected_breakdown_min"]["mmpc"]
    assert set(breakdown) == {"flaubert", "camembert", "seresnext", "fusion", "total"}
    assert figures["text_mfu"] is None  # no GPU peak on CPU
    assert "train_one_epoch" in proc.stdout
