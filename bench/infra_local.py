"""Times of the local server topology (infra/local): a first ``up`` on an empty root (initdb, database
migrations), a second ``up`` (nothing to do), ``down``, a restart on the existing data, and ``down``.

    python bench/infra_local.py [--rounds 2]

Prints each step with every service's time to healthy, then one JSON line with all figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.local import Topology


def one_round() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="mmpc-infra-bench-"))
    topo = Topology(root)
    figures: dict[str, float] = {}
    try:
        for step in ("first_up", "second_up", "down", "restart_up", "final_down"):
            t0 = time.monotonic()
            if step.endswith("up"):
                report = topo.up()
                for s in report.services:
                    if s.started:
                        figures[f"{step}.{s.name}"] = round(s.seconds, 2)
            else:
                topo.down()
            figures[step] = round(time.monotonic() - t0, 2)
            print(f"{step:<11} {figures[step]:6.1f} s", flush=True)
    finally:
        topo.down()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    keys = sorted(set().union(*rounds))
    summary = {k: statistics.median(r[k] for r in rounds if k in r) for k in keys}
    for key in keys:
        print(f"{key:<28} median {summary[key]:6.2f} s  ({', '.join(str(r.get(key)) for r in rounds)})")
    print(json.dumps({"rounds": args.rounds, "median_seconds": summary}))


if __name__ == "__main__":
    main()
