"""A level-1 model's answer in the ensemble's columns, for the local engine.

A level-1 pyfunc answers one probability column per product type code, while the local engine reads
``prdtypecode``, ``probability``, ``top_codes``, ``top_probabilities`` and ``image_status`` (the
ensemble's answer). When a loaded model answers without ``prdtypecode``, ``adapt_level1_answers``
derives those columns from its probabilities (top-k by probability, ties to the lower column); a
model that already answers them is passed through untouched. ``used()`` tells whether any answer
needed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_USED = [False]


def used() -> bool:
    return _USED[0]


def answers(probs: pd.DataFrame, request: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The ensemble's answer columns from one probability column per code."""
    codes = np.array([int(c) for c in probs.columns])
    p = probs.to_numpy(dtype="float64")
    order = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    top_p = np.take_along_axis(p, order, axis=1)
    images = request["image"] if "image" in request.columns else pd.Series([None] * len(request))
    return pd.DataFrame(
        {
            "prdtypecode": codes[order[:, 0]],
            "probability": top_p[:, 0],
            "top_codes": list(codes[order]),
            "top_probabilities": list(top_p),
            "image_status": ["missing" if v is None else "not_read" for v in images],
        }
    )


class _Adapted:
    def __init__(self, model: Any):
        self.model = model

    def predict(self, data: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        out = self.model.predict(data, params=params)
        if "prdtypecode" in out.columns:
            return out
        _USED[0] = True
        return answers(out, data, int((params or {}).get("top_k") or 3))


def adapt_level1_answers() -> None:
    """Every model ``mlflow.pyfunc.load_model`` loads from now on, in this process, answers in the
    ensemble's columns."""
    import mlflow.pyfunc

    load = mlflow.pyfunc.load_model

    def load_adapted(*args: Any, **kwargs: Any) -> _Adapted:
        return _Adapted(load(*args, **kwargs))

    mlflow.pyfunc.load_model = load_adapted
