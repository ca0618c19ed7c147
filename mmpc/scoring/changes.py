"""New and changed products, found by content: what a nightly job scores.

Each product's digest covers its title, description and photo bytes. The index of what a model
version has scored (``scored_products.parquet`` under the scoring root: productid, digest, version)
is updated only once a job's manifest is written, so a failed night is scored again the next.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmpc.scoring.sources import Source

INDEX = "scored_products.parquet"


@dataclass(frozen=True)
class Delta:
    products: Path  # a CSV of the new and changed products (photo names relative to the image root)
    digests: Path  # their digests, for the index once scored
    total: int
    changed: int


def _digest(designation: object, description: object, photo: Path | None) -> str:
    h = hashlib.sha256()
    for value in (designation, description):
        h.update(b"\x00" + (value if isinstance(value, str) else "").encode())
    if photo is not None and photo.is_file():
        with open(photo, "rb") as fh:
            h.update(b"\x01" + hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:32]


def digests(source: Source, chunk: pd.DataFrame) -> pd.Series:
    root = source.image_root
    photos = [root / n if root is not None and n else None for n in chunk["image"]]
    return pd.Series(
        [
            _digest(t, d, p)
            for t, d, p in zip(chunk["designation"], chunk["description"], photos, strict=True)
        ],
        index=chunk.index,
    )


def _scored(index: Path, version: str) -> dict[int, str]:
    if not index.is_file():
        return {}
    frame = pd.read_parquet(index)
    frame = frame[frame["version"] == version]
    return dict(zip(frame["productid"].astype("int64"), frame["digest"], strict=True))


def select(source: Source, root: Path, version: str, out: Path, chunk_rows: int = 10_000) -> Delta:
    """Writes the products ``version`` has not scored in their current content into ``out``."""
    scored = _scored(root / INDEX, version)
    out.mkdir(parents=True, exist_ok=True)
    products, keys = out / "products.csv", out / "digests.parquet"
    total, parts = 0, []
    with open(products, "w", newline="") as fh:
        for i, chunk in enumerate(source.chunks(chunk_rows)):
            total += len(chunk)
            chunk = chunk.assign(digest=digests(source, chunk))
            fresh = chunk[
                [scored.get(int(p)) != d for p, d in zip(chunk["productid"], chunk["digest"], strict=True)]
            ]
            fresh.drop(columns="digest").to_csv(fh, index=False, header=i == 0)
            parts.append(fresh[["productid", "digest"]])
    changed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["productid", "digest"])
    changed.to_parquet(keys, index=False)
    return Delta(products, keys, total, len(changed))


def record(root: Path, delta: Delta, version: str) -> None:
    """After the job's manifest: the scored products' digests join the index (atomically replaced)."""
    index = root / INDEX
    new = pd.read_parquet(delta.digests).assign(version=version)
    old = pd.read_parquet(index) if index.is_file() else new.iloc[:0]
    merged = pd.concat([old[~old["productid"].isin(new["productid"])], new], ignore_index=True)
    tmp = index.with_name(f".{index.name}.tmp")
    merged.to_parquet(tmp, index=False)
    os.replace(tmp, index)
