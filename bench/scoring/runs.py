"""Each scoring job of the benchmark in its own process (``bench.scoring.job``), its process tree's
memory sampled all along (``bench.scoring.memory``), its output folder fresh (an output already
holding the job's scores would make ``mmpc score`` do nothing)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scoring.memory import run_measured
from bench.serving.common import log
from infra.local.processes import tail

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Runner:
    """Where jobs score from (the store) and write to (``scratch``)."""

    tracking_uri: str
    workdir: Path  # the store's folder (``mmpc score --workdir``)
    scratch: Path
    spark_master: str = "local[2]"
    chunk_rows: int | None = None  # None: mmpc score's default

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PYTHONPATH": path}

    def score(self, name: str, location: Path, model: str, version: str, engine: str) -> dict[str, Any]:
        """One job; its figures (``bench.scoring.job``'s) with the tree's sampled peak and the
        output folder (``out``), which the caller removes when done with it."""
        out = self.scratch / "scores" / name
        shutil.rmtree(out, ignore_errors=True)
        spec = {
            "location": str(location),
            "output": str(out),
            "workdir": str(self.workdir),
            "model": model,
            "version": version,
            "engine": engine,
            "spark_master": self.spark_master,
        }
        if self.chunk_rows:
            spec["chunk_rows"] = self.chunk_rows
        log(f"{name}: {model} {version}, engine {engine}, on {location.name}")
        argv = [sys.executable, "-m", "bench.scoring.job", json.dumps(spec)]
        log_file = self.scratch / "logs" / f"{name}.log"
        done = run_measured(argv, self.env(), log_file, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"{name}: exit {done.returncode}; the end of its log:\n{tail(log_file, 30)}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures |= {
            "products_s": figures["rows"] / figures["wall_s"],
            "process_wall_s": done.wall_s,
            "tree_peak_mb": done.tree_peak_mb,
            "tree_processes": done.tree_processes,
            "out": str(out),
        }
        log(
            f"{name}: {figures['rows']:,} rows, {figures['products_s']:.0f} products/s, "
            f"peak RSS {figures['maxrss_mb']:.0f} MB "
            f"(tree {done.tree_peak_mb:.0f} MB, {done.tree_processes} processes)"
        )
        return figures
