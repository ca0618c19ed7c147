"""MLflow pyfunc wrappers (level-1 models and the ensemble) and their signatures.

The wrappers are logged as models-from-code (``mmpc/pyfunc/*.py``); their artifacts are plain
mmpc model folders, so loading never unpickles anything.
"""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array, Map

from mmpc import kinds, serving_input
from mmpc.ensemble import EnsemblePredictor

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "designation"),
        ColSpec("string", "description", required=False),
        ColSpec("string", "image", required=False),
    ]
)


def _threads() -> None:
    # Serving answers many small requests, each on its own server thread: one intra-op thread per
    # request avoids waiting on descheduled threads (bench/serve.py: p99 halves on 2 shared cores).
    # MMPC_TORCH_THREADS raises it on dedicated cores.
    threads = int(os.environ.get("MMPC_TORCH_THREADS", "0")) or 1
    torch.set_num_threads(threads)


def _parse(model_input) -> serving_input.ParsedRequest:
    try:
        return serving_input.parse(model_input)
    except serving_input.RequestError as exc:
        raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def level1_signature(codes: list[int]) -> ModelSignature:
    return ModelSignature(inputs=INPUT_SCHEMA, outputs=Schema([ColSpec("double", str(c)) for c in codes]))


def ensemble_signature(top_k: int) -> ModelSignature:
    outputs = Schema(
        [
            ColSpec("long", "prdtypecode"),
            ColSpec("double", "probability"),
            ColSpec(Array("long"), "top_codes"),
            ColSpec(Array("double"), "top_probabilities"),
            ColSpec("string", "image_status"),
            ColSpec(Map("double"), "contributions", required=False),  # with the `explain` parameter
        ]
    )
    params = ParamSchema([ParamSpec("top_k", "long", top_k), ParamSpec("explain", "boolean", False)])
    return ModelSignature(inputs=INPUT_SCHEMA, outputs=outputs, params=params)


class Level1Model(mlflow.pyfunc.PythonModel):
    """A level-1 model: request columns in, one probability column per product type code out."""

    def load_context(self, context) -> None:
        _threads()
        self.predictor = kinds.load(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        req = _parse(model_input)
        probs = self.predictor.predict_proba(req.texts, req.images)
        return pd.DataFrame(probs.astype("float64"), columns=[str(c) for c in self.predictor.codes])


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """The published ensemble: request columns in; code, probability, top-k and image status out."""

    def load_context(self, context) -> None:
        _threads()
        self.predictor = EnsemblePredictor(context.artifacts["ensemble"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        top_k = params.get("top_k")
        if top_k is not None and int(top_k) < 1:
            raise MlflowException(
                f"params: 'top_k' must be at least 1, got {top_k}", error_code=INVALID_PARAMETER_VALUE
            )
        req = _parse(model_input)
        return self.predictor.predict(req, top_k=top_k, explain=bool(params.get("explain")))
