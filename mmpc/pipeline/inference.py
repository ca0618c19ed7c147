"""Level-1 models over catalog rows: registered folders fetched, rows scored a chunk at a time."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mmpc import images, tracking

CHUNK = 256  # catalog rows decoded and predicted at a time: bounded memory on 85k-product catalogs


def predict_rows(
    predict: Callable[[list[str], list], np.ndarray], frame: pd.DataFrame, with_images: bool
) -> np.ndarray:
    """Probabilities for catalog rows, a chunk at a time (images are decoded per chunk)."""
    parts = []
    for start in range(0, len(frame), CHUNK):
        chunk = frame.iloc[start : start + CHUNK]
        imgs = (
            images.load_optional(chunk["image_path"], chunk["has_image"])
            if with_images
            else [None] * len(chunk)
        )
        parts.append(predict(chunk["text"].tolist(), imgs))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def request_example(frame: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """Serving input example: real rows of the catalog, the photo as base64."""
    rows = frame.head(n)
    encoded = [
        base64.b64encode(Path(p).read_bytes()).decode() if has else None
        for p, has in zip(rows["image_path"], rows["has_image"], strict=True)
    ]
    return pd.DataFrame(
        {
            "designation": rows["designation"].tolist(),
            "description": rows["description"].tolist(),
            "image": encoded,
        }
    )


def download_level1(versions: dict[str, str], dst: Path) -> dict[str, Path]:
    """The model folders of registered level-1 versions, by model name."""
    folders = {}
    for name, version in versions.items():
        mv = tracking.resolve(name, version)
        folders[name] = tracking.level1_folder(tracking.download_artifacts(mv, dst / name))
    return folders
