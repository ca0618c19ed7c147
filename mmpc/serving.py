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

from mmpc import kinds, serving_guard, serving_input
from mmpc.ensemble import EnsemblePredictor
from mmpc.models.batching import resolve_device

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "designation"),
        ColSpec("string", "description", required=False),
        ColSpec("string", "image", required=False),
    ]
)


DEVICE_ENV = "MMPC_DEVICE"  # auto (the default), cpu or cuda
THREADS_ENV = "MMPC_TORCH_THREADS"


def _setting(context, key: str, env: str, default: str) -> str:
    """A load-time setting: the model_config given to load_model, else the environment, else the default."""
    value = (getattr(context, "model_config", None) or {}).get(key)
    return str(value) if value not in (None, "", "auto") else os.environ.get(env) or default


def _threads(context) -> None:
    # Serving answers many small requests, each on its own server thread: one intra-op thread per
    # request avoids waiting on descheduled threads (bench/serve.py: p99 halves on 2 shared cores).
    # Batch scoring and dedicated cores raise it (model_config torch_threads, or MMPC_TORCH_THREADS).
    raw = _setting(context, "torch_threads", THREADS_ENV, "0")
    if not raw.isdigit():
        raise serving_input.SettingError(
            f"{THREADS_ENV} (or model_config torch_threads)={raw!r}: expected a whole number, 0 for one"
        )
    torch.set_num_threads(int(raw) or 1)


def _load_settings(context) -> serving_input.Limits:
    """The threads and the request limits, read once when the model loads: a bad value refuses to
    load (``mlflow models serve`` exits naming it) rather than start a healthy server that refuses
    every request."""
    _threads(context)
    serving_guard.install()  # inside `mlflow models serve` only
    return serving_input.Limits.from_env()


def _device(context) -> torch.device:
    """The GPU when present, the CPU otherwise; model_config ``device`` or MMPC_DEVICE forces either."""
    name = _setting(context, "device", DEVICE_ENV, "auto")
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise serving_input.SettingError(f"{DEVICE_ENV} (or model_config device): {exc}") from None


def _parse(model_input, limits: serving_input.Limits) -> serving_input.ParsedRequest:
    try:
        return serving_input.parse(model_input, limits)
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
        self.limits = _load_settings(context)
        self.predictor = kinds.load(context.artifacts["model"], _device(context))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        req = _parse(model_input, self.limits)
        probs = self.predictor.predict_proba(req.texts, req.images)
        return pd.DataFrame(probs.astype("float64"), columns=[str(c) for c in self.predictor.codes])


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """The published ensemble: request columns in; code, probability, top-k and image status out."""

    def load_context(self, context) -> None:
        self.limits = _load_settings(context)
        self.predictor = EnsemblePredictor(context.artifacts["ensemble"], _device(context))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        top_k = params.get("top_k")
        if top_k is not None and int(top_k) < 1:
            raise MlflowException(
                f"params: 'top_k' must be at least 1, got {top_k}", error_code=INVALID_PARAMETER_VALUE
            )
        req = _parse(model_input, self.limits)
        return self.predictor.predict(req, top_k=top_k, explain=bool(params.get("explain")))
