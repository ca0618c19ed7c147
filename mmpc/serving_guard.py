"""Requests MLflow's scoring server mishandles before mmpc's model sees them.

``mlflow models serve`` reads and parses the body itself (``mlflow.pyfunc.scoring_server``); the
model gets a DataFrame, or nothing when parsing failed. Three requests come out wrong there:

- no ``Content-Type`` header: an ``AttributeError`` in the server, answered 500;
- JSON nested deeper than Python's parser allows (``sys.getrecursionlimit()`` levels): a
  ``RecursionError``, answered 500;
- a ``dataframe_split`` whose ``index`` and ``data`` differ in length: pandas repeats the one row
  for every index entry, answered with predictions for rows nobody sent.

The served model installs this guard when it loads: the scoring server looks ``invocations`` and
``infer_and_parse_data`` up in its module at each request, so wrapping them there answers these
with 415 and 400 naming what is wrong. The reverse proxy of the team deployment
(``infra/serving/nginx.py``) also answers 415 to a body without a JSON ``Content-Type`` before it
reaches a model server.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

log = logging.getLogger(__name__)
SCORING_SERVER = "mlflow.pyfunc.scoring_server"
_WRAPPED = ("invocations", "infer_and_parse_data")
NO_CONTENT_TYPE = (
    "the request has no Content-Type header: send the JSON body with 'Content-Type: application/json'"
)


def install() -> bool:
    """Wrap the scoring server's request parsing, once; False outside ``mlflow models serve`` (the
    module is not loaded) or when this MLflow no longer has the functions it wraps."""
    server = sys.modules.get(SCORING_SERVER)
    if server is None:
        return False
    if getattr(server.invocations, "mmpc_guard", False):
        return True
    if not all(callable(getattr(server, name, None)) for name in _WRAPPED):
        log.warning("%s has no %s: requests are not guarded here", SCORING_SERVER, " or ".join(_WRAPPED))
        return False
    server.invocations = _guarded_invocations(server.invocations, server.InvocationsResponse)
    server.infer_and_parse_data = _checked_split(server.infer_and_parse_data)
    return True


def _guarded_invocations(original: Callable, response: type) -> Callable:
    def invocations(data: Any, content_type: str | None, model: Any, input_schema: Any) -> Any:
        if not content_type:
            body = json.dumps({"error_code": "BAD_REQUEST", "message": NO_CONTENT_TYPE})
            return response(response=body, status=415, mimetype="application/json")
        try:
            return original(data, content_type, model, input_schema)
        except RecursionError:  # only parsing can raise it here: MLflow wraps the model's errors
            raise MlflowException(
                f"the request's JSON is nested deeper than {sys.getrecursionlimit():,} levels; a "
                "request is a table of products ('dataframe_split' or 'dataframe_records')",
                error_code=INVALID_PARAMETER_VALUE,
            ) from None

    invocations.mmpc_guard = True  # type: ignore[attr-defined]
    return invocations


def split_mismatch(payload: Any) -> str | None:
    """Why a ``dataframe_split`` payload's ``index`` does not match its ``data``; None when it does."""
    split = payload.get("dataframe_split") if isinstance(payload, dict) else None
    if not isinstance(split, dict):
        return None
    index, rows = split.get("index"), split.get("data")
    if not isinstance(index, list) or not isinstance(rows, list) or len(index) == len(rows):
        return None
    return (
        f"dataframe_split: 'index' has {len(index):,} entries but 'data' has {len(rows):,} row(s); "
        "give one index entry per row, or leave 'index' out"
    )


def _checked_split(original: Callable) -> Callable:
    def infer_and_parse_data(data: Any, schema: Any = None) -> Any:
        if (problem := split_mismatch(data)) is not None:
            raise MlflowException(problem, error_code=INVALID_PARAMETER_VALUE)
        return original(data, schema)

    return infer_and_parse_data
