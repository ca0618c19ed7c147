"""``mmpc score``: a registered model over a whole catalog, streamed, resumable and idempotent.

One MLflow run per job (in the experiment ``scoring``), tagged with the model version it ran, the
input logged as a dataset, and counts, throughput and monitoring signals as metrics. The output
folder is described in ``mmpc.scoring.parts``.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from mmpc import packaging, run_names, tracking
from mmpc import tags as tag
from mmpc.scoring import monitor
from mmpc.scoring.errors import ScoringError
from mmpc.scoring.local import score_chunk
from mmpc.scoring.parts import Job, Parts
from mmpc.scoring.sources import Source, open_source
from mmpc.serving_input import IMAGE_ROOT_ENV

log = logging.getLogger(__name__)

EXPERIMENT = "scoring"
CHUNK_ROWS = 1000  # within a request's row limit; one chunk is what memory holds


def _train_mix(mv) -> dict[int, float] | None:
    """The class mix of the training split the version was published from (its run's data/ record)."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{mv.run_id}/data/class_counts.csv")
    except Exception:  # a version logged without its catalog record: drift is not computed
        return None
    counts = pd.read_csv(io.StringIO(text), index_col=0)
    return {int(c): float(n) for c, n in counts["train"].items()}


def _log_input(source: Source, location: str, fingerprint: str) -> None:
    with warnings.catch_warnings():  # a local path fits two equivalent source classes; either will do
        warnings.simplefilter("ignore", UserWarning)
        dataset_source = resolve_dataset_source(str(location))
    dataset = MetaDataset(dataset_source, name=source.name, digest=fingerprint[:16])
    mlflow.log_input(dataset, context="scoring")


def _run(job: Job, parts: Parts, resume_id: str | None, location: str, source: Source):
    if resume_id:
        log.info("scoring: resuming MLflow run %s into %s", resume_id, parts.folder)
        return mlflow.start_run(run_id=resume_id)
    exp = mlflow.set_experiment(EXPERIMENT).experiment_id
    name = run_names.run_name(f"score {source.name} with {job.model} v{job.version}")
    run = mlflow.start_run(experiment_id=exp, run_name=name)
    parts.set_run(job, run.info.run_id)
    mlflow.set_tags(
        {
            tag.STEP: "score",
            tag.SCORED_MODEL: job.model,
            tag.SCORED_VERSION: job.version,
            tag.CATALOG: source.name,
            tag.SCORING_OUTPUT: str(parts.folder),
        }
    )
    mlflow.log_params({**asdict(job), "output": str(parts.folder)})
    _log_input(source, location, job.fingerprint)
    return run


def _stream(model, source: Source, parts: Parts, job: Job) -> tuple[int, float]:
    """Scores every chunk not yet written; returns (rows scored now, seconds)."""
    done, started = 0, time.perf_counter()
    signature = model.metadata.signature
    takes_params = bool(signature and signature.params)  # the ensemble's top_k; a level-1 model has none
    bar = tqdm(desc=f"scoring {source.name}", unit=" products", dynamic_ncols=True, mininterval=1.0)
    for index, chunk in enumerate(source.chunks(job.chunk_rows)):
        if not parts.done(index):
            out = score_chunk(
                lambda x, p: model.predict(x, params=p if takes_params else None), chunk, job.top_k
            )
            parts.write(index, out.assign(model=job.model, version=job.version))
            done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return done, time.perf_counter() - started


def _version(model: str, version: str):
    try:
        return tracking.resolve(model, version)
    except MlflowException as exc:
        # A missing version or alias; an unreachable server is not this (it is an outage, exit 3).
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ScoringError(
            f"{tracking.registered_name(model)} {version}: no such registered version"
        ) from None


def _local(uri: str, source: Source, parts: Parts, job: Job, config: dict) -> tuple[int, float]:
    if source.image_root is not None:
        os.environ[IMAGE_ROOT_ENV] = str(source.image_root)  # the pyfunc reads photos under it only
    with packaging.own_imports():
        model = mlflow.pyfunc.load_model(uri, model_config=config)
    return _stream(model, source, parts, job)


def _spark(uri: str, source: Source, parts: Parts, job: Job, config: dict, master: str) -> tuple[int, float]:
    from mmpc.scoring import spark as engine

    started = time.perf_counter()
    session = engine.session(master, job.chunk_rows)
    rows, staging = engine.score(session, uri, source, job, parts.folder, config)
    parts.adopt(sorted(staging.glob("part-*.parquet")))
    shutil.rmtree(staging, ignore_errors=True)
    return rows, time.perf_counter() - started


def score(
    location: str | Path,
    output: str | Path,
    workdir: str | Path,
    model: str = "ensemble",
    version: str = "@champion",
    chunk_rows: int = CHUNK_ROWS,
    top_k: int = 3,
    device: str = "auto",
    threads: int | None = None,
    engine: str = "local",
    spark_master: str = "local[2]",
    image_root: str | Path | None = None,
) -> dict[str, Any]:
    """Score every product of ``location`` with a registered version into ``output``; returns the
    manifest. An unchanged input already scored by the same version does nothing. ``device``: auto
    (the GPU when present), cpu or cuda; ``threads``: CPU threads (default: every core); ``engine``:
    local (this process, resumable part by part) or spark (``spark_master``: local[N] or a cluster)."""
    tracking.configure(workdir)
    mv = _version(model, version)
    source = open_source(location, Path(workdir) / "catalogs", image_root)
    job = Job(mv.name, str(mv.version), str(location), source.fingerprint(), chunk_rows, top_k, engine)
    parts = Parts(Path(output))
    resume_id = parts.start(job, None)
    if (manifest := parts.manifest()) is not None:
        log.info("scoring: %s already holds this job's scores (%d rows)", parts.folder, manifest["rows"])
        return manifest
    # One job owns the machine: every core (or the GPU), unlike a server's one thread per request.
    # A Spark task is one Python worker of N sharing the cores: one thread each unless asked.
    default_threads = 1 if engine == "spark" else os.cpu_count() or 1
    config = {"device": device, "torch_threads": threads or default_threads}
    uri = f"models:/{mv.name}/{mv.version}"
    with _run(job, parts, resume_id, str(location), source) as run:
        if engine == "spark":
            rows_now, seconds = _spark(uri, source, parts, job, config, spark_master)
        else:
            rows_now, seconds = _local(uri, source, parts, job, config)
        return _finish(mv, parts, job, run.info.run_id, rows_now, seconds)


def _finish(mv, parts: Parts, job: Job, run_id: str, rows_now: int, seconds: float) -> dict[str, Any]:
    """Monitoring signals over every part, the run's metrics, and the manifest, written last."""
    signals = monitor.metrics(monitor.accumulate(sorted(parts.folder.glob("part-*.parquet"))), _train_mix(mv))
    mlflow.log_metrics({**signals, "rows_this_attempt": rows_now, "seconds": seconds})
    if rows_now:
        mlflow.log_metric("products_per_second", rows_now / max(seconds, 1e-9))
    return parts.finish({**asdict(job), **signals, "rows": int(signals["rows"]), "run_id": run_id})
