"""The serving benchmark's command line (``bench/serve.py``)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.serving import inprocess, loadtest, paper, profiling, report, store
from bench.serving.common import log, stdout_to_stderr


def parse_args(argv: Sequence[str] | None = None, description: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", type=Path, help="reuse this store (e.g. demo/), or build into it when empty")
    p.add_argument("--catalog", type=Path, help="catalog for the requests (default: <workdir>/catalog)")
    p.add_argument(
        "--recipe",
        default="demo+fast",
        help="recipe the models are built with; its splits pick the test rows (e.g. demo+fast+my.yaml)",
    )
    p.add_argument(
        "--alias", default="champion", help="ensemble alias to benchmark (falls back to candidate)"
    )
    p.add_argument("--size", type=int, default=1200, help="demo catalog size when building")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch", type=int, default=64, help="products per in-process call")
    p.add_argument("--batches", type=int, default=16, help="in-process timed batches (at most)")
    p.add_argument("--max-s", type=float, default=30, help="time cap of each timed loop, seconds")
    p.add_argument("--profile-rounds", type=int, default=60, help="single-product requests per profile")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--no-naive-http", action="store_true", help="HTTP for the ensemble only")
    p.add_argument(
        "--no-thread-variant", action="store_true", help="skip the ensemble server with MMPC_TORCH_THREADS=1"
    )
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="HTTP measurements alternate in this many rounds")
    p.add_argument("--http-batch", type=int, default=16)
    p.add_argument("--http-requests", type=int, default=120, help="batched requests per throughput run")
    p.add_argument("--single", type=int, default=300, help="sequential single-product requests (ensemble)")
    p.add_argument("--naive-single", type=int, default=100, help="sequential single-product requests (naive)")
    p.add_argument("--paper-size", action="store_true", help="also time paper-size models (in process)")
    p.add_argument("--paper-recipe", default=paper.RECIPE, help="the recipe whose models --paper-size builds")
    p.add_argument("--paper-batch", type=int, default=8)
    p.add_argument("--paper-batches", type=int, default=6)
    p.add_argument("--paper-max-s", type=float, default=120)
    p.add_argument("--paper-vocab", type=int, default=30000, help="WordPiece vocabulary trained on the text")
    p.add_argument(
        "--paper-threads", type=int, default=1, help="torch intra-op threads for the paper-size run"
    )
    return p.parse_args(argv)


def load_settings(args: argparse.Namespace) -> loadtest.LoadSettings:
    return loadtest.LoadSettings(
        clients=args.clients,
        rounds=args.rounds,
        http_batch=args.http_batch,
        http_requests=args.http_requests,
        single=args.single,
        naive_single=args.naive_single,
        max_s=args.max_s,
        naive=not args.no_naive_http,
        thread_variant=not args.no_thread_variant,
    )


def paper_settings(args: argparse.Namespace) -> paper.PaperSettings:
    return paper.PaperSettings(
        args.paper_recipe,
        args.paper_batch,
        args.paper_batches,
        args.paper_max_s,
        args.paper_vocab,
        args.paper_threads,
    )


def measure(args: argparse.Namespace, scratch: Path) -> report.Results:
    """Every measurement the arguments ask for, in one scratch folder."""
    s, built = store.prepare_store(
        args.workdir or scratch / "work", args.catalog, args.recipe, args.size, args.seed, args.alias, scratch
    )
    n_rows = max(args.batch * (args.batches + 1), args.http_batch * args.http_requests, 64)
    frame = store.request_rows(s.catalog, args.recipe, n_rows)

    log(f"in process: ensemble pyfunc vs {len(s.members)} level-1 pyfuncs + booster")
    inproc, ens_model, naive = inprocess.bench_inprocess(s, frame, args.batch, args.batches, args.max_s)
    singles = [frame.iloc[[i]].reset_index(drop=True) for i in range(16)]
    stages = profiling.stage_breakdown(ens_model, singles, rounds=2 * args.profile_rounds)
    stages |= profiling.serving_breakdown(ens_model, singles, rounds=args.profile_rounds)
    profile = profiling.cprofile_top(ens_model, singles, rounds=args.profile_rounds)

    http: dict[str, dict] = {}
    if not args.no_http:
        log("over HTTP: mlflow models serve")
        http = loadtest.bench_http(s, frame, naive, load_settings(args), scratch)

    paper_figures: dict = {}
    if args.paper_size:
        log(f"paper-size architectures ({args.paper_recipe}), random weights, in process")
        del ens_model, naive
        texts = pd.concat([frame["designation"], frame["description"].fillna("")]).tolist()
        paper_figures = paper.paper_size(frame, texts, s.codes, scratch / "paper", paper_settings(args))
    labels = {k: getattr(args, k) for k in ("batch", "clients", "http_batch", "paper_batch")}
    return report.Results(inproc, http, paper_figures, stages, profile, built, labels=labels)


def main(argv: Sequence[str] | None = None, description: str = "") -> int:
    args = parse_args(argv, description)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-serve-") as tmp, stdout_to_stderr():
        results = measure(args, Path(tmp))
    results.total = time.perf_counter() - started
    results.load = (load_start, os.getloadavg()[0])
    report.report(results)
    return 0
