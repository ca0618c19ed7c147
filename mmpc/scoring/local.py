"""The local engine: the registered pyfunc loaded once, a chunk of products at a time through it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from mmpc.serving_input import REQUEST_COLUMNS, RequestError

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    "productid",
    "prdtypecode",
    "probability",
    "top_codes",
    "top_probabilities",
    "image_status",
    "error",
    "model",
    "version",
)


def _empty(chunk: pd.DataFrame) -> pd.DataFrame:
    n = len(chunk)
    return pd.DataFrame(
        {
            "productid": chunk["productid"].to_numpy(),
            "prdtypecode": pd.array([None] * n, dtype="Int64"),
            "probability": np.full(n, np.nan),
            "top_codes": [[] for _ in range(n)],
            "top_probabilities": [[] for _ in range(n)],
            "image_status": ["missing" if v is None else "not_read" for v in chunk["image"]],
            "error": pd.array([None] * n, dtype="string"),
        }
    )


def level1_answer(probs: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """A level-1 model's answer (one probability column per code) in the ensemble's columns; a row
    the model has no answer for (an image model without a photo: NaN) stays without a code."""
    codes = np.array([int(c) for c in probs.columns])
    p = probs.to_numpy(dtype=float)
    answered = ~np.isnan(p).any(axis=1)
    order = np.argsort(-np.nan_to_num(p, nan=-1.0), axis=1, kind="stable")[:, :top_k]
    top_p = np.take_along_axis(p, order, axis=1)
    return pd.DataFrame(
        {
            "prdtypecode": pd.Series(codes[order[:, 0]], dtype="Int64").where(answered),
            "probability": np.where(answered, top_p[:, 0], np.nan),
            "top_codes": [codes[o].tolist() if a else [] for o, a in zip(order, answered, strict=True)],
            "top_probabilities": [t.tolist() if a else [] for t, a in zip(top_p, answered, strict=True)],
            "image_status": "not_reported",  # level-1 models do not say how they read the photo
        }
    )


def _fill(out: pd.DataFrame, rows: np.ndarray, pred: pd.DataFrame, top_k: int) -> None:
    if "prdtypecode" not in pred.columns:
        pred = level1_answer(pred, top_k)
    out.loc[rows, "prdtypecode"] = pred["prdtypecode"].to_numpy()
    out.loc[rows, "probability"] = pred["probability"].to_numpy()
    out.loc[rows, "image_status"] = pred["image_status"].to_numpy()
    for i, r in enumerate(rows):
        out.at[r, "top_codes"] = [int(c) for c in pred["top_codes"].iloc[i]]
        out.at[r, "top_probabilities"] = [float(p) for p in pred["top_probabilities"].iloc[i]]


def score_chunk(
    predict: Callable[[pd.DataFrame, dict], pd.DataFrame], chunk: pd.DataFrame, top_k: int
) -> pd.DataFrame:
    """Predictions for a chunk; a row the model cannot take (no title, a value it refuses) is
    reported in ``error`` with no prediction, and never fails the others."""
    out = _empty(chunk)
    titled = chunk["designation"].map(lambda v: isinstance(v, str) and bool(v.strip())).to_numpy()
    out.loc[~titled, "error"] = "no designation (title)"
    rows = np.flatnonzero(titled)
    if len(rows) == 0:
        return out
    request = chunk.iloc[rows][list(REQUEST_COLUMNS)].reset_index(drop=True)
    try:
        _fill(out, rows, predict(request, {"top_k": top_k}), top_k)
    except (RequestError, MlflowException):  # the pyfunc reports a refused request as MlflowException
        for r in rows:  # find the rows the model refuses, one by one
            try:
                one = predict(chunk.iloc[[r]][list(REQUEST_COLUMNS)], {"top_k": top_k})
                _fill(out, np.array([r]), one, top_k)
            except (RequestError, MlflowException) as exc:
                out.loc[r, "error"] = getattr(exc, "message", str(exc))
    return out
