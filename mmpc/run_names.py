"""MLflow run names: ``<what> · seed <seed> · <UTC start>``, so runs of different retrains tell apart
in every list, compare view header and chart legend of the MLflow UI.

``<what>`` is the model (``flaubert``, ``tfidf``...), ``stack``, ``retrain <recipe>``, or what an
evaluation or scoring run did. A run that registers a model version appends `` · v<N>`` once it has.
"""

from __future__ import annotations

from datetime import UTC, datetime

SEP = " · "


def run_name(what: str, seed: int | None = None, start: datetime | None = None) -> str:
    """``flaubert · seed 42 · 2026-11-30 01:02:03``; without a seed, the seed part is left out."""
    when = (start or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    parts = [what, *([f"seed {seed}"] if seed is not None else []), when]
    return SEP.join(parts)


def with_version(name: str, version: str | int) -> str:
    """The run's name once it registered version ``version``; unchanged if it already says so."""
    suffix = f"{SEP}v{version}"
    return name if name.endswith(suffix) else name + suffix


def what(name: str) -> str:
    """The ``<what>`` part of a run name."""
    return name.split(SEP, 1)[0]
