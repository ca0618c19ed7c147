"""What the scoring benchmark scores: generated demo catalogs with photos (Rakuten layout), and CSV
files of products without photos for the TF-IDF runs, made from a catalog's texts.

Every input is written once under a data folder and found again by its name on the next run
(``--workdir``). A text CSV of N products repeats the source catalog's titles and descriptions in
turn, each title given a distinct reference number, so that no two rows are the same text.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.serving.common import log

CSV_BLOCK = 100_000  # rows generated and appended at a time


def demo_catalog(data: Path, size: int, seed: int, image_size: int) -> Path:
    """The demo catalog of ``size`` products (with photos) under ``data``, written when missing."""
    from mmpc.demo_catalog import write_demo_catalog

    out = data / f"catalog-{size}-s{seed}-px{image_size}"
    if not (out / "demo_catalog.json").is_file():
        t0 = time.perf_counter()
        write_demo_catalog(out, size=size, seed=seed, image_size=image_size)
        seconds = time.perf_counter() - t0
        log(f"catalog of {size:,} products written in {seconds:.0f} s ({disk_mb(out):.0f} MB)")
    return out


def text_csv(data: Path, size: int, texts_from: Path) -> Path:
    """``size`` products without photos (``productid``, ``designation``, ``description``) in a CSV
    of its own folder (a CSV's folder is where its photos would be), written when missing."""
    folder = data / f"texts-{size}"
    path = folder / "products.csv"
    if path.is_file():
        return path
    t0 = time.perf_counter()
    base = pd.read_csv(texts_from / "X_train_update.csv", usecols=["designation", "description"])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".products.csv.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, size, CSV_BLOCK):
            rows = np.arange(start, min(size, start + CSV_BLOCK))
            picked = base.iloc[rows % len(base)].reset_index(drop=True)
            block = pd.DataFrame(
                {
                    "productid": 1_000_000_000 + rows,
                    "designation": picked["designation"] + " réf. " + pd.Series(rows).astype(str),
                    "description": picked["description"],
                }
            )
            block.to_csv(fh, index=False, header=start == 0, lineterminator="\n")
    os.replace(tmp, path)
    log(f"CSV of {size:,} products without photos written in {time.perf_counter() - t0:.0f} s "
        f"({path.stat().st_size / 2**20:.0f} MB)")  # fmt: skip
    return path


def http_requests(catalog: Path, n: int) -> pd.DataFrame:
    """The first ``n`` products of a catalog as serving input, each with its photo as base64."""
    from mmpc.catalog import image_filename

    x = pd.read_csv(catalog / "X_train_update.csv", nrows=n)
    folder = catalog / "images" / "image_train"
    photos = [
        base64.b64encode((folder / image_filename(i, p)).read_bytes()).decode()
        for i, p in zip(x["imageid"], x["productid"], strict=True)
    ]
    description = [d if isinstance(d, str) else None for d in x["description"]]
    return pd.DataFrame(
        {"designation": x["designation"].tolist(), "description": description, "image": photos}
    )


def disk_mb(folder: Path) -> float:
    """Space the folder takes on disk (allocated blocks, as ``du`` counts)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20
