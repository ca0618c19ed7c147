"""Classification metrics shared by every level (the same names in every MLflow run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from mmpc.labels import RAKUTEN_NAMES, describe


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in truth or prediction (the challenge's metric)."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``macro_f1``, ``weighted_f1`` and ``accuracy`` of predicted class indices."""
    return {
        "macro_f1": macro_f1(y_true, y_pred),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


def scores(y_true: np.ndarray, probs: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}_macro_f1``, ``{prefix}_weighted_f1``, ``{prefix}_accuracy`` from class probabilities."""
    return {f"{prefix}_{k}": v for k, v in summary(y_true, probs.argmax(axis=1)).items()}


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, codes: list[int]) -> str:
    """sklearn's per-class precision/recall/F1 table, each row named by its code and product type."""
    return classification_report(
        y_true,
        y_pred,
        labels=list(range(len(codes))),
        target_names=[describe(c) for c in codes],
        zero_division=0,
        digits=3,
    )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def per_class(y_true: np.ndarray, y_pred: np.ndarray, codes: list[int]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every code (codes absent from both score 0)."""
    p, r, f, n = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(codes))), zero_division=0
    )
    return pd.DataFrame(
        {
            "prdtypecode": list(codes),
            "name": [RAKUTEN_NAMES.get(int(c), "") for c in codes],
            "precision": p,
            "recall": r,
            "f1": f,
            "support": n.astype(np.int64),
        }
    )


def worst_confusions(cm: np.ndarray, codes: list[int], top: int = 10) -> pd.DataFrame:
    """The largest off-diagonal cells: products of one code predicted as another, most first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.unravel_index(np.argsort(-off, axis=None, kind="stable")[:top], off.shape)
    keep = off[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    support = cm.sum(axis=1)
    return pd.DataFrame(
        {
            "true": [codes[i] for i in rows],
            "true_name": [RAKUTEN_NAMES.get(int(codes[i]), "") for i in rows],
            "predicted": [codes[j] for j in cols],
            "predicted_name": [RAKUTEN_NAMES.get(int(codes[j]), "") for j in cols],
            "count": off[rows, cols].astype(np.int64),
            "share_of_true": off[rows, cols] / np.maximum(support[rows], 1),
        }
    )
