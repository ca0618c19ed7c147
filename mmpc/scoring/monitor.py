"""Monitoring signals of a scoring job, accumulated part by part (memory flat in the catalog size):
the predicted class mix against the training split's (a drift score), the share of missing and
invalid photos, the mean confidence and the share of products under a confidence threshold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

CONFIDENCE_THRESHOLD = 0.5  # a product under it is worth a human look


@dataclass
class Signals:
    rows: int = 0
    scored: int = 0  # rows with a prediction (a row without a title is reported, not scored)
    classes: Counter = field(default_factory=Counter)
    image_status: Counter = field(default_factory=Counter)
    confidence_sum: float = 0.0
    under_threshold: int = 0

    def add(self, part: pd.DataFrame, threshold: float = CONFIDENCE_THRESHOLD) -> None:
        self.rows += len(part)
        scored = part[part["prdtypecode"].notna()]
        self.scored += len(scored)
        self.classes.update(int(c) for c in scored["prdtypecode"])
        self.image_status.update(part["image_status"].astype(str))
        self.confidence_sum += float(scored["probability"].sum())
        self.under_threshold += int((scored["probability"] < threshold).sum())


def accumulate(parts: Iterable[Path]) -> Signals:
    signals = Signals()
    for path in parts:
        signals.add(pq.read_table(path, columns=["prdtypecode", "probability", "image_status"]).to_pandas())
    return signals


def js_distance(p: Mapping[int, float], q: Mapping[int, float]) -> float:
    """Jensen-Shannon distance (base 2: 0 same mix, 1 disjoint) between two class mixes."""
    codes = sorted(set(p) | set(q))
    a = np.array([p.get(c, 0.0) for c in codes], dtype=float)
    b = np.array([q.get(c, 0.0) for c in codes], dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return float(np.sqrt(max((kl(a) + kl(b)) / 2, 0.0)))


def metrics(signals: Signals, train_mix: Mapping[int, float] | None) -> dict[str, float]:
    rows, scored = max(signals.rows, 1), max(signals.scored, 1)
    out = {
        "rows": float(signals.rows),
        "rows_scored": float(signals.scored),
        "rows_not_scored": float(signals.rows - signals.scored),
        "image_missing_share": signals.image_status["missing"] / rows,
        "image_invalid_share": signals.image_status["invalid"] / rows,
        "mean_confidence": signals.confidence_sum / scored,
        "under_confidence_share": signals.under_threshold / scored,
    }
    if train_mix:
        out["class_mix_js_distance"] = js_distance(dict(signals.classes), train_mix)
    return out
