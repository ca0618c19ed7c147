"""Products to score, read a chunk at a time: a catalog folder (the Rakuten layout), a CSV or a
Parquet file, or any of them under an ``s3://`` prefix (mirrored first). Memory holds one chunk.

Every chunk has the request columns (``designation``, ``description``, ``image``: a path relative to
``image_root``, or None) and ``productid``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from mmpc import catalog as cat
from mmpc import locations
from mmpc.scoring.errors import ScoringError

TABLE_SUFFIXES = (".csv", ".parquet")
COLUMNS = ("productid", "designation", "description", "image")


class SourceError(ScoringError):
    """The input to score cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Source:
    table: Path  # the CSV or Parquet file of products
    image_root: Path | None  # image paths are relative to it; None: no images
    catalog_layout: bool  # Rakuten layout: images named from imageid and productid

    @property
    def name(self) -> str:
        return self.table.parent.name if self.catalog_layout else self.table.stem

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        for frame in self._raw_chunks(rows):
            yield self._normalise(frame)

    def _raw_chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        if self.table.suffix == ".parquet":
            for batch in pq.ParquetFile(self.table).iter_batches(batch_size=rows):
                yield batch.to_pandas()
            return
        yield from pd.read_csv(self.table, chunksize=rows, dtype={"designation": str, "description": str})

    def _normalise(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("productid", "designation") if c not in frame.columns]
        if missing:
            raise SourceError(f"{self.table}: no column {missing}; it has {list(frame.columns)}")
        out = pd.DataFrame({"productid": frame["productid"].astype("int64")})
        out["designation"] = frame["designation"].astype(object).where(frame["designation"].notna(), None)
        description = frame["description"] if "description" in frame.columns else None
        out["description"] = None if description is None else description.where(description.notna(), None)
        out["image"] = self._images(frame)
        return out.reset_index(drop=True)

    def _images(self, frame: pd.DataFrame) -> list[str | None]:
        if self.image_root is None:
            return [None] * len(frame)
        if self.catalog_layout:
            names = [
                cat.image_filename(i, p) for i, p in zip(frame["imageid"], frame["productid"], strict=True)
            ]
        elif "image" in frame.columns:
            names = [v if isinstance(v, str) and v else None for v in frame["image"]]
        else:
            return [None] * len(frame)
        # Named, the photo is read by the model: one it cannot read (or that is not there) is `invalid`,
        # as over HTTP; either way the product is scored on its text.
        return names

    def fingerprint(self) -> str:
        """Content digest of the table and the names and sizes of the photos: an unchanged input
        scored again does nothing."""
        with open(self.table, "rb") as fh:
            h = hashlib.file_digest(fh, "sha256")
        if self.image_root is not None:
            for entry in sorted(p for p in self.image_root.iterdir() if p.is_file()):
                h.update(f"{entry.name}:{entry.stat().st_size}\n".encode())
        return h.hexdigest()


def open_source(location: str | Path, cache_root: Path, image_root: str | Path | None = None) -> Source:
    """A catalog folder, a .csv or .parquet file (images under ``image_root``, by default its own
    folder), or ``s3://`` of either."""
    path = locations.materialize(location, cache_root)
    if path.is_file():
        if path.suffix not in TABLE_SUFFIXES:
            raise SourceError(f"{location}: expected a .csv or .parquet file, or a catalog folder")
        return Source(path, Path(image_root) if image_root else path.parent, catalog_layout=False)
    if path.is_dir():
        table = path / "X_train_update.csv"
        tables = [table] if table.is_file() else sorted(path.glob("X_*.csv"))
        if not tables:
            raise SourceError(f"{location}: no X_*.csv in this folder (a Rakuten-layout catalog has one)")
        return Source(tables[0], cat.find_image_dir(path), catalog_layout=True)
    raise SourceError(f"{location}: no such file or folder")
