"""The level-1 step: train one model of the recipe in its own MLflow run, evaluate it on ``valid`` and
``test``, and register it; or find the version already trained on the same inputs, or resume an
interrupted training from its checkpoint."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch
from mlflow.data.dataset import Dataset
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

import mmpc
from mmpc import kinds, orphans, run_names, tracking
from mmpc import tags as tag
from mmpc.catalog import Catalog
from mmpc.models import pretrained
from mmpc.models.batching import resolve_device
from mmpc.pipeline import runs
from mmpc.pipeline.inference import download_level1, predict_rows, request_example
from mmpc.pipeline.keys import checkpoint_folder, training_key
from mmpc.recipe import ModelConfig, Recipe
from mmpc.serving import level1_signature
from mmpc.training import distributed
from mmpc.training.engine import FitResult, seed_everything
from mmpc.training.level1 import RunOptions

log = logging.getLogger(__name__)

PYFUNC_DIR = Path(mmpc.__file__).resolve().parent / "pyfunc"
SPLITS = ("train", "valid", "test")  # what a level-1 run trains on, stops early on, and is scored on


@dataclass
class Level1Result:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # an earlier version trained on the same inputs was found and kept


@dataclass
class Level1Job:
    """One level-1 training: what it reads, its keys, and an interrupted run of it, if any."""

    catalog: Catalog
    recipe: Recipe
    name: str
    cfg: ModelConfig
    device: torch.device
    experiment: str | None  # rank 0 only
    key: str  # the training key: equal keys, equal model
    checkpoint: Path
    checkpoint_key: str
    input_versions: dict[str, str] | None
    resume_id: str | None = None
    registered: ModelVersion | None = None  # registered by the interrupted run before it died

    @property
    def codes(self) -> list[int]:
        return list(self.catalog.labels.codes)


def find_level1(
    catalog: Catalog, recipe: Recipe, name: str, input_versions: dict[str, str] | None = None
) -> Level1Result | None:
    """The registered version of ``name`` trained on exactly these inputs, if there is one."""
    return _reused(name, training_key(catalog, recipe, name, input_versions))


def _reused(name: str, key: str) -> Level1Result | None:
    mv = tracking.find_version(name, tag.TRAIN_KEY, key)
    if mv is None:
        return None
    metrics = dict(MlflowClient().get_run(mv.run_id).data.metrics) if mv.run_id else {}
    log.info("%s: inputs unchanged, reusing %s v%s (run %s)", name, mv.name, mv.version, mv.run_id)
    return Level1Result(name, str(mv.version), mv.run_id or "", metrics, reused=True)


def level1_order(recipe: Recipe, names: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(models reading no other model, models reading others' embeddings such as fusion) of the
    recipe, optionally restricted to ``names``: the second group trains after the first."""
    chosen = list(names) if names else list(recipe.models)
    unknown = [n for n in chosen if n not in recipe.models]
    if unknown:
        raise ValueError(
            f"unknown model(s) {unknown}; the recipe {recipe.name!r} has {sorted(recipe.models)}"
        )
    reads = {n: kinds.of(recipe.models[n]).inputs(recipe.models[n]) for n in chosen}
    return [n for n in chosen if not reads[n]], [n for n in chosen if reads[n]]


def _prepare(
    catalog: Catalog, recipe: Recipe, name: str, workdir: Path, input_versions: dict[str, str] | None
) -> Level1Job:
    device = distributed.device_for_rank(resolve_device(recipe.device))
    # Rank 0 creates the store and experiment before other ranks read it (SQLite cannot be
    # initialised by two processes at once).
    exp = tracking.experiment_id(catalog.name, workdir) if distributed.is_main() else None
    distributed.barrier()
    ckpt = checkpoint_folder(workdir, catalog, recipe, name, input_versions)
    job = Level1Job(
        catalog, recipe, name, recipe.model(name), device, exp,
        training_key(catalog, recipe, name, input_versions), ckpt, f"{catalog.name}/{ckpt.name}",
        input_versions,
    )  # fmt: skip
    job.resume_id, job.registered = runs.resumable_run(ckpt, job.checkpoint_key, exp)
    return job


def train_level1(
    catalog: Catalog,
    recipe: Recipe,
    name: str,
    workdir: Path,
    *,
    parent_run_id: str | None = None,
    input_versions: dict[str, str] | None = None,
    reuse: bool = True,
) -> Level1Result | None:
    """Train one level-1 model on ``train`` (early stopping on ``valid``), evaluate it on ``valid`` and
    ``test``, log it as a pyfunc and register it as ``mmpc-<name>`` (alias ``candidate``).

    With ``reuse``, a registered version whose training key (see ``training_key``) matches is
    returned instead of training again. Under torchrun every rank trains; rank 0 alone logs,
    evaluates and registers (other ranks return None).
    """
    tracking.configure(workdir)
    pretrained.check(name, recipe.model(name))  # a wrong checkpoint fails here, before a run starts
    seed_everything(recipe.seed)
    job = _prepare(catalog, recipe, name, workdir, input_versions)
    # A version registered by an interrupted run of this training is finished below (alias, run end),
    # not reused half-done.
    if reuse and job.registered is None and (found := _reused(name, job.key)) is not None:
        return found if distributed.is_main() else None
    if job.experiment is not None:  # rank 0: runs left RUNNING by dead processes, but the one resumed
        orphans.fail_orphans(job.experiment, keep={job.resume_id} if job.resume_id else None)
    if not distributed.is_main():
        if job.registered is None:
            with tracking.scratch() as tmp:
                _fit(job, tmp, RunOptions(job.device, recipe.seed, name, checkpoint_dir=job.checkpoint))
        return None
    if job.registered is not None:
        return _finish_registered(job)
    return _train_and_register(job, parent_run_id)


def _finish_registered(job: Level1Job) -> Level1Result:
    """Killed after registering: finish what was left (tags, alias, run end); that version is the result."""
    mv, run_id = job.registered, job.resume_id
    log.info("%s: run %s already registered %s v%s", job.name, run_id, mv.name, mv.version)
    client = MlflowClient()
    orphans.adopt(run_id)
    run = client.get_run(run_id)
    tracking.complete_version(mv, runs.version_tags(run))
    _record_version(job.name, run_id, mv, dict(run.data.metrics))
    if run.info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED")
    shutil.rmtree(job.checkpoint, ignore_errors=True)
    return Level1Result(job.name, str(mv.version), run_id, dict(run.data.metrics))


def _open_run(job: Level1Job, parent_run_id: str | None) -> AbstractContextManager:
    if job.resume_id:
        log.info("%s: resuming MLflow run %s from %s", job.name, job.resume_id, job.checkpoint)
        return tracking.start_training_run(run_id=job.resume_id)  # it keeps its name
    tags = {
        **runs.run_tags(job.recipe, job.catalog, "level1"),
        tag.MODEL: job.name,
        tag.KIND: job.cfg.kind,
        tag.TRAIN_KEY: job.key,
        tag.CHECKPOINT: job.checkpoint_key,
    }
    return tracking.start_training_run(
        experiment_id=job.experiment,
        run_name=run_names.run_name(job.name, job.recipe.seed),
        parent_run_id=parent_run_id,
        tags=tags,
    )


def _run_options(job: Level1Job, run_id: str) -> RunOptions:
    logged_until = runs.last_step(run_id, "epoch_valid_macro_f1") if job.resume_id else 0

    def log_metrics(values: dict[str, float], step: int) -> None:
        # Curves are epoch_*; the unprefixed names hold the kept (best) model's figures, the same
        # names for every kind so the MLflow UI compares them side by side. An epoch logged before
        # an interruption is not logged twice.
        if step > logged_until:
            mlflow.log_metrics({f"epoch_{k}": v for k, v in values.items()}, step=step)

    extra = {"mlflow_run_id": run_id}
    return RunOptions(job.device, job.recipe.seed, job.name, log_metrics, job.checkpoint, extra)


def _fit(job: Level1Job, tmp: Path, opts: RunOptions) -> tuple[FitResult, dict[str, str]]:
    """Train into ``tmp/model``; returns the fit and the registered versions of the models it read."""
    needed = kinds.of(job.cfg).inputs(job.cfg)
    missing = [n for n in needed if n not in (job.input_versions or {})]
    if missing:
        raise ValueError(f"{job.cfg.kind} model {job.name!r} needs registered versions of {missing}")
    versions = {n: str(job.input_versions[n]) for n in needed}
    inputs = download_level1(versions, tmp / "inputs")
    c = job.catalog
    result = kinds.train(job.cfg, c.split("train"), c.split("valid"), job.codes, tmp / "model", opts, inputs)
    return result, versions


def _train_and_register(job: Level1Job, parent_run_id: str | None) -> Level1Result:
    with _open_run(job, parent_run_id) as run, tracking.scratch() as tmp:
        run_id = run.info.run_id
        if job.resume_id:
            orphans.adopt(job.resume_id)
        else:
            recipe = job.recipe
            model_params = recipe.to_dict()["models"][job.name]
            tracking.log_params(
                {"model": job.name, "seed": recipe.seed, "recipe": recipe.name, **model_params}
            )
        tracking.log_catalog(job.catalog)
        datasets = tracking.log_splits(job.catalog, SPLITS)
        result, versions = _fit(job, tmp, _run_options(job, run_id))
        if versions:
            mlflow.set_tags({tag.input_version(n): v for n, v in versions.items()})
        mlflow.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "train_seconds": result.seconds,
            }
        )
        scores = _evaluate(job, tmp / "model", datasets)
        mv = _register(job, run_id, tmp / "model", scores, datasets)
        _record_version(job.name, run_id, mv, scores)
    # The checkpoint (which names the run) goes only once the run is finished: a kill before this
    # point resumes into the registered-version branch above.
    shutil.rmtree(job.checkpoint, ignore_errors=True)
    return Level1Result(job.name, str(mv.version), run_id, scores)


def _evaluate(job: Level1Job, folder: Path, datasets: dict[str, Dataset]) -> dict[str, float]:
    """Scores on ``valid`` and ``test``, logged against those splits' datasets."""
    model = kinds.load(folder, job.device)
    scores = {}
    for split in ("valid", "test"):
        frame = job.catalog.split(split)
        probs = predict_rows(model.predict_proba, frame, model.uses_images)
        y = frame["label"].to_numpy()
        scores.update(tracking.log_evaluation(y, probs, job.codes, split, datasets[split]))
    return scores


def _of_split(scores: dict[str, float], split: str) -> dict[str, float]:
    """``<split>_macro_f1`` and the other scores of one split (not its row count)."""
    return {k: v for k, v in scores.items() if k.startswith(f"{split}_") and k != f"{split}_rows"}


def _record_version(name: str, run_id: str, mv: ModelVersion, scores: dict[str, float]) -> None:
    """The registered version in the run's name and in its ``summary.json``."""
    tracking.name_version(run_id, mv.version)
    tracking.log_summary(run_id, name, scores.get("test_macro_f1"), str(mv.version))


def _register(
    job: Level1Job, run_id: str, folder: Path, scores: dict[str, float], datasets: dict[str, Dataset]
) -> ModelVersion:
    mv = tracking.log_pyfunc(
        PYFUNC_DIR / "level1_model.py",
        {"model": str(folder)},
        model=job.name,
        signature=level1_signature(job.codes),
        input_example=request_example(job.catalog.split("valid")),
        tags=runs.version_tags(MlflowClient().get_run(run_id)),
        params={
            "model": job.name,
            "seed": job.recipe.seed,
            "recipe": job.recipe.name,
            **kinds.key_params(job.cfg),
        },
        scores=[(_of_split(scores, s), datasets[s]) for s in ("valid", "test")],
    )
    log.info(
        "%s: valid macro-F1 %.4f, test macro-F1 %.4f -> %s v%s",
        job.name, scores["valid_macro_f1"], scores["test_macro_f1"], mv.name, mv.version,
    )  # fmt: skip
    return mv
