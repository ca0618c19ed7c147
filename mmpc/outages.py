"""Telling a tracking server or artifact store that is down or failing from a real error.

A step that fails because MLflow's server, or the object store behind its artifact proxy, cannot be
reached is worth running again once it is back (the flows retry it, the CLI exits 3 with a message
naming the server); any other error is reported as it is.
"""

from __future__ import annotations

import mlflow

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


def outage_message(exc: BaseException) -> str | None:
    """A clear message when ``exc`` comes from an unreachable or failing tracking server or
    artifact store (anywhere in its chain of causes); None for any other error."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
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
