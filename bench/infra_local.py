"""Times of the local server topology (infra/local): a first ``up`` on an empty root (initdb, database
migrations), a second ``up`` (nothing to do), ``down``, a restart on the existing data, and ``down``.

    python bench/infra_local.py [--rounds 2]

Prints each step with every service's time to healthy, then one JSON line with all figures. After
each ``up`` the servers are checked to refuse a client without credentials and to serve the
``training`` account (MLflow's basic auth, Prefect's auth string).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.local import Topology


def check_auth(topo: Topology) -> None:
    """The servers refuse an anonymous client and answer the training account."""
    env = topo.client_env("training")
    login = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()

    def mlflow(auth: tuple[str, str] | None) -> int:
        url = f"{topo.mlflow_url}/api/2.0/mlflow/experiments/search"
        return requests.get(url, params={"max_results": 1}, auth=auth, timeout=30).status_code

    def prefect(headers: dict[str, str]) -> int:
        return requests.post(
            f"{topo.prefect_api_url}/flows/filter", json={}, headers=headers, timeout=30
        ).status_code

    codes = (mlflow(None), mlflow(login), prefect({}), prefect({"Authorization": f"Basic {token}"}))
    if codes != (401, 200, 401, 200):
        raise SystemExit(
            f"authentication not as expected (MLflow, MLflow as training, Prefect, Prefect with "
            f"the auth string): HTTP {codes}, expected (401, 200, 401, 200)"
        )


def one_round() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="mmpc-infra-bench-"))
    topo = Topology(root)
    figures: dict[str, float] = {}
    try:
        for step in ("first_up", "second_up", "down", "restart_up", "final_down"):
            t0 = time.monotonic()
            if step.endswith("up"):
                report = topo.up()
                check_auth(topo)
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
