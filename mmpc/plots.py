"""Figures written as image files for MLflow runs: the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rendering files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from mmpc.labels import describe


def confusion_png(cm: np.ndarray, codes: list[int], path: Path, title: str) -> None:
    """Row-normalised colours (recall per true code), raw counts in the cells, codes with their names."""
    n = len(codes)
    fig, ax = plt.subplots(figsize=(max(7, n * 0.5 + 3), max(6, n * 0.45 + 2.5)), dpi=110)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [describe(c) for c in codes]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted prdtypecode")
    ax.set_ylabel("true prdtypecode")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
