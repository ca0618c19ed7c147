"""Figures written as image files for MLflow runs: the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rendering files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from mmpc.labels import describe

# The MLflow UI's artifact viewer shows an image at most about 1,000 pixels wide: the figure is drawn
# at that size, so nothing is scaled down and every count stays readable at the viewer's size.
_VIEWER_PX = 1000
_DPI = 100


def confusion_png(cm: np.ndarray, codes: list[int], path: Path, title: str) -> None:
    """Row-normalised colours (recall per true code), raw counts in the cells; rows named with the
    code and its product type, columns with the code (the same order)."""
    n = len(codes)
    side = _VIEWER_PX / _DPI
    fig, ax = plt.subplots(figsize=(side, side * 0.92), dpi=_DPI)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    size = 9 if n <= 30 else 6
    ax.set_xticks(range(n), [str(c) for c in codes], rotation=90, fontsize=size)
    ax.set_yticks(range(n), [describe(c) for c in codes], fontsize=size)
    ax.set_xlabel("predicted prdtypecode (same order as the rows)")
    ax.set_ylabel("true prdtypecode")
    ax.set_title(title)
    for i, j in zip(*np.nonzero(cm), strict=True):
        ax.text(
            j, i, int(cm[i, j]), ha="center", va="center", fontsize=size - 1,
            color="white" if norm[i, j] > 0.5 else "black",
        )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
