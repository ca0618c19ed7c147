"""Classification metrics shared by every level (the same names in every MLflow run)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in truth or prediction (the challenge's metric)."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def scores(y_true: np.ndarray, probs: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}_macro_f1``, ``{prefix}_weighted_f1``, ``{prefix}_accuracy`` from class probabilities."""
    y_pred = probs.argmax(axis=1)
    return {
        f"{prefix}_macro_f1": macro_f1(y_true, y_pred),
        f"{prefix}_weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        f"{prefix}_accuracy": float(accuracy_score(y_true, y_pred)),
    }


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, codes: list[int]) -> str:
    return classification_report(
        y_true,
        y_pred,
        labels=list(range(len(codes))),
        target_names=[str(c) for c in codes],
        zero_division=0,
        digits=3,
    )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
