"""Bad input and abuse over real HTTP to ``mlflow models serve`` on the published champion.

Each case gets a prediction (with ``image_status`` where an image is involved) or HTTP 400 naming the
field and the row; never a 500, never a hang; after each one the server is still up and answers the
next good request, and nothing was ever fetched from the URLs the cases name. Each case is a row of
docs/robustness.md.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from e2e import Server, check_predictions, serve
from PIL import Image
from robustness import case
from servers import TIMEOUT

from infra.local import processes
from mmpc.serving_input import Limits

pytestmark = pytest.mark.slow

LIMITS = Limits()
GOOD = {"dataframe_records": [{"designation": "Piscine tubulaire hors sol"}]}


@dataclass(frozen=True)
class Raw:
    """A body sent as it is, with only the headers given (none: no Content-Type at all)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Payload = dict | bytes | Raw
Check = Callable[[requests.Response, "Context"], None]


class Listener:
    """An HTTP server on 127.0.0.1 that records every request: the URL cases point at it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Context:
    """What the cases are built from: real catalog photos in every mode, paths, the listener."""

    def __init__(self, catalog: Path, outside: Path, listener: Listener, served: Server) -> None:
        self.root = catalog / "images"
        photo_path = sorted((self.root / "image_train").glob("*.jpg"))[0]
        self.photo_relative = str(photo_path.relative_to(self.root))
        self.jpeg = photo_path.read_bytes()
        self.b64 = base64.b64encode(self.jpeg).decode()
        self.photo = Image.open(io.BytesIO(self.jpeg)).convert("RGB")
        self.outside = outside
        self.listener = listener
        self.served = served

    def encoded(self, mode: str, fmt: str, **save) -> str:
        img = self.photo.convert(mode) if mode != "I;16" else self._sixteen_bit_gray()
        buf = io.BytesIO()
        img.save(buf, format=fmt, **save)
        return base64.b64encode(buf.getvalue()).decode()

    def _sixteen_bit_gray(self) -> Image.Image:
        return Image.fromarray(np.asarray(self.photo.convert("L"), dtype=np.uint16) * 257)

    def sixteen_bit_rgb_png(self) -> str:
        """A 16-bit-per-channel RGB PNG (Pillow writes none), the photo's pixels scaled to 16 bits."""
        pixels = np.asarray(self.photo, dtype=np.uint16) * 257
        rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
        w, h = self.photo.size
        return base64.b64encode(_png(struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0), rows)).decode()


def _png(ihdr: bytes, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def thin_png() -> str:
    """An 80-byte 512 x 1 PNG: the resize to the model's input would make it 131072 x 256 pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (512, 1), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def parquet_bomb() -> bytes:
    """A few hundred bytes of Parquet holding 1,000 rows of one 1 MB string (1 GB once decoded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.DictionaryArray.from_arrays(pa.array([0] * 1000, pa.int32()), pa.array(["x" * 1_000_000]))
    sink = io.BytesIO()
    pq.write_table(pa.table({"designation": column}), sink, compression="zstd")
    return sink.getvalue()


def bomb_png() -> str:
    """A 70-byte PNG whose header declares 30000 x 30000 RGB pixels (2.7 GB decoded)."""
    return base64.b64encode(_png(struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0), b"")).decode()


def records(*rows: dict, **params) -> dict:
    return {"dataframe_records": list(rows), **({"params": params} if params else {})}


def image(value: str) -> dict:
    return records({"designation": "Lot de livres anciens", "image": value})


# --- what is expected ------------------------------------------------------------------------------


def answered(rows: int, status: str | None = None) -> Check:
    def check(resp: requests.Response, ctx: Context) -> None:
        assert resp.status_code == 200, resp.text[:2000]
        predictions = resp.json()["predictions"]
        assert len(predictions) == rows
        check_predictions(predictions, k=3)
        if status is not None:
            assert {p["image_status"] for p in predictions} == {status}

    return check


def refused(*words: str, status: int = 400) -> Check:
    def check(resp: requests.Response, ctx: Context) -> None:
        assert resp.status_code == status, resp.text[:2000]
        message = resp.json()["message"]
        for word in words:
            assert word in message, (word, message[:2000])

    return check


def quick(check: Check, seconds: float) -> Check:
    """``check``, answered within ``seconds`` (the time to the answer's headers)."""

    def timed(resp: requests.Response, ctx: Context) -> None:
        check(resp, ctx)
        assert resp.elapsed.total_seconds() < seconds, resp.elapsed

    return timed


def short_answer(check: Check, limit: int = 5_000) -> Check:
    """``check``, the whole answer under ``limit`` bytes: nothing of the body echoed in bulk."""

    def bounded(resp: requests.Response, ctx: Context) -> None:
        check(resp, ctx)
        assert len(resp.content) < limit, len(resp.content)

    return bounded


def same_as_cut_text(resp: requests.Response, ctx: Context) -> None:
    """The 10 MB description is cut to max_text_chars: the answer is the cut text's answer."""
    answered(1)(resp, ctx)
    cut = ctx.served.invoke(records({"designation": "Lampe", "description": LONG[: LIMITS.max_text_chars]}))
    assert cut.json()["predictions"] == resp.json()["predictions"]


LONG = "Très belle lampe de chevet en laiton. " * 270_000  # 10.3 MB


def summary(resp: requests.Response) -> tuple[str, str]:
    """What a case did: the HTTP status, and the message or what was answered."""
    if resp.status_code == 200:
        predictions = resp.json()["predictions"]
        if not predictions:
            return "200", "no predictions"
        statuses = "/".join(sorted({p["image_status"] for p in predictions}))
        return "200", f"{len(predictions):,} prediction(s), image_status {statuses}"
    try:
        message = resp.json()["message"]
    except ValueError:
        message = resp.text
    if message.startswith(("Failed to predict", "Failed to enforce schema")):
        message = message.rsplit("Error: ", 1)[-1]  # MLflow quotes the input before the model's message
    return str(resp.status_code), message


S = "serving"
OK, INVALID = "200, `image_status: ok`", "200, `image_status: invalid`"
ROW_400 = "400 naming the field and the row"
CASES = [
    case(
        S,
        "missing `designation` column",
        "400 naming `designation`",
        lambda c: records({"description": "sans titre"}),
        refused("designation"),
    ),
    case(
        S,
        "null designation",
        ROW_400,
        lambda c: records({"designation": "Lampe"}, {"designation": None}),
        refused("row 1", "'designation'"),
    ),
    case(
        S,
        "empty designation",
        ROW_400,
        lambda c: records({"designation": "Lampe"}, {"designation": ""}),
        refused("row 1", "'designation'"),
    ),
    case(
        S,
        "designation of blanks, markup and invisible characters",
        ROW_400,
        lambda c: records({"designation": " <br/>&nbsp;\u200b\u202e\t"}),
        refused("row 0", "'designation'"),
    ),
    case(
        S,
        "number where text is expected",
        ROW_400,
        lambda c: records({"designation": "Lampe"}, {"designation": 12}),
        refused("row 1", "'designation'"),
    ),
    case(
        S,
        "list where text is expected",
        ROW_400,
        lambda c: records({"designation": "Lampe", "description": ["a", "b"]}),
        refused("row 0", "'description'"),
    ),
    case(
        S,
        "number as image",
        ROW_400,
        lambda c: records({"designation": "Lampe", "image": 3.5}),
        refused("row 0", "'image'"),
    ),
    case(
        S,
        "empty batch (`dataframe_split` with columns, no rows)",
        "200, no predictions",
        lambda c: {"dataframe_split": {"columns": ["designation"], "data": []}},
        answered(0),
    ),
    case(
        S,
        "empty batch (`dataframe_records: []`)",
        "400 naming `designation` (no column to read)",
        lambda c: {"dataframe_records": []},
        refused("designation"),
    ),
    case(
        S,
        "10 MB description",
        "200, the text cut to `max_text_chars`",
        lambda c: records({"designation": "Lampe", "description": LONG}),
        same_as_cut_text,
    ),
    case(
        S,
        "unicode, emoji and right-to-left text",
        "200",
        lambda c: records(
            {"designation": "Коврик 😀👍🏽 كتاب עברית 中文", "description": "\u202eRTL\u202c ñ ß"}
        ),
        answered(1),
    ),
    case(
        S,
        "control characters",
        "200",
        lambda c: records(
            {"designation": "Lampe\x00\x07\x1b[31m rouge\x7f\x9b", "description": "\x01\r\n\t"}
        ),
        answered(1),
    ),
    case(
        S,
        "lone UTF-16 surrogate in the JSON",
        "400 naming the field",
        lambda c: b'{"dataframe_records": [{"designation": "Lampe \\ud800"}]}',
        refused("dataframe_records"),
    ),
    case(
        S,
        "unknown extra columns",
        "200, the columns ignored",
        lambda c: records({"designation": "Lampe", "colour": "bleu", "price": 12.5, "tags": ["a"]}),
        answered(1),
    ),
    case(
        S,
        "1,000-row batch",
        "200, 1,000 predictions",
        lambda c: records(*[{"designation": f"Coussin velours {i}", "image": c.b64} for i in range(1000)]),
        answered(1000, "ok"),
    ),
    case(
        S,
        "more rows than `max_rows`",
        "400 naming the limit",
        lambda c: records(*[{"designation": "Coussin"}] * (LIMITS.max_rows + 1)),
        refused("MMPC_MAX_ROWS"),
    ),
    case(
        S,
        "request body far over the size limit (200 MB)",
        "413 naming the limit, before parsing",
        lambda c: (
            b'{"dataframe_records": [{"designation": "Lampe", "description": "' + b"a" * 200_000_000 + b'"}]}'
        ),
        refused("too large", "MMPC_MAX_REQUEST_MB", status=413),
    ),
    case(S, "invalid JSON", "400", lambda c: b'{"dataframe_records": [{"designation": ', refused("JSON")),
    case(
        S,
        "invalid JSON of 10 MB (MLflow's message quotes the input)",
        "400, the message cut to a few KB",
        lambda c: b'{"dataframe_records": [{"designation": "' + b"a" * 10_000_000,
        short_answer(refused("JSON", "more characters cut")),
    ),
    case(
        S,
        "60 MB JSON body that is not UTF-8",
        "400 naming the byte offset, nothing echoed",
        lambda c: b'{"dataframe_records": [{"designation": "' + b"\xff" * 60_000_000 + b'"}]}',
        short_answer(refused("not UTF-8", "offset 40")),
    ),
    case(
        S,
        "CSV body (`Content-Type: text/csv`)",
        "415 saying the model takes JSON",
        lambda c: Raw(b"designation\nLampe\n", {"Content-Type": "text/csv"}),
        refused("application/json", "dataframe_split", status=415),
    ),
    case(
        S,
        "Parquet body of a few hundred bytes that decodes to 1 GB",
        "415 saying the model takes JSON, nothing decoded",
        lambda c: Raw(parquet_bomb(), {"Content-Type": "application/vnd.apache.parquet"}),
        short_answer(refused("application/json", "dataframe_split", status=415)),
    ),
    case(
        S,
        "no `Content-Type` header",
        "415 naming `Content-Type`",
        lambda c: Raw(b'{"dataframe_records": [{"designation": "Lampe"}]}'),
        refused("Content-Type", status=415),
    ),
    case(
        S,
        "JSON nested 100,000 levels deep",
        "400 saying how deep",
        lambda c: b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        refused("nested deeper than"),
    ),
    case(
        S,
        "`dataframe_split` with 3 `index` entries for 1 row of `data`",
        "400 naming `index` and `data`",
        lambda c: {"dataframe_split": {"columns": ["designation"], "index": [0, 1, 2], "data": [["Lampe"]]}},
        refused("'index' has 3 entries", "'data' has 1 row"),
    ),
    case(
        S,
        "`top_k` of 0",
        "400 naming `top_k`",
        lambda c: records({"designation": "Lampe"}, top_k=0),
        refused("top_k"),
    ),
    case(S, "image: JPEG in base64", OK, lambda c: image(c.b64), answered(1, "ok")),
    case(
        S,
        "image: base64 in a `data:` URL",
        OK,
        lambda c: image("data:image/jpeg;base64," + c.b64),
        answered(1, "ok"),
    ),
    case(S, "image: not base64", INVALID, lambda c: image("pas une image !"), answered(1, "invalid")),
    case(
        S,
        "image: base64 of bytes that are not an image",
        INVALID,
        lambda c: image(base64.b64encode(b"%PDF-1.4 not an image").decode()),
        answered(1, "invalid"),
    ),
    case(
        S,
        "image: truncated JPEG",
        INVALID,
        lambda c: image(base64.b64encode(c.jpeg[: len(c.jpeg) // 2]).decode()),
        answered(1, "invalid"),
    ),
    case(
        S,
        "image: decompression bomb (a tiny PNG declaring 30000 x 30000)",
        INVALID,
        lambda c: image(bomb_png()),
        answered(1, "invalid"),
    ),
    case(
        S,
        "image: 80-byte 512 x 1 PNG (more elongated than `max_image_aspect_ratio`)",
        INVALID,
        lambda c: image(thin_png()),
        answered(1, "invalid"),
    ),
    case(
        S,
        "2,000 rows, each an 80-byte 512 x 1 PNG (a 300 KB request)",
        "200, `image_status: invalid`, in seconds (the resize is never done)",
        lambda c: records(*[{"designation": f"Lampe {i}", "image": thin_png()} for i in range(2000)]),
        quick(answered(2000, "invalid"), 10),
    ),
    case(
        S,
        "image: a format outside the accepted ones (EPS)",
        INVALID,
        lambda c: image(c.encoded("RGB", "EPS")),
        answered(1, "invalid"),
    ),
    case(S, "image: grayscale JPEG", OK, lambda c: image(c.encoded("L", "JPEG")), answered(1, "ok")),
    case(S, "image: CMYK JPEG", OK, lambda c: image(c.encoded("CMYK", "JPEG")), answered(1, "ok")),
    case(S, "image: palette PNG", OK, lambda c: image(c.encoded("P", "PNG")), answered(1, "ok")),
    case(S, "image: RGBA PNG", OK, lambda c: image(c.encoded("RGBA", "PNG")), answered(1, "ok")),
    case(S, "image: WebP", OK, lambda c: image(c.encoded("RGB", "WEBP")), answered(1, "ok")),
    case(S, "image: 16-bit grayscale PNG", OK, lambda c: image(c.encoded("I;16", "PNG")), answered(1, "ok")),
    case(S, "image: 16-bit RGB PNG", OK, lambda c: image(c.sixteen_bit_rgb_png()), answered(1, "ok")),
    case(S, "image: path under `MMPC_IMAGE_ROOT`", OK, lambda c: image(c.photo_relative), answered(1, "ok")),
    case(
        S,
        "image: path under the root to no file",
        INVALID,
        lambda c: image("image_train/no_such_photo.jpg"),
        answered(1, "invalid"),
    ),
    case(
        S,
        "image: path leading outside the root (`../`)",
        ROW_400,
        lambda c: image("../../work/outside.jpg"),
        refused("row 0", "outside the allowed image root"),
    ),
    case(
        S,
        "image: absolute path outside the root",
        ROW_400,
        lambda c: image("/etc/passwd"),
        refused("row 0", "outside the allowed image root"),
    ),
    case(
        S,
        "image: symbolic link under the root to a file outside",
        ROW_400,
        lambda c: image("image_train/link_outside.jpg"),
        refused("row 0", "outside the allowed image root"),
    ),
    case(
        S,
        "image: http URL",
        "400 naming the field and the row; nothing fetched",
        lambda c: image(f"{c.listener.url}/photo.jpg"),
        refused("row 0", "URL"),
    ),
    case(
        S,
        "image: https URL",
        "400 naming the field and the row; nothing fetched",
        lambda c: image(f"https://127.0.0.1:{c.listener.url.rsplit(':', 1)[1]}/photo.jpg"),
        refused("row 0", "URL"),
    ),
    case(
        S,
        "image: protocol-relative URL (`//host/...`)",
        "400 naming the field and the row; nothing fetched",
        lambda c: image(c.listener.url.removeprefix("http:") + "/photo.jpg"),
        refused("row 0", "URL"),
    ),
    case(
        S,
        "image: `file:` URL",
        "400 naming the field and the row",
        lambda c: image(f"file://{c.outside}"),
        refused("row 0", "URL"),
    ),
]


@pytest.fixture(scope="module")
def context(pipeline_run, served) -> Iterator[Context]:
    listener = Listener()
    # The listener answers a real fetch: a URL case that fetched would show in its hits.
    assert requests.get(f"{listener.url}/self-check", timeout=5).status_code == 200
    listener.hits.clear()
    outside = pipeline_run["workdir"] / "outside.jpg"
    root = pipeline_run["catalog"] / "images"
    ctx = Context(pipeline_run["catalog"], outside, listener, served)
    outside.write_bytes(ctx.jpeg)
    (root / "image_train" / "link_outside.jpg").symlink_to(outside)
    yield ctx
    (root / "image_train" / "link_outside.jpg").unlink()
    listener.server.shutdown()


@pytest.mark.parametrize(("make", "expect"), CASES)
def test_serving_case(served, context, make, expect, observed):
    payload = make(context)
    if isinstance(payload, Raw):
        url = f"{served.url}/invocations"
        resp = requests.post(url, data=payload.body, headers=payload.headers, timeout=TIMEOUT)
    else:
        resp = served.invoke(body=payload) if isinstance(payload, bytes) else served.invoke(payload)
    observed(*summary(resp))
    expect(resp, context)
    assert context.listener.hits == [], "the server fetched a URL"
    assert served.alive(), served.log.read_text()[-3000:]
    after = served.invoke(GOOD)
    assert after.status_code == 200, after.text[:2000]


@pytest.mark.robustness(
    S,
    "misconfigured limit (`MMPC_MAX_ROWS=2k`)",
    "the server refuses to start, naming the variable and the value",
)
def test_a_misconfigured_limit_refuses_to_start(pipeline_run, tmp_path, observed):
    env = {"MMPC_IMAGE_ROOT": str(pipeline_run["catalog"] / "images"), "MMPC_MAX_ROWS": "2k"}
    server = serve("models:/mmpc-ensemble@champion", pipeline_run["uri"], tmp_path, env)
    with pytest.raises(processes.ServiceError, match="exited during start-up"), server:
        pytest.fail("mlflow models serve started with MMPC_MAX_ROWS=2k")
    errors = [line for line in (tmp_path / "serve.log").read_text().splitlines() if "SettingError" in line]
    assert errors and "MMPC_MAX_ROWS='2k' is not a number" in errors[-1], errors
    observed("refused to start", errors[-1].split("SettingError: ", 1)[-1])
