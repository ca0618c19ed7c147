"""Over HTTP: ``mlflow models serve`` for the ensemble and for each level-1 model (started, waited
for and stopped through ``infra.local.processes``), clients sending batches concurrently, then
single-product latency. The naive side calls one server per level-1 model and runs the booster itself."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.serving.common import batches, log, payload
from bench.serving.inprocess import Naive
from bench.serving.store import Store
from infra.local import processes

Client = Callable[[Any, bytes], Any]  # (requests.Session, JSON body) -> response payload
BIN = Path(sys.executable).parent


def model_server(
    name: str, model_uri: str, tracking_uri: str, logdir: Path, extra_env: dict
) -> processes.Process:
    """``mlflow models serve`` of one registered model on a free port, started, not yet waited for."""
    env = {**os.environ, **extra_env, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = str(BIN) + os.pathsep + os.environ["PATH"]  # uvicorn from this environment
    argv = processes.mlflow_serve_argv(model_uri)
    return processes.serve_http(
        argv, what=f"mlflow models serve ({name})", env=env, log_file=logdir / f"serve-{name}.log",
        health_path="/ping", wait=False,
    )  # fmt: skip


@contextlib.contextmanager
def served(
    specs: dict[str, tuple[str, dict]], tracking_uri: str, logdir: Path, timeout: float = 180
) -> Iterator[dict[str, processes.Process]]:
    """A server for each name -> (model URI, extra environment), started together, all answering
    /ping; every one stopped (its process group) on exit."""
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(model_server(name, uri, tracking_uri, logdir, extra))
            for name, (uri, extra) in specs.items()
        }
        for server in servers.values():
            server.wait_ready(timeout=timeout)
        yield servers


def post(session: Any, url: str, body: bytes) -> dict:
    resp = session.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def ensemble_client(url: str) -> Client:
    return lambda session, body: post(session, url, body)


def probabilities(answer: dict, codes: Sequence[int]) -> np.ndarray:
    """A level-1 server's answer (records or columns) as [n, C] in code order; null/NaN stay NaN."""
    preds = answer["predictions"]
    if isinstance(preds, dict):
        return np.array([preds[str(c)] for c in codes], dtype=float).T
    return np.array([[row.get(str(c)) for c in codes] for row in preds], dtype=float)


def naive_client(urls: dict[str, str], members: list[str], codes: list[int], booster: Any) -> Client:
    """The level-1 servers called in turn, then the booster in the client."""
    from mmpc import stacking

    def call(session: Any, body: bytes) -> np.ndarray:
        probs = {n: probabilities(post(session, urls[n], body), codes) for n in members}
        return booster.predict(stacking.features(probs, members, codes))

    return call


def http_throughput(
    client: Client, bodies: Sequence[bytes], per_body: int, clients: int, max_s: float
) -> tuple[int, float]:
    """(products answered, seconds) with ``clients`` threads sharing the bodies (each sent once)."""
    import requests

    todo = iter(range(len(bodies)))
    lock = threading.Lock()
    done = [0]
    errors: list[BaseException] = []
    deadline = time.monotonic() + max_s

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    client(session, bodies[i])
                except Exception as exc:  # reported after the threads end
                    errors.append(exc)
                    return
                with lock:
                    done[0] += per_body

    with requests.Session() as session:
        client(session, bodies[0])  # warm-up
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_s + 120)
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return done[0], elapsed


def latencies(client: Client, bodies: Sequence[bytes], n: int, warmup: int, max_s: float) -> np.ndarray:
    """Seconds per sequential single-product request, cycling through ``bodies``."""
    import requests

    out = []
    with requests.Session() as session:
        for i in range(warmup):
            client(session, bodies[i % len(bodies)])
        deadline = time.monotonic() + max_s
        for i in range(n):
            t0 = time.perf_counter()
            client(session, bodies[i % len(bodies)])
            out.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    return np.asarray(out)


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000) if len(values) else float("nan")


@dataclass
class LoadSettings:
    """The HTTP measurement's size: ``clients`` threads sending batches of ``http_batch`` products
    (``http_requests`` bodies in all), then sequential single-product requests, in ``rounds``."""

    clients: int = 4
    rounds: int = 3
    http_batch: int = 16
    http_requests: int = 120
    single: int = 300  # single-product requests to the ensemble, over all rounds
    naive_single: int = 100
    max_s: float = 30.0  # each timed loop's cap
    naive: bool = True  # the naive servers too
    thread_variant: bool = True  # an ensemble server with MMPC_TORCH_THREADS=1 too


@dataclass
class HttpTarget:
    client: Client
    servers: list[processes.Process]  # whose CPU time is counted
    n_single: int  # sequential single-product requests, over all rounds
    products: int = 0
    seconds: float = 0.0
    cpu_s: float | None = 0.0
    lat: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | None]:
        lat = np.asarray(self.lat)
        return {
            "products_s": self.products / self.seconds if self.seconds else None,
            "cpu_ms_per_product": None if self.cpu_s is None else self.cpu_s * 1000 / max(self.products, 1),
            "p50": pct(lat, 50),
            "p90": pct(lat, 90),
            "p99": pct(lat, 99),
            "n_single": float(len(lat)),
        }


def measure_round(target: HttpTarget, big: list[bytes], single: list[bytes], s: LoadSettings) -> None:
    """One round: throughput with concurrent clients (CPU of servers + this client), then latency."""
    pgids = [p.pid for p in target.servers]
    cpu0, own0 = processes.group_cpu_seconds(pgids), time.process_time()
    products, seconds = http_throughput(target.client, big, s.http_batch, s.clients, s.max_s / s.rounds)
    cpu1, own1 = processes.group_cpu_seconds(pgids), time.process_time()
    target.products += products
    target.seconds += seconds
    if cpu0 is None or cpu1 is None or target.cpu_s is None:
        target.cpu_s = None
    else:
        target.cpu_s += cpu1 - cpu0 + own1 - own0
    n = max(1, target.n_single // s.rounds)
    target.lat += latencies(
        target.client, single, n, warmup=max(3, n // 15), max_s=s.max_s / s.rounds
    ).tolist()


def server_specs(store: Store, s: LoadSettings) -> dict[str, tuple[str, dict]]:
    ens_uri = f"models:/mmpc-ensemble/{store.ensemble_version}"
    specs: dict[str, tuple[str, dict]] = {"ensemble": (ens_uri, {})}
    if s.thread_variant:
        specs["ensemble-t1"] = (ens_uri, {"MMPC_TORCH_THREADS": "1"})
    if s.naive:
        specs |= {n: (f"models:/mmpc-{n}/{store.versions[n]}", {}) for n in store.members}
    return specs


def targets(store: Store, servers: dict[str, processes.Process], naive: Naive, s: LoadSettings) -> dict:
    out = {
        name: HttpTarget(ensemble_client(servers[name].url or ""), [servers[name]], s.single)
        for name in ("ensemble", "ensemble-t1")
        if name in servers
    }
    if s.naive:
        urls = {n: servers[n].url or "" for n in store.members}
        client = naive_client(urls, store.members, store.codes, naive.booster)
        out["naive"] = HttpTarget(client, [servers[n] for n in store.members], s.naive_single)
    return out


def bench_http(
    store: Store, frame: pd.DataFrame, naive: Naive, s: LoadSettings, logdir: Path
) -> dict[str, dict]:
    """The ensemble server (default torch threads, and MMPC_TORCH_THREADS=1) and the naive servers,
    measured in alternating rounds so that a background load shift hits them alike."""
    big = [payload(b) for b in batches(frame, s.http_batch)][: s.http_requests]
    single = [payload(frame.iloc[[i]]) for i in range(min(len(frame), 64))]
    t0 = time.perf_counter()
    with served(server_specs(store, s), store.uri, logdir) as servers:
        log(f"{len(servers)} server(s) ready in {time.perf_counter() - t0:.0f} s")
        measured = targets(store, servers, naive, s)
        for r in range(s.rounds):
            for target in measured.values():
                measure_round(target, big[r :: s.rounds], single, s)
        out = {name: t.summary() for name, t in measured.items()}
    for name, figures_ in out.items():
        log(f"HTTP {name}: {figures_}")
    return out
