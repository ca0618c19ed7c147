"""The Spark engine's output against the local engine's on the same input: product ids in the same
order, the same predicted codes, probabilities within a relative 1e-6 (Spark's Python workers run
one torch thread each, the local engine every core: float sums may differ in the last bits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

COLUMNS = ["productid", "prdtypecode", "probability"]
RTOL = 1e-6


def _read(folder: Path) -> dict[str, np.ndarray]:
    parts = [pq.read_table(p, columns=COLUMNS) for p in sorted(folder.glob("part-*.parquet"))]
    return {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in parts]) for c in COLUMNS}


def same_scores(local: Path, spark: Path) -> dict[str, Any]:
    """identical (bool), rows, mismatched codes and the largest probability difference."""
    a, b = _read(local), _read(spark)
    if len(a["productid"]) != len(b["productid"]) or not np.array_equal(a["productid"], b["productid"]):
        return {"identical": False, "rows": [len(a["productid"]), len(b["productid"])], "reason": "productid"}
    codes = np.asarray(a["prdtypecode"], dtype=float), np.asarray(b["prdtypecode"], dtype=float)
    code_diff = int((~((codes[0] == codes[1]) | (np.isnan(codes[0]) & np.isnan(codes[1])))).sum())
    pa, pb = np.asarray(a["probability"], dtype=float), np.asarray(b["probability"], dtype=float)
    close = np.isclose(pa, pb, rtol=RTOL, atol=0, equal_nan=True)
    max_diff = float(np.nanmax(np.abs(pa - pb))) if len(pa) else 0.0
    return {
        "identical": code_diff == 0 and bool(close.all()),
        "rows": len(pa),
        "code_mismatches": code_diff,
        "probability_mismatches": int((~close).sum()),
        "max_probability_diff": max_diff,
    }
