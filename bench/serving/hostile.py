"""Hostile requests for the sustained load, each with the bounded answer serving must give, and a
holder of idle connections that counts how soon the endpoint closes them.

The requests are the abuse cases of ``docs/robustness.md`` that cost the server something: cheap
images that would be expensive to resize, bodies MLflow would decode before mmpc's limits run
(Parquet, CSV, invalid UTF-8), JSON nested deep, a ``dataframe_split`` whose index and data
disagree, more rows than the limit, a body without ``Content-Type``. Sent beside valid requests, they
must each get their 4xx (or 200 with ``image_status: invalid``) while the valid ones keep their
latency.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from bench.serving.common import payload
from bench.serving.sustained import Case


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _all_invalid(resp) -> str | None:
    statuses = {row.get("image_status") for row in resp.json().get("predictions", [])}
    return None if statuses == {"invalid"} else f"image_status {sorted(map(str, statuses))}"


def _parquet(rows: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    rows.to_parquet(buf, compression="zstd")
    return buf.getvalue()


WEIGHT = 0.02  # each hostile kind's share of the mix (the valid requests keep most of it)


def _bad(name: str, body: bytes, expect: int, **kw) -> Case:
    return Case(name, body, expect, weight=WEIGHT, hostile=True, **kw)


def cases(rows: pd.DataFrame, max_rows: int = 2_000) -> list[Case]:
    """The hostile mix; ``rows`` are valid request rows (designation, description, image)."""
    titles = rows[["designation"]].head(1)
    huge = pd.DataFrame({"designation": ["a" * 20_000_000]})  # a few KB of Parquet, 20 MB decoded
    thin = pd.DataFrame({"designation": ["thin"] * 500, "image": [_png(512, 1)] * 500})
    deep = b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    split = {"columns": ["designation"], "index": [0, 1, 2], "data": [["one row"]]}
    too_many = pd.DataFrame({"designation": ["t"] * (max_rows + 1)})
    bad_utf8 = b'{"dataframe_records": [{"designation": "' + b"\xff\xfe" * 500_000 + b'"}]}'
    no_type = payload(titles)
    mismatch = json.dumps({"dataframe_split": split}).encode()
    return [
        _bad("thin-images", payload(thin), 200, check=_all_invalid),
        _bad("parquet", _parquet(huge), 415, headers={"Content-Type": "application/x-parquet"}),
        _bad("csv", b"designation\nlamp\n", 415, headers={"Content-Type": "text/csv"}),
        _bad("invalid-utf8", bad_utf8, 400),
        _bad("deep-json", deep, 400),
        _bad("split-mismatch", mismatch, 400),
        _bad("too-many-rows", payload(too_many), 400),
        _bad("no-content-type", no_type, 415, headers={"Content-Type": None}),
    ]


@dataclass
class IdleHolder:
    """``count`` connections that never send a byte, reopened as the endpoint closes them; how many
    it closed, and after how long, says whether idle connections are bounded."""

    host: str
    port: int
    count: int = 200
    closed: int = 0
    held_s: list[float] = field(default_factory=list)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _open(self) -> tuple[socket.socket, float] | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
        except OSError:
            self.refused += 1
            return None
        sock.setblocking(False)
        return sock, time.monotonic()

    def _watch(self) -> None:
        open_ = [c for c in (self._open() for _ in range(self.count)) if c]
        while not self._stop.wait(0.5):
            still = []
            for sock, since in open_:
                if _is_closed(sock):
                    self.closed += 1
                    self.held_s.append(time.monotonic() - since)
                    sock.close()
                    if (again := self._open()) is not None:
                        still.append(again)
                else:
                    still.append((sock, since))
            open_ = still
        for sock, _ in open_:
            sock.close()

    def start(self) -> IdleHolder:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        time.sleep(0.6)
        held = sorted(self.held_s)
        return {
            "idle_connections": self.count,
            "closed_by_server": self.closed,
            "held_s_median": round(held[len(held) // 2], 1) if held else None,
            "refused": self.refused,
        }


def _is_closed(sock: socket.socket) -> bool:
    """Whether the peer closed (or reset) the connection; an idle one reads nothing."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
