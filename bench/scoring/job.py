"""One scoring job in a process of its own, so that its memory is its alone:
``python -m bench.scoring.job '<JSON spec>'`` runs ``mmpc.scoring.score`` with the spec's arguments and
prints, as its last stdout line, one JSON object: rows, wall seconds of the call, the engine's own
seconds and products/s (the job's MLflow run metrics) and this process's peak RSS (``ru_maxrss``).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from typing import Any

MB_PER_KB = 1 / 1024  # ru_maxrss is in kilobytes on Linux


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from mmpc import scoring

    t0 = time.perf_counter()
    manifest = scoring.score(
        spec["location"],
        spec["output"],
        spec["workdir"],
        model=spec["model"],
        version=spec["version"],
        chunk_rows=spec.get("chunk_rows", scoring.CHUNK_ROWS),
        threads=spec.get("threads"),
        engine=spec.get("engine", "local"),
        spark_master=spec.get("spark_master", "local[2]"),
    )
    wall = time.perf_counter() - t0
    metrics = MlflowClient().get_run(manifest["run_id"]).data.metrics
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MB_PER_KB
    return {
        "rows": manifest["rows"],
        "version": manifest["version"],
        "wall_s": wall,
        "engine_s": metrics.get("seconds"),
        "engine_products_s": metrics.get("products_per_second"),
        "maxrss_mb": own,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run(json.loads(argv[0]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
