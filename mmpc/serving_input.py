"""Serving input: the request columns checked row by row, images decoded with a status.

Columns: ``designation`` (required text), ``description`` (optional text), ``image`` (optional:
base64 of the image bytes, or a file path under a configured root; URLs are refused, never fetched).

Every request is checked against ``Limits`` before any model runs: a request over a limit, a value of
the wrong type or an image reference that is not allowed is refused with a message naming the column
and the row; an image that cannot be used never fails the request (its status says ``invalid``).
Inside a server, the request's deadline (``mmpc.models.deadline``) is checked between image
decodes.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from PIL import Image

from mmpc import images, text
from mmpc.models.deadline import check_deadline

IMAGE_ROOT_ENV = "MMPC_IMAGE_ROOT"
REQUEST_COLUMNS = ("designation", "description", "image")
_URL = re.compile(r"^([a-z][a-z0-9+.-]+:|//|\\\\)", re.IGNORECASE)  # scheme:, //host, \\host
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class RequestError(ValueError):
    """A request breaks the input contract; the message names the column and the row."""


class SettingError(ValueError):
    """A serving setting of the environment is not usable; the message names the variable."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Each has an environment variable (``MMPC_<NAME>``) to change it."""

    max_rows: int = 2_000  # rows per request: a full request stays far inside MLflow's 60 s timeout
    max_request_mb: float = 64.0  # the request body; and the text and image strings of all rows together
    max_text_chars: int = 20_000  # per text cell; longer text is cut (the tokenizer keeps far less)
    max_image_mb: float = 10.0  # per image, decoded bytes; a larger image is `invalid`
    max_request_megapixels: float = 600.0  # pixels the images of a request declare, together
    image_max_side: int = 512  # images are shrunk to fit this square on decode; the models see 224
    # long side over short side: a more elongated image is `invalid` before decoding (the resize to
    # the model's input would make a 512 x 1 image 131072 x 256 pixels)
    max_image_aspect_ratio: float = 10.0
    # requests doing model work at once in one server process; one that gets no slot within half of
    # MLflow's request timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) is answered 503
    max_concurrent_requests: int = 4

    @classmethod
    def from_env(cls) -> Limits:
        """The limits with the environment's values; a value that is not a number above 0 is a
        SettingError naming the variable (read when the model loads: a server never starts with it)."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"MMPC_{f.name.upper()}")
            if raw:
                values[f.name] = _limit_value(f.name, raw, int if f.type in ("int", int) else float)
        if values.get("max_image_aspect_ratio", 1) < 1:  # below 1, no image at all would be usable
            raise SettingError(
                f"MMPC_MAX_IMAGE_ASPECT_RATIO={values['max_image_aspect_ratio']:g}: a long side over a "
                f"short side is at least 1 (default {cls.max_image_aspect_ratio:g})"
            )
        return cls(**values)

    def describe(self) -> list[tuple[str, str, str]]:
        """(limit, value, environment variable) rows for the documentation."""
        return [(f.name, f"{getattr(self, f.name):,}", f"MMPC_{f.name.upper()}") for f in fields(self)]


def _limit_value(name: str, raw: str, kind: type) -> int | float:
    variable, default = f"MMPC_{name.upper()}", getattr(Limits, name)
    expected = f"the serving limit {name} takes a {'whole ' if kind is int else ''}number above 0"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingError(f"{variable}={raw!r} is not a number: {expected} (default {default:,})") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingError(f"{variable}={raw!r}: {expected} (default {default:,})")
    return value


@dataclass
class ParsedRequest:
    texts: list[str]
    images: list[Image.Image | None]
    image_status: list[str]


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(value: object, column: str, row: int, required: bool, limits: Limits) -> str:
    if _is_missing(value):
        if required:
            raise RequestError(f"row {row}: '{column}' is missing")
        return ""
    if not isinstance(value, str):
        raise RequestError(f"row {row}: '{column}' must be text, got {type(value).__name__}")
    return value[: limits.max_text_chars]


@dataclass(frozen=True)
class _ImageRef:
    kind: str  # missing | bytes | path | invalid
    data: bytes = b""
    path: Path | None = None


def _base64(value: str) -> bytes | None:
    """The bytes of strict base64 (line breaks and missing padding allowed), else None."""
    compact = "".join(value.split())
    if not _BASE64.fullmatch(compact) or len(compact) % 4 == 1:
        return None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _image_ref(value: object, row: int, root: Path | None, limits: Limits) -> _ImageRef:
    """What an ``image`` cell holds: base64 bytes, or a file path under the image root.

    A value is base64 when it decodes to bytes that start like an image, or decodes and does not
    look like a path; otherwise a value with ``.``, ``/`` or ``\\`` is a path. URLs are refused.
    """
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return _ImageRef("missing")
    if not isinstance(value, str):
        raise RequestError(f"row {row}: 'image' must be a base64 string, got {type(value).__name__}")
    value = value.strip()
    data_url = _DATA_URL.match(value)
    if data_url:
        value = value[data_url.end() :]
    elif _URL.match(value):
        raise RequestError(
            f"row {row}: 'image' is a URL; URLs are never fetched, send the image bytes in base64"
        )
    path_like = any(c in value for c in "./\\")
    if len(value) * 3 / 4 > limits.max_image_mb * 1e6:
        return _ImageRef("invalid")  # too large to be decoded
    data = _base64(value)
    if data is not None and (images.looks_like_image(data) or not path_like):
        return _ImageRef("bytes", data)
    if not path_like or data_url:
        return _ImageRef("invalid")  # neither an image in base64 nor a path
    if root is None:
        raise RequestError(
            f"row {row}: 'image' looks like a file path; this server reads no files "
            f"({IMAGE_ROOT_ENV} is not set): send the image bytes in base64"
        )
    try:
        path = (root / value).resolve()
    except (OSError, ValueError):  # a NUL byte, a name too long
        return _ImageRef("invalid")
    if not path.is_relative_to(root):
        raise RequestError(f"row {row}: 'image' path is outside the allowed image root")
    return _ImageRef("path", path=path)


def _load(ref: _ImageRef, limits: Limits) -> Image.Image | None:
    """The decoded image, or None when it cannot be used (status ``invalid``)."""
    try:
        if ref.path is not None:
            # A regular file only: a FIFO or a device under the root would block or never end.
            if not ref.path.is_file() or ref.path.stat().st_size > limits.max_image_mb * 1e6:
                return None
            return images.load_file(ref.path, limits.image_max_side, limits.max_image_aspect_ratio)
        return images.decode(ref.data, limits.image_max_side, limits.max_image_aspect_ratio)
    except (OSError, images.ImageDecodeError):
        return None


def image_root() -> Path | None:
    root = os.environ.get(IMAGE_ROOT_ENV)
    return Path(root).resolve() if root else None


def _check_size(frame: pd.DataFrame, limits: Limits) -> None:
    if len(frame) > limits.max_rows:
        raise RequestError(
            f"{len(frame):,} rows in one request; the limit is {limits.max_rows:,} "
            f"(MMPC_MAX_ROWS): send smaller batches"
        )
    total = sum(
        len(v) for col in REQUEST_COLUMNS if col in frame.columns for v in frame[col] if isinstance(v, str)
    )
    if total > limits.max_request_mb * 1e6:
        raise RequestError(
            f"request too large: {total / 1e6:.4g} MB of text and images; the limit is "
            f"{limits.max_request_mb:.4g} MB (MMPC_MAX_REQUEST_MB): send smaller batches"
        )


def parse(frame: pd.DataFrame, limits: Limits | None = None) -> ParsedRequest:
    """Check every row, then decode the images; raise RequestError naming the column and row."""
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"expected a table of products, got {type(frame).__name__}")
    if "designation" not in frame.columns:
        raise RequestError(f"missing required column 'designation' (columns given: {list(frame.columns)})")
    limits = limits or Limits.from_env()
    _check_size(frame, limits)
    root = image_root()
    n = len(frame)
    descriptions = frame["description"].tolist() if "description" in frame.columns else [None] * n
    raw_images = frame["image"].tolist() if "image" in frame.columns else [None] * n
    # Every row is checked before any image is decoded: a refused request costs no decoding.
    texts, refs = [], []
    for row, (title, body, image) in enumerate(
        zip(frame["designation"].tolist(), descriptions, raw_images, strict=True)
    ):
        title = _text(title, "designation", row, required=True, limits=limits)
        if not text.clean(title):
            raise RequestError(f"row {row}: 'designation' is empty")
        texts.append(text.join(title, _text(body, "description", row, required=False, limits=limits)))
        refs.append(_image_ref(image, row, root, limits))
    imgs: list[Image.Image | None] = []
    status: list[str] = []
    pixels, budget = 0, limits.max_request_megapixels * 1e6
    for row, ref in enumerate(refs):
        if ref.kind in ("bytes", "path"):
            check_deadline(f"before decoding row {row}'s image")
        img = _load(ref, limits) if ref.kind in ("bytes", "path") else None
        if img is not None:
            width, height = img.info.get("source_size", img.size)
            pixels += width * height
            if pixels > budget:
                raise RequestError(
                    f"row {row}: the request's images exceed {limits.max_request_megapixels:.4g} "
                    "megapixels in total (MMPC_MAX_REQUEST_MEGAPIXELS): send fewer images per request"
                )
        imgs.append(img)
        status.append("missing" if ref.kind == "missing" else "ok" if img is not None else "invalid")
    return ParsedRequest(texts, imgs, status)
