"""Scoring over HTTP, one request per product: the same ensemble version behind ``mlflow models serve``
(started, waited for and stopped by the serving benchmark's harness, ``bench.serving.loadtest``, on
``infra.local.processes``), a sample of products sent by ``clients`` threads, each product's photo
in its request as base64."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.serving import loadtest
from bench.serving.common import log, payload


def one_per_product(
    tracking_uri: str,
    version: str,
    products: pd.DataFrame,
    clients: Sequence[int],
    logdir: Path,
    max_s: float,
) -> dict[int, dict[str, float]]:
    """clients -> {products, seconds, products_s} for each client count, on one server."""
    bodies = [payload(products.iloc[[i]]) for i in range(len(products))]
    specs = {"ensemble": (f"models:/mmpc-ensemble/{version}", {})}
    t0 = time.perf_counter()
    out: dict[int, dict[str, float]] = {}
    with loadtest.served(specs, tracking_uri, logdir) as servers:
        log(f"mlflow models serve ready in {time.perf_counter() - t0:.0f} s")
        client = loadtest.ensemble_client(servers["ensemble"].url or "")
        for n in clients:
            done, seconds = loadtest.http_throughput(client, bodies, 1, n, max_s)
            out[n] = {"products": done, "seconds": seconds, "products_s": done / seconds if seconds else 0.0}
            log(f"HTTP, one product per request, {n} client(s): {out[n]['products_s']:.1f} products/s")
    return out
