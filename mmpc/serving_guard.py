"""Requests MLflow's scoring server mishandles before mmpc's model sees them, and the cost of each.

``mlflow models serve`` reads and parses the body itself (``mlflow.pyfunc.scoring_server``); the
model gets a DataFrame, or nothing when parsing failed. Requests that come out wrong there:

- no ``Content-Type`` header: an ``AttributeError`` in the server, answered 500;
- CSV or Parquet: decoded into a DataFrame before any of mmpc's limits can run (a 33 KB Parquet body
  expands to a 1 GB string);
- a body that is not UTF-8: answered with the whole body echoed in the error message;
- JSON nested deeper than Python's parser allows (``sys.getrecursionlimit()`` levels): a
  ``RecursionError``, answered 500;
- a ``dataframe_split`` whose ``index`` and ``data`` differ in length: pandas repeats the one row
  for every index entry, answered with predictions for rows nobody sent.

The served model installs this guard when it loads: the scoring server looks ``invocations`` and
``infer_and_parse_data`` up in its module at each request, so wrapping them there answers these
with 415, 413 and 400 naming what is wrong, before MLflow parses anything, and cuts any error
message MLflow builds to ``MESSAGE_CHARS``. It also bounds each request's work: at most
``Limits.max_concurrent_requests`` requests do model work at once, and each has a deadline
(MLflow's request timeout, ``mmpc.models.deadline``) checked between image decodes and
between model batches, so the work stops soon after MLflow has answered 504 instead of running on
for minutes.

The reverse proxy of the team deployment (``infra/serving/nginx.py``) also answers 415 to a body
without a JSON ``Content-Type``, and closes idle and slow connections, which uvicorn does not.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mmpc.models import deadline
from mmpc.serving_input import Limits

log = logging.getLogger(__name__)
SCORING_SERVER = "mlflow.pyfunc.scoring_server"
_WRAPPED = ("invocations", "infer_and_parse_data")
JSON_TYPE = "application/json"
NO_CONTENT_TYPE = (
    "the request has no Content-Type header: send the JSON body with 'Content-Type: application/json'"
)
MESSAGE_CHARS = 4_000  # longest error message answered: MLflow quotes the input in some of its own
SLOT_WAIT_SHARE = 0.5  # of the request timeout, waiting for a slot: a 503 reaches the client before
# MLflow's 504 (whose clock starts when the request arrives, before this thread runs)


class _Refused(Exception):
    """A body refused before MLflow parses it: the HTTP status and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def install(limits: Limits | None = None) -> bool:
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
    gate = _Gate(limits or Limits.from_env(), float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()))
    server.invocations = _guarded_invocations(server.invocations, server.InvocationsResponse, gate)
    server.infer_and_parse_data = _checked_split(server.infer_and_parse_data)
    raise_fd_limit()
    return True


def raise_fd_limit() -> None:
    """Every open connection holds a file descriptor: take all the process may have (the hard limit),
    so that idle connections exhaust the server later. uvicorn never closes a connection that has not
    sent a full request; the deployment's proxy does (docs/robustness.md, "Layers")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)


class _Gate:
    """The requests doing model work at once, and each one's time."""

    def __init__(self, limits: Limits, timeout_s: float) -> None:
        self.limits = limits
        self.timeout_s = timeout_s
        self.slots = threading.BoundedSemaphore(limits.max_concurrent_requests)

    def busy(self) -> str:
        return (
            f"the server is busy: {self.limits.max_concurrent_requests} request(s) are being scored "
            f"(MMPC_MAX_CONCURRENT_REQUESTS) and none finished within "
            f"{self.timeout_s * SLOT_WAIT_SHARE:g} s; retry later"
        )

    def stopped(self, started: float) -> str:
        message = (
            f"the request ran past its {self.timeout_s:g} s deadline (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) "
            f"and its work was stopped after {time.monotonic() - started:.1f} s: send smaller batches"
        )
        log.warning(message)
        return message


def _answer(response: type, status: int, message: str) -> Any:
    code = {503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(status, "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": cut(message)})
    return response(response=body, status=status, mimetype=JSON_TYPE)


def cut(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` up to ``limit`` characters, saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters cut)"


def _cut_error(exc: MlflowException) -> None:
    exc.message = cut(exc.message)
    for key, value in exc.json_kwargs.items():  # the stack trace MLflow attaches, among others
        if isinstance(value, str):
            exc.json_kwargs[key] = cut(value)


def checked_body(data: bytes | str, content_type: str | None, limits: Limits) -> str:
    """The body as text, once it is JSON, within the size limit and UTF-8; _Refused otherwise."""
    if not content_type:
        raise _Refused(415, NO_CONTENT_TYPE)
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime != JSON_TYPE:
        raise _Refused(
            415,
            f"Content-Type {mime[:100]!r}: this model takes JSON ('Content-Type: application/json') "
            "with the rows in 'dataframe_split' or 'dataframe_records'",
        )
    if len(data) > limits.max_request_mb * 1e6:
        raise _Refused(
            413,
            f"request body too large: {len(data) / 1e6:.4g} MB; the limit is {limits.max_request_mb:.4g} MB "
            "(MMPC_MAX_REQUEST_MB): send smaller batches",
        )
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(
            400,
            f"the request body is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start:,} "
            f"({exc.reason}); send JSON encoded in UTF-8",
        ) from None


def _guarded_invocations(original: Callable, response: type, gate: _Gate) -> Callable:
    def invocations(data: Any, content_type: str | None, model: Any, input_schema: Any) -> Any:
        try:
            body = checked_body(data, content_type, gate.limits)
        except _Refused as refused:
            return _answer(response, refused.status, str(refused))
        started = time.monotonic()
        with deadline.deadline(gate.timeout_s):
            if not gate.slots.acquire(timeout=gate.timeout_s * SLOT_WAIT_SHARE):
                return _answer(response, 503, gate.busy())
            try:
                return _bounded(original(body, content_type, model, input_schema), response)
            except RecursionError:  # only parsing can raise it here: MLflow wraps the model's errors
                raise MlflowException(
                    f"the request's JSON is nested deeper than {sys.getrecursionlimit():,} levels; a "
                    "request is a table of products ('dataframe_split' or 'dataframe_records')",
                    error_code=INVALID_PARAMETER_VALUE,
                ) from None
            except (MlflowException, deadline.DeadlineExceeded) as exc:
                # MLflow turns the model's DeadlineExceeded into an "unexpected error": the clock tells.
                if deadline.deadline_passed():
                    return _answer(response, 504, gate.stopped(started))
                if isinstance(exc, MlflowException):
                    _cut_error(exc)
                raise
            finally:
                gate.slots.release()

    invocations.mmpc_guard = True  # type: ignore[attr-defined]
    return invocations


def _bounded(result: Any, response: type) -> Any:
    """An error MLflow answered itself (a 415 naming the Content-Type, ...), cut to MESSAGE_CHARS."""
    if getattr(result, "status", 200) == 200 or not isinstance(result.response, str):
        return result
    return response(response=cut(result.response), status=result.status, mimetype=result.mimetype)


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
