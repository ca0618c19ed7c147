"""Telling a tracking server or artifact store that is down or failing from a real error.

A step that fails because MLflow's server, or the object store behind its artifact proxy, cannot be
reached is worth running again once it is back (the flows retry it, the CLI exits 3 with a message
naming the server); any other error is reported as it is.
"""

from __future__ import annotations

import mlflow

# SQLite's own answer once its busy timeout (5 s per statement, Python's default) has run out while
# another connection holds a write lock on the file: a bounded wait, then this error.
_LOCKED_TEXT = "database is locked"

# What the MLflow client says when the tracking server, or the object store behind its artifact
# proxy, cannot be reached or fails (after the client's own HTTP retries).
_OUTAGE_TEXT = (
    "max retries exceeded",
    "connection refused",
    "connection aborted",
    "connection reset",
    "failed to establish a new connection",
    "timed out",
    "could not connect",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "too many 500 error responses",
    "too many 502 error responses",
    "too many 503 error responses",
    "too many 504 error responses",
    "internal server error",
)


class ArtifactUploadError(RuntimeError):
    """A logged model's files did not all reach the artifact store; nothing was registered."""


def _locked_message() -> str:
    uri = mlflow.get_tracking_uri()
    store = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else uri
    return (
        f"the MLflow store {store} is locked: another process holds it (a training, a promotion, an "
        "`mlflow ui` or a tool writing to it); run the same command again once that process is done."
    )


def outage_message(exc: BaseException) -> str | None:
    """A clear message when ``exc`` comes from an unreachable or failing tracking server or
    artifact store, or a SQLite store another process holds locked (anywhere in its chain of
    causes); None for any other error."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if _LOCKED_TEXT in text:
            return _locked_message()
        if isinstance(seen, ArtifactUploadError) or any(t in text for t in _OUTAGE_TEXT):
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            return (
                f"the MLflow tracking server at {mlflow.get_tracking_uri()} or its artifact store is "
                f"unreachable or failing ({first[:300]}). Nothing was registered by the failed step; "
                "run the same command again once it is back: a level-1 training resumes from its last "
                "checkpoint in the same MLflow run."
            )
        seen = seen.__cause__ or seen.__context__
    return None
