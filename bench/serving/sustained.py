"""Sustained load on one endpoint: ``clients`` threads for ``seconds``, each request drawn from a mix of
valid predictions and bad requests, each judged against what it must get back (200 for a valid one,
the named 4xx for a bad one). Anything else (a 5xx, a wrong 4xx, a refused or reset connection, a
timeout) is an error. The answering model version is read from the response header, so a champion
swap during the run shows up as a change of version, and any failed request during it as an error."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERSION_HEADER = "X-Mmpc-Model-Version"


@dataclass(frozen=True)
class Case:
    """One kind of request: its body and headers, the status it must get, and its share of the mix."""

    name: str
    body: bytes
    expect: int
    weight: float = 1.0
    headers: dict[str, str | None] = field(default_factory=dict)  # None: leave that header out
    check: Callable[[Any], str | None] | None = None  # on the expected status: what is wrong, or None
    hostile: bool = False  # abuse: judged, but not counted in the valid requests' latencies


@dataclass
class Outcome:
    """What the clients saw, merged over threads."""

    sent: int = 0
    errors: Counter = field(default_factory=Counter)  # "<case>: <what went wrong>" -> count
    by_case: Counter = field(default_factory=Counter)
    versions: list[tuple[float, str]] = field(
        default_factory=list
    )  # (seconds since start, version) at each change
    latencies: list[float] = field(default_factory=list)  # seconds, valid (not hostile) requests only
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latencies)
        pct = (lambda q: round(float(np.percentile(lat, q) * 1000), 1)) if len(lat) else (lambda q: None)
        return {
            "requests": self.sent,
            "requests_s": round(self.sent / self.seconds, 1) if self.seconds else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "by_case": dict(self.by_case),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "versions": [v for _, v in self.versions],
            "version_changes_at_s": [round(t, 1) for t, _ in self.versions[1:]],
        }


def _send(session, url: str, case: Case, headers: dict[str, str], verify, timeout: float):
    return session.post(
        url, data=case.body, headers={**headers, **case.headers}, verify=verify, timeout=timeout
    )


def _judge(case: Case, resp, status: int | None, problem: str = "") -> str | None:
    """What is wrong with the answer, or None when it is the one the case must get."""
    if status != case.expect:
        return problem if status is None else f"HTTP {status}"
    if case.check is None:
        return None
    try:
        return case.check(resp)
    except ValueError as exc:  # not the JSON the check reads
        return f"unreadable answer: {exc}"


def run(
    url: str,
    cases: list[Case],
    *,
    clients: int,
    seconds: float,
    headers: dict[str, str],
    verify: str | bool = True,
    timeout: float = 60.0,
    seed: int = 0,
    on_tick: Callable[[float], None] | None = None,
) -> Outcome:
    """``clients`` threads posting to ``url`` for ``seconds``; ``on_tick(elapsed)`` is called about
    once a second from the calling thread (memory samples, a champion swap at the middle)."""
    import requests

    out, lock = Outcome(), threading.Lock()
    weights = [c.weight for c in cases]
    t0 = time.monotonic()
    deadline = t0 + seconds

    def client(i: int) -> None:
        rng = random.Random(seed + i)
        with requests.Session() as session:
            while time.monotonic() < deadline:
                case = rng.choices(cases, weights)[0]
                start, problem = time.perf_counter(), ""
                try:
                    resp = _send(session, url, case, headers, verify, timeout)
                    status, version = resp.status_code, resp.headers.get(VERSION_HEADER)
                except requests.RequestException as exc:
                    resp, status, version = None, None, None
                    problem = type(exc).__name__
                took = time.perf_counter() - start
                wrong = _judge(case, resp, status, problem)
                with lock:
                    out.sent += 1
                    out.by_case[case.name] += 1
                    if wrong:
                        out.errors[f"{case.name}: {wrong}"] += 1
                    elif case.expect == 200 and not case.hostile:
                        out.latencies.append(took)
                    if version and (not out.versions or out.versions[-1][1] != version):
                        out.versions.append((time.monotonic() - t0, version))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if on_tick:
            on_tick(time.monotonic() - t0)
    for t in threads:
        t.join(timeout + 30)
    out.seconds = time.monotonic() - t0
    return out
