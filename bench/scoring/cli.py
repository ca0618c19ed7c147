"""The scoring benchmark's command line (``bench/score.py``)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scoring import compare, inputs, report, served
from bench.scoring.runs import Runner
from bench.serving import store as stores
from bench.serving.common import log, stdout_to_stderr

DEFAULTS = {"sizes": "10000,100000", "tfidf_sizes": "100000,1000000", "http_sample": 1000}
TINY = {"sizes": "300", "tfidf_sizes": "2000,4000", "http_sample": 50}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None, description: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--workdir", type=Path, help="reuse this store and the inputs written there, or build into it"
    )
    p.add_argument("--sizes", help=f"catalogs with photos, local and Spark (default {DEFAULTS['sizes']})")
    p.add_argument(
        "--tfidf-sizes", help=f"CSVs without photos, TF-IDF alone (default {DEFAULTS['tfidf_sizes']})"
    )
    p.add_argument(
        "--http-sample", type=int, help=f"products sent over HTTP (default {DEFAULTS['http_sample']})"
    )
    p.add_argument("--http-clients", default="1,4", help="concurrent HTTP clients, each count measured")
    p.add_argument("--http-max-s", type=float, default=300, help="time cap of each HTTP measurement")
    p.add_argument("--tiny", action="store_true", help=f"smoke-test sizes: {TINY}")
    p.add_argument("--no-spark", action="store_true")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--chunk-rows", type=int, help="rows per part / per model call (default: mmpc score's)")
    p.add_argument("--image-size", type=int, default=64, help="photo side of the generated catalogs, pixels")
    p.add_argument("--recipe", default="demo+fast", help="recipe the store is built with when it holds none")
    p.add_argument("--store-size", type=int, default=1200, help="demo catalog the store is trained on")
    p.add_argument("--seed", type=int, default=11, help="seed of the scored catalogs")
    args = p.parse_args(argv)
    for key, value in (TINY if args.tiny else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sizes, args.tfidf_sizes = _ints(args.sizes), _ints(args.tfidf_sizes)
    args.http_clients = _ints(args.http_clients)
    return args


def engines(runner: Runner, version: str, catalog: Path, size: int, spark: bool) -> dict[str, Any]:
    """The local engine, then Spark, on one catalog; their outputs compared, then removed."""
    out: dict[str, Any] = {"local": runner.score(f"local-{size}", catalog, "ensemble", version, "local")}
    if spark:
        out["spark"] = runner.score(f"spark-{size}", catalog, "ensemble", version, "spark")
        out["compare"] = compare.same_scores(Path(out["local"]["out"]), Path(out["spark"]["out"]))
        log(f"Spark against local on {size:,}: {out['compare']}")
    for figures in (v for k, v in out.items() if k != "compare"):
        shutil.rmtree(figures.pop("out"), ignore_errors=True)
    return out


def tfidf(runner: Runner, data: Path, texts_from: Path, sizes: list[int]) -> dict[int, dict[str, Any]]:
    """TF-IDF alone (``@candidate``) on CSVs of products without photos, one size after another."""
    out = {}
    for size in sizes:
        csv = inputs.text_csv(data, size, texts_from)
        out[size] = runner.score(f"tfidf-{size}", csv, "tfidf", "@candidate", "local")
        shutil.rmtree(out[size].pop("out"), ignore_errors=True)
    return out


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    work = (args.workdir or scratch / "work").resolve()
    store, built = stores.prepare_store(work, None, args.recipe, args.store_size, 7, "champion", scratch)
    runner = Runner(store.uri, work, scratch, args.spark_master, args.chunk_rows)
    data = work / "bench-data"
    catalogs = {n: inputs.demo_catalog(data, n, args.seed, args.image_size) for n in args.sizes}
    results: dict[str, Any] = {"build_s": built, "ensemble_version": store.ensemble_version}
    results["inputs"] = {n: inputs.disk_mb(c) for n, c in catalogs.items()}
    results["engines"] = {
        n: engines(runner, store.ensemble_version, c, n, not args.no_spark) for n, c in catalogs.items()
    }
    if not args.no_http:
        sample = inputs.http_requests(catalogs[max(catalogs)], args.http_sample)
        results["http"] = served.one_per_product(
            store.uri, store.ensemble_version, sample, args.http_clients, scratch / "logs", args.http_max_s
        )
    results["tfidf"] = tfidf(runner, data, catalogs[min(catalogs)], args.tfidf_sizes)
    return results


def main(argv: Sequence[str] | None = None, description: str = "") -> int:
    args = parse_args(argv, description)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-score-") as tmp, stdout_to_stderr():
        results = measure(args, Path(tmp))
    results["total_s"] = time.perf_counter() - started
    results["load"] = [load_start, os.getloadavg()[0]]
    report.report(args, results)
    return 0
