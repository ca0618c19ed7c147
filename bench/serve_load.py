"""Sustained load on the proxied scoring endpoint: nginx (TLS, bearer token) in front of
``mlflow models serve`` of ``mmpc-ensemble@champion``, as a team deploys it (``python -m infra.serving``).

Two phases of ``--minutes`` each, ``--clients`` threads sending a mix of requests, each judged against
what it must get back:

- valid predictions (1-4 real test-split rows, every other one with its photo) -> 200;
- a row without ``designation`` -> 400, a body that is not JSON -> 400, no token -> 401, a wrong
  token -> 401.

Phase ``steady``: the champion stays. Phase ``swap``: a quarter into the phase ``@champion`` moves to a
new version (registered from the champion's own artifacts) and the controller rolls it out; any failed
request during the swap is an error, and the version header shows the change. Phase ``hostile``: the
same mix plus the abuse of ``bench/serving/hostile.py`` (cheap images that are costly to resize,
Parquet and CSV bodies, invalid UTF-8, JSON nested 100,000 deep, a ``dataframe_split`` whose index and
data disagree, too many rows, no ``Content-Type``), each judged against its bounded answer, while
``--idle`` connections that never send a byte are held open (and reopened as the endpoint closes
them). Per phase: requests/s, errors (any answer but the expected one, or a broken connection),
p50/p99 of the valid requests, and the resident memory of the model server(s) at start, middle and
end; for ``hostile`` also how many idle connections the endpoint closed and after how long.

The models: ``--workdir`` with a store (``demo/`` after ``make demo``), else one is built there (demo
catalog, ``retrain`` flow with ``demo+fast``). The swap never touches that store: the load runs on a
copy of its ``mlflow.db`` (artifact paths in it are absolute, so the copy reads the same artifacts).

    .venv/bin/python bench/serve_load.py --workdir /tmp/mmpc-load --clients 8 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scoring.memory import MB, tree_rss
from bench.serving import hostile, sustained
from bench.serving.common import log, payload, stdout_to_stderr
from bench.serving.store import build_store, request_rows

MODEL = "mmpc-ensemble"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mmpc-serve-load")
    p.add_argument("--catalog", type=Path, help="where the request rows come from (default: WORKDIR/catalog)")
    p.add_argument("--recipe", default="demo+fast", help="recipe of the build and of the request rows")
    p.add_argument("--size", type=int, default=1000, help="demo catalog size when building")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--minutes", type=float, default=2.0, help="each phase's length")
    p.add_argument(
        "--phases", default="steady,swap,hostile", help="comma-separated, in order: steady, swap, hostile"
    )
    p.add_argument("--idle", type=int, default=200, help="idle connections held during the hostile phase")
    return p.parse_args(argv)


def _store(workdir: Path, recipe: str, size: int) -> Path:
    """The store's catalog, building models first when ``workdir`` holds none."""
    if not (workdir / "mlflow.db").is_file():
        log(f"building the models into {workdir} ({recipe}, {size} products)")
        with stdout_to_stderr():
            return build_store(workdir, recipe, size, seed=0)
    return workdir / "catalog"


def _cases(catalog: Path, recipe: str) -> list[sustained.Case]:
    rows = request_rows(catalog, recipe, 64)
    valid = [
        sustained.Case(f"valid-{n}", payload(rows.iloc[i : i + n]), 200, weight=0.2)
        for n, i in ((1, 0), (1, 1), (2, 8), (4, 16))
    ]
    no_title = payload(rows.iloc[:2].drop(columns=["designation"]))
    return [
        *valid,
        sustained.Case("no-designation", no_title, 400, weight=0.05),
        sustained.Case("not-json", b'{"dataframe_split": [', 400, weight=0.05),
        sustained.Case("no-token", valid[0].body, 401, weight=0.05, headers={"Authorization": None}),
        sustained.Case(
            "wrong-token", valid[0].body, 401, weight=0.05, headers={"Authorization": "Bearer " + "x" * 43}
        ),
    ]


class Stack:
    """``python -m infra.serving`` on a copy of the store, with a fast poll so a swap starts at once."""

    def __init__(self, root: Path, store_uri: str) -> None:
        self.root, self.env = (
            root,
            {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "MLFLOW_REGISTRY_URI": store_uri},
        )
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            self.env.pop(key, None)

    def command(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "infra.serving", "--root", str(self.root), *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr[-2000:]}")

    @property
    def port(self) -> int:
        return int(json.loads((self.root / "stack.json").read_text())["port"])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/invocations"

    def serving(self) -> dict:
        return json.loads((self.root / "status.json").read_text()).get("serving") or {}

    def memory_mb(self) -> float:
        pid = self.serving().get("pid")
        return round(tree_rss(pid)[0] / MB, 1) if pid else float("nan")


def _swap(store_uri: str) -> str:
    """A new version of the champion's artifacts, made champion; returns its number."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # the champion's source is a logged model (models:/m-...), resolved through the tracking store
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_registry_uri(store_uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    new = client.create_model_version(MODEL, champion.source, run_id=champion.run_id, tags=champion.tags)
    client.set_registered_model_alias(MODEL, "champion", new.version)
    return str(new.version)


def _phase(stack: Stack, cases: list, args: argparse.Namespace, name: str, swap_uri: str | None) -> dict:
    seconds, memory, swapped = args.minutes * 60, {"start": stack.memory_mb()}, {}
    idle = hostile.IdleHolder("127.0.0.1", stack.port, args.idle).start() if name == "hostile" else None

    def tick(elapsed: float) -> None:
        # the swap early in the phase: a new model server takes a while to start beside the load
        if swap_uri and not swapped and elapsed >= seconds / 4:
            swapped["version"] = _swap(swap_uri)
            log(f"@champion -> v{swapped['version']}")
        if "middle" not in memory and elapsed >= seconds / 2:
            memory["middle"] = stack.memory_mb()

    token = (stack.root / "secrets" / "token").read_text().strip()
    out = sustained.run(
        stack.url, cases, clients=args.clients, seconds=seconds,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        verify=str(stack.root / "ca.pem"), on_tick=tick,
    )  # fmt: skip
    memory["end"] = stack.memory_mb()
    extra = {"swapped_to": swapped.get("version")} if swap_uri else {}
    if idle:
        extra["idle"] = idle.stop()
    log(f"phase {name}: {json.dumps(out.summary())} memory {memory} {extra}")
    return {**out.summary(), "memory_mb": memory, **extra}


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    workdir = args.workdir.resolve()
    catalog = _store(workdir, args.recipe, args.size) if not args.catalog else args.catalog.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="mmpc-serve-load-"))
    shutil.copy(workdir / "mlflow.db", scratch / "mlflow.db")
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    stack = Stack(scratch / "serving", uri)
    t0 = time.perf_counter()
    stack.command("up", "--poll", "1")
    log(f"serving stack up in {time.perf_counter() - t0:.0f} s: {stack.url}")
    try:
        cases = _cases(catalog, args.recipe)
        result: dict = {"clients": args.clients, "minutes": args.minutes}
        for name in args.phases.split(","):
            mix = cases + hostile.cases(request_rows(catalog, args.recipe, 8)) if name == "hostile" else cases
            result[name] = _phase(stack, mix, args, name, uri if name == "swap" else None)
    finally:
        stack.command("down")
        shutil.rmtree(scratch, ignore_errors=True)
    _report(result)
    return result


def _report(result: dict) -> None:
    for name in ("steady", "swap", "hostile"):
        r = result.get(name)
        if not r:
            continue
        mem = r["memory_mb"]
        print(
            f"{name:>6}: {r['requests_s']} req/s, {r['requests']} requests, {r['errors']} errors "
            f"{r['error_kinds'] or ''}, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"versions {r['versions']}, "
            f"model server memory {mem.get('start')} / {mem.get('middle')} / {mem.get('end')} MB"
            + (f", idle connections {r['idle']}" if "idle" in r else "")
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
