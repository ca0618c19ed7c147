"""Serving input: the request columns checked row by row, images decoded with a status.

Columns: ``designation`` (required text), ``description`` (optional text), ``image`` (optional:
base64 of the image bytes, or a file path under a configured root; URLs are refused, never fetched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from mmpc import images, text

MAX_TEXT_CHARS = 20_000  # far above any real product text; the tokenizer truncates much earlier anyway
IMAGE_ROOT_ENV = "MMPC_IMAGE_ROOT"
REQUEST_COLUMNS = ("designation", "description", "image")


class RequestError(ValueError):
    """A request breaks the input contract; the message names the column and the row."""


@dataclass
class ParsedRequest:
    texts: list[str]
    images: list[Image.Image | None]
    image_status: list[str]


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(value: object, column: str, row: int, required: bool) -> str:
    if _is_missing(value):
        if required:
            raise RequestError(f"row {row}: '{column}' is missing")
        return ""
    if not isinstance(value, str):
        raise RequestError(f"row {row}: '{column}' must be text, got {type(value).__name__}")
    return value[:MAX_TEXT_CHARS]


def _image(value: object, row: int, root: Path | None) -> tuple[Image.Image | None, str]:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None, "missing"
    if not isinstance(value, str):
        raise RequestError(f"row {row}: 'image' must be a base64 string, got {type(value).__name__}")
    value = value.strip()
    if value.lower().startswith(("http://", "https://", "ftp://", "file:")):
        raise RequestError(
            f"row {row}: 'image' is a URL; URLs are not fetched, send the image bytes in base64"
        )
    if root is not None and (
        value.startswith(("/", "./")) or value.lower().endswith((".jpg", ".jpeg", ".png"))
    ):
        path = (root / value).resolve()
        if not path.is_relative_to(root):
            raise RequestError(f"row {row}: 'image' path is outside the allowed image root")
        try:
            return images.load_file(path), "ok"
        except (OSError, images.ImageDecodeError):
            return None, "invalid"
    try:
        return images.decode_base64(value), "ok"
    except images.ImageDecodeError:
        return None, "invalid"


def image_root() -> Path | None:
    root = os.environ.get(IMAGE_ROOT_ENV)
    return Path(root).resolve() if root else None


def parse(frame: pd.DataFrame) -> ParsedRequest:
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"expected a table of products, got {type(frame).__name__}")
    if "designation" not in frame.columns:
        raise RequestError(f"missing required column 'designation' (columns given: {list(frame.columns)})")
    root = image_root()
    n = len(frame)
    descriptions = frame["description"].tolist() if "description" in frame.columns else [None] * n
    raw_images = frame["image"].tolist() if "image" in frame.columns else [None] * n
    texts, imgs, status = [], [], []
    for row, (title, body, image) in enumerate(
        zip(frame["designation"].tolist(), descriptions, raw_images, strict=True)
    ):
        title = _text(title, "designation", row, required=True)
        if not text.clean(title):
            raise RequestError(f"row {row}: 'designation' is empty")
        texts.append(text.join(title, _text(body, "description", row, required=False)))
        img, st = _image(image, row, root)
        imgs.append(img)
        status.append(st)
    return ParsedRequest(texts, imgs, status)
