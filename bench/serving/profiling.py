"""Where a single-product request spends its time, in process: the stages of the ensemble (from
``EnsemblePredictor.timings``), the MLflow serving layers around it, and a cProfile."""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.serving.common import payload, timed


def stage_breakdown(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int) -> dict[str, float]:
    """Median ms per stage of a single-product request: the pyfunc's whole predict, the request
    parsing, and within ``EnsemblePredictor.predict`` each member's forward and the booster."""
    from mmpc import serving_input

    pred = ens_model.unwrap_python_model().predictor
    stages: dict[str, list[float]] = {}
    for i in range(rounds):
        frame = singles[i % len(singles)]
        if frame["image"].isna().all():  # stages below: products with a photo (the slower case)
            with timed(stages, "pyfunc predict, total (no image)"):
                ens_model.predict(frame)
            continue
        with timed(stages, "pyfunc predict, total (with image)"):
            ens_model.predict(frame)
        with timed(stages, "parse request (decode image)"):
            req = serving_input.parse(frame)
        with timed(stages, "EnsemblePredictor.predict, total"):
            pred.predict(req)
        for name, seconds in pred.timings.members.items():
            stages.setdefault(f"  member {name} forward", []).append(seconds * 1000)
        stages.setdefault("  booster.predict", []).append(pred.timings.booster * 1000)
    return {k: float(np.median(v)) for k, v in stages.items()}


def serving_breakdown(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int) -> dict[str, float]:
    """Median ms of the MLflow serving layers around one single-product prediction (with a photo),
    without HTTP, and of the pyfunc prediction with one torch thread."""
    import torch
    from mlflow.pyfunc import scoring_server

    schema = ens_model.metadata.get_input_schema()
    wrapper = ens_model.unwrap_python_model()
    parse_json = getattr(scoring_server, "_parse_json_data", None)  # private: skipped if it moves
    frames = [f for f in singles if f["image"].notna().all()] or list(singles)
    stages: dict[str, list[float]] = {}
    for i in range(rounds):
        frame = frames[i % len(frames)]
        body = payload(frame)
        with timed(stages, "scoring_server.invocations (JSON -> JSON)"):
            scoring_server.invocations(body, "application/json", ens_model, schema)
        if parse_json is not None:
            with timed(stages, "  JSON -> DataFrame (_parse_json_data)"):
                parse_json(body, ens_model.metadata, schema)
        with timed(stages, "  PyFuncModel.predict (schema enforcement)"):
            ens_model.predict(frame)
        with timed(stages, "  EnsembleModel.predict (no MLflow layer)"):
            wrapper.predict(None, frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(rounds):
            with timed(stages, f"PyFuncModel.predict, torch threads 1 (default {threads})"):
                ens_model.predict(frames[i % len(frames)])
    finally:
        torch.set_num_threads(threads)
    return {k: float(np.median(v)) for k, v in stages.items()}


def cprofile_top(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int, top: int = 18) -> str:
    """cProfile of ``rounds`` single-product pyfunc predictions, top functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(rounds):
        ens_model.predict(singles[i % len(singles)])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])
