"""Prefect flows: ``train_level1``, ``train_fusion``, ``stack_and_publish`` and ``retrain``.

``retrain`` is the whole pipeline as tasks: check catalog -> train each level-1 model -> fusion ->
stack (with its test evaluation) -> promote, all nested under one MLflow parent run, with a markdown
summary artifact in Prefect. A model whose inputs did not change is not trained again: the step
finds its registered version through MLflow tags (see ``mmpc.pipeline.training_key``), which works
on any machine and after Prefect's own result store is gone. Prefect's result cache is not used for
the same purpose because a cached result can name a model version deleted from the registry since.

Guard rails. One retrain at a time per Prefect server: the flow holds the one slot of the global
concurrency limit ``mmpc-retrain`` (created with one slot on first use) for its whole run, so a
second retrain, scheduled, triggered or started by hand with ``python -m flows retrain``, waits for
the first, then runs (reusing what the first registered); past the recipe's
``timeouts.slot_wait_seconds`` it fails instead, naming the limit. Only ``retrain`` takes the slot:
the level-1 runs it starts on a work pool and the tasks of its worker processes never wait on it.
Time limits come from the recipe's ``timeouts`` section: each step is a task with Prefect's
``timeout_seconds``, and the pipeline runs under Prefect's timeout scope of
``timeouts.retrain_flow_seconds`` from when the slot is held (the recipe is a parameter of the run, so
the limit cannot sit on the flow's decorator). A step past its limit is not retried; the flow run
fails (state TimedOut) with an error naming the step and the limit. A failed or crashed retrain posts
one alert to ``MMPC_ALERT_WEBHOOK`` (flows/alerts.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.flow_engine import FlowRunTimeoutError
from prefect.futures import wait
from prefect.task_engine import TaskRunTimeoutError
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.tasks import Task, exponential_backoff
from prefect.utilities.timeout import timeout

from flows.alerts import STEP_NOTE, notify_failure
from flows.report import summary_markdown
from mmpc import descriptions, evaluation, kinds, outages, pipeline
from mmpc import tags as tag
from mmpc.catalog import CatalogError
from mmpc.locations import DEFAULT_WORKDIR, LocationError
from mmpc.models import pretrained
from mmpc.recipe import Recipe, RecipeError, load_recipe

# Faults worth a retry: the tracking server, the object store or the catalog's bucket briefly
# unreachable (the MLflow and boto3 clients wrap those in their own exceptions).
TRANSIENT = (ConnectionError, TimeoutError)
# Backoff before retry n: factor * 2**n seconds (10 s, 20 s by default), jittered by Prefect.
RETRY_BACKOFF = float(os.environ.get("MMPC_RETRY_BACKOFF_SECONDS", "10"))
# The global concurrency limit every retrain holds: one at a time per Prefect server.
RETRAIN_SLOT = "mmpc-retrain"


class StepTimeout(TimeoutError):
    """A step of the pipeline ran past the time limit its recipe gives it."""


class RetrainTimeout(TimeoutError):
    """The pipeline ran past the recipe's ``timeouts.retrain_flow_seconds``."""


class RetrainSlotBusy(RuntimeError):
    """Another retrain held the ``mmpc-retrain`` slot for longer than this one may wait."""


# What stops a retrain on purpose (``python -m flows retrain`` reports them as one line, exit 4).
GUARD_RAILS = (StepTimeout, RetrainTimeout, RetrainSlotBusy)


class _Expired(TimeoutError):
    pass


def _transient(task_, task_run, state) -> bool:
    try:
        state.result()
    except (TaskRunTimeoutError, FlowRunTimeoutError):  # a step past its limit is stuck, not unlucky
        return False
    except TRANSIENT:
        return True
    except (CatalogError, RecipeError, LocationError):  # bad input stays bad, whatever its message says
        return False
    except Exception as exc:
        return outages.outage_message(exc) is not None
    return False


RETRYING = {
    "cache_policy": NO_CACHE,
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BACKOFF),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _transient,
}


def _recipe(recipe: str, overrides: dict[str, Any] | None) -> Recipe:
    return load_recipe(recipe, overrides)


def _catalog(catalog: str, recipe: Recipe, workdir: str):
    return pipeline.open_catalog(catalog, recipe, workdir)


def _limited(task_: Task, r: Recipe) -> Task:
    """``task_`` with the time limit the recipe gives its step."""
    return task_.with_options(timeout_seconds=r.timeouts.for_step(task_.name))


@contextmanager
def _step(name: str, r: Recipe, task_: Task) -> Iterator[None]:
    """Notes the step on the exception it raised (the failure alert reads it), and turns a step's
    timeout into an error naming the step, its limit and the recipe key that sets it."""
    try:
        yield
    except TaskRunTimeoutError as exc:
        seconds = r.timeouts.for_step(task_.name)
        key = f"steps.{task_.name}" if task_.name in r.timeouts.steps else "task_seconds"
        err = StepTimeout(f"step {name} ran past its time limit of {seconds:g} s (recipe timeouts.{key})")
        err.add_note(f"{STEP_NOTE}{name}")
        raise err from exc
    except BaseException as exc:
        if not any(n.startswith(STEP_NOTE) for n in getattr(exc, "__notes__", ())):
            exc.add_note(f"{STEP_NOTE}{name}")
        raise


def _call(task_: Task, r: Recipe, step: str | None = None, **kwargs: Any) -> Any:
    """Run one step of the pipeline under its time limit."""
    with _step(step or task_.name, r, task_):
        return _limited(task_, r)(**kwargs)


@task(name="check-catalog", **RETRYING)
def check_catalog(
    catalog: str, recipe: str, overrides: dict[str, Any] | None = None, workdir: str = DEFAULT_WORKDIR
) -> dict[str, Any]:
    """Validate the catalog before any training; a broken catalog stops the flow here."""
    r = _recipe(recipe, overrides)
    cat = _catalog(catalog, r, workdir)
    for name, cfg in r.models.items():  # a missing or wrong checkpoint stops the flow here too
        pretrained.check(name, cfg)
    counts = cat.frame["split"].value_counts().to_dict()
    logger = get_run_logger()
    logger.info("catalog %s: %d products, splits %s", cat.name, len(cat.frame), counts)
    if len(cat.dropped):
        logger.warning(
            "catalog %s: left out %d invalid row(s) (catalog.drop_invalid), listed in the runs' "
            "data/dropped_rows.csv:\n%s",
            cat.name,
            len(cat.dropped),
            cat.dropped.head(50).to_string(index=False),
        )
    return {
        "name": cat.name,
        "rows": len(cat.frame),
        "dropped_rows": len(cat.dropped),
        "splits": counts,
        "fingerprint": cat.fingerprint(),
    }


@task(name="train-model", task_run_name="train-{model}", **RETRYING)
def train_model(
    catalog: str,
    recipe: str,
    model: str,
    workdir: str,
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    input_versions: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and register one level-1 model, or reuse the version trained on the same
    inputs. A retry after a crash resumes from the training's last checkpoint."""
    r = _recipe(recipe, overrides)
    result = pipeline.train_level1(
        _catalog(catalog, r, workdir),
        r,
        model,
        Path(workdir),
        parent_run_id=parent_run_id,
        input_versions=input_versions,
        reuse=not force,
    )
    return asdict(result)


@task(name="train-model-on-pool", task_run_name="train-{model}-on-pool", cache_policy=NO_CACHE)
def train_model_on_pool(
    deployment: str,
    catalog: str,
    recipe: str,
    model: str,
    workdir: str,
    overrides: dict[str, Any] | None = None,
    input_versions: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run the ``train_level1`` deployment (a GPU work pool) for one model and wait for it; the
    version it registered is then found through MLflow, so no result storage is shared."""
    params = {
        "model": model,
        "catalog": catalog,
        "recipe": recipe,
        "workdir": workdir,
        "overrides": overrides,
        "input_versions": input_versions,
        "force": force,
    }
    run = run_deployment(deployment, parameters=params, flow_run_name=f"train-{model}", as_subflow=True)
    if not run.state or not run.state.is_completed():
        raise RuntimeError(
            f"{deployment} for {model}: flow run {run.id} ended {run.state and run.state.name}"
        )
    r = _recipe(recipe, overrides)
    found = pipeline.find_level1(_catalog(catalog, r, workdir), r, model, input_versions)
    if found is None:
        raise RuntimeError(f"{deployment} for {model}: flow run {run.id} completed but registered nothing")
    return asdict(found)


@task(name="stack-and-publish", **RETRYING)
def publish(
    catalog: str,
    recipe: str,
    workdir: str,
    versions: dict[str, str],
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Stack the level-1 versions, evaluate on ``test`` and publish mmpc-ensemble (@candidate), or
    reuse the ensemble already published from the same members and data."""
    r = _recipe(recipe, overrides)
    result = pipeline.stack_and_publish(
        _catalog(catalog, r, workdir),
        r,
        Path(workdir),
        versions,
        parent_run_id=parent_run_id,
        promote=False,
        reuse=not force,
    )
    return asdict(result)


@task(name="evaluate", **RETRYING)
def evaluate_ensemble(
    catalog: str,
    recipe: str,
    workdir: str,
    version: str,
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Evaluate the published ensemble on ``test``: an MLflow evaluation run linked to the version
    and nested under the retrain's run, with per-class figures, the confusion matrix and the rows it
    got wrong; the version's description links it."""
    r = _recipe(recipe, overrides)
    cat = _catalog(catalog, r, workdir)
    ev = evaluation.run_evaluation(
        "ensemble", version, cat, "test", Path(workdir), parent_run_id=parent_run_id
    )
    worst = ev.evaluation.worst.head(3)
    return {
        "run_id": ev.run_id,
        "macro_f1": ev.evaluation.scores["macro_f1"],
        "weighted_f1": ev.evaluation.scores["weighted_f1"],
        "worst": [
            f"{t.true} {t.true_name} → {t.predicted} {t.predicted_name} ({t.count})"
            for t in worst.itertuples()
        ],
    }


@task(name="promote", **RETRYING)
def promote(
    catalog: str,
    recipe: str,
    workdir: str,
    version: str,
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Move @champion to the new ensemble when it is at least as good on the same test split; the
    decision is recorded on the retrain's run ``parent_run_id`` too."""
    r = _recipe(recipe, overrides)
    cat = _catalog(catalog, r, workdir)
    decision = pipeline.promote_version(cat, Path(workdir), version, pipeline_run_id=parent_run_id)
    return asdict(decision)


@flow(name="train_level1", log_prints=True)
def train_level1(
    model: str,
    catalog: str,
    recipe: str = "demo",
    workdir: str = DEFAULT_WORKDIR,
    overrides: dict[str, Any] | None = None,
    input_versions: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and register one level-1 model (fusion models name their input versions)."""
    r = _recipe(recipe, overrides)
    args = {"catalog": catalog, "recipe": recipe, "workdir": workdir, "overrides": overrides}
    return _call(
        train_model, r, f"train-{model}", model=model, input_versions=input_versions, force=force, **args
    )


@flow(name="train_fusion", log_prints=True)
def train_fusion(
    inputs: dict[str, str],
    catalog: str,
    recipe: str = "demo",
    workdir: str = DEFAULT_WORKDIR,
    model: str = "fusion",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the fusion head over registered text and image versions (``{"flaubert": "3", ...}``)."""
    r = _recipe(recipe, overrides)
    args = {"catalog": catalog, "recipe": recipe, "workdir": workdir, "overrides": overrides}
    return _call(train_model, r, f"train-{model}", model=model, input_versions=inputs, **args)


@flow(name="stack_and_publish", log_prints=True)
def stack_and_publish(
    versions: dict[str, str],
    catalog: str,
    recipe: str = "demo",
    workdir: str = DEFAULT_WORKDIR,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stack registered level-1 versions, publish mmpc-ensemble, promote it if it is at least as good."""
    r = _recipe(recipe, overrides)
    args = {"catalog": catalog, "recipe": recipe, "workdir": workdir, "overrides": overrides}
    published = _call(publish, r, versions=versions, **args)
    decision = _call(promote, r, version=published["version"], **args)
    return {**published, **decision}


def _use_api(api_url: str) -> None:
    os.environ["PREFECT_API_URL"] = api_url


def _train_stage(
    r: Recipe,
    names: list[str],
    inputs_of: dict[str, dict[str, str] | None],
    common: dict[str, Any],
    parent: str,
    parallel: int,
    level1_deployment: str | None,
) -> dict[str, dict]:
    """Train ``names`` (independent of each other), one after the other, ``parallel`` at a time in
    worker processes of this machine, or each as a run of ``level1_deployment`` on its work pool."""
    if level1_deployment:
        with ThreadPoolTaskRunner(max_workers=max(len(names), 1)) as runner:
            futures = {
                n: runner.submit(
                    _limited(train_model_on_pool, r),
                    {"deployment": level1_deployment, "model": n, "input_versions": inputs_of[n], **common},
                )
                for n in names
            }
            return _results(futures, "train-{}-on-pool", r, train_model_on_pool)
    if parallel > 1 and len(names) > 1:
        # Processes, not threads: each training owns its RNG, torch threads and MLflow run. They
        # report to this flow's Prefect API, also when it is an ephemeral or test server.
        api_url = str(get_client(sync_client=True).api_url)
        pool = ProcessPoolTaskRunner(
            max_workers=min(parallel, len(names)), initializer=_use_api, initargs=(api_url,)
        )
        with pool as runner:
            futures = {
                n: runner.submit(
                    _limited(train_model, r),
                    {"model": n, "input_versions": inputs_of[n], "parent_run_id": parent, **common},
                )
                for n in names
            }
            return _results(futures, "train-{}", r, train_model)
    return {
        n: _call(
            train_model, r, f"train-{n}", model=n, input_versions=inputs_of[n], parent_run_id=parent, **common
        )
        for n in names
    }


def _results(futures: dict[str, Any], step: str, r: Recipe, task_: Task) -> dict[str, dict]:
    """The futures' results, a failure named by its step."""
    wait(list(futures.values()))
    out = {}
    for n, f in futures.items():
        with _step(step.format(n), r, task_):
            out[n] = f.result()
    return out


def _train_level1(
    r: Recipe,
    base: list[str],
    fusions: list[str],
    common: dict[str, Any],
    parent: str,
    parallel: int,
    level1_deployment: str | None,
) -> dict[str, dict]:
    """The models reading no other first, then those reading them (fusion) over the versions they
    registered."""
    results = _train_stage(r, base, dict.fromkeys(base), common, parent, parallel, level1_deployment)
    versions = {n: res["version"] for n, res in results.items()}
    fusion_inputs = {
        n: {m: versions[m] for m in kinds.of(r.models[n]).inputs(r.models[n]) if m in versions}
        for n in fusions
    }
    results.update(_train_stage(r, fusions, fusion_inputs, common, parent, parallel, level1_deployment))
    for name, res in results.items():
        decision = "reused" if res["reused"] else "trained"
        get_run_logger().info("%s: mmpc-%s v%s %s", name, name, res["version"], decision)
    return results


def _slot_busy() -> bool:
    """Whether another retrain holds the slot; creates the limit (one slot) where it does not exist,
    since Prefect runs the code under a missing limit without any guard. A limit an administrator
    set otherwise (more slots, inactive) is left as it is."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(RETRAIN_SLOT)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another retrain created it just now
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=RETRAIN_SLOT, limit=1)
                )
            return False
    return bool(limit.active and limit.active_slots >= limit.limit)


@contextmanager
def _retrain_slot(wait_seconds: float | None) -> Iterator[None]:
    """Hold the one slot of the ``mmpc-retrain`` limit, waiting at most ``wait_seconds`` for it."""
    if _slot_busy():
        wait_text = "as long as it takes" if wait_seconds is None else f"up to {wait_seconds:g} s"
        get_run_logger().info("another retrain holds the %s slot: waiting %s", RETRAIN_SLOT, wait_text)
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(RETRAIN_SLOT, occupy=1, timeout_seconds=wait_seconds))
        except TimeoutError as exc:
            raise RetrainSlotBusy(
                f"another retrain held the {RETRAIN_SLOT} concurrency slot for the {wait_seconds:g} s this "
                "one may wait (recipe timeouts.slot_wait_seconds)"
            ) from exc
        yield


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Prefect's timeout scope over the pipeline (the one its flow engine puts around a flow). Its
    expiry cancels the step then running, which Prefect reports as that step's own timeout: past the
    deadline, a step's timeout is the pipeline's."""
    deadline = time.monotonic() + seconds if seconds is not None else None
    try:
        with timeout(seconds, timeout_exc_type=_Expired):
            yield
    except (_Expired, StepTimeout) as exc:
        if isinstance(exc, StepTimeout) and (deadline is None or time.monotonic() < deadline):
            raise
        raise RetrainTimeout(
            f"the retrain ran past its time limit of {seconds:g} s (recipe timeouts.retrain_flow_seconds)"
        ) from exc


@flow(name="retrain", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def retrain(
    catalog: str,
    recipe: str = "demo",
    workdir: str = DEFAULT_WORKDIR,
    models: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    parallel: int = 1,
    level1_deployment: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """The whole pipeline on a catalog (a folder or ``s3://bucket/prefix``): data check, level-1
    models (``parallel`` at a time on this machine, or on a work pool through
    ``level1_deployment``), fusion, stacking, promotion. Unchanged steps reuse their registered
    versions unless ``force``. One retrain runs at a time; the recipe's ``timeouts`` bound it."""
    r = _recipe(recipe, overrides)
    common = {
        "catalog": catalog,
        "recipe": recipe,
        "workdir": workdir,
        "overrides": overrides,
        "force": force,
    }
    with _retrain_slot(r.timeouts.slot_wait_seconds), _time_limit(r.timeouts.retrain_flow_seconds):
        return _pipeline(r, common, models, parallel, level1_deployment)


def _describe_retrain(parent: str, results: dict[str, dict], published: dict[str, Any] | None) -> None:
    """The retrain run's description (Table 1, the decision); for a failed retrain, best effort: the
    error that stopped it is the one to report."""
    try:
        descriptions.describe_retrain(parent, results, published)
    except Exception:
        if published:
            raise
        get_run_logger().warning("could not describe the failed retrain's run %s", parent, exc_info=True)


def _pipeline(
    r: Recipe, common: dict[str, Any], models: list[str] | None, parallel: int, level1_deployment: str | None
) -> dict[str, Any]:
    """The steps, in order, each under its time limit."""
    logger = get_run_logger()
    base, fusions = pipeline.level1_order(r, models)
    catalog, recipe, workdir, overrides = (common[k] for k in ("catalog", "recipe", "workdir", "overrides"))
    summary = _call(check_catalog, r, catalog=catalog, recipe=recipe, overrides=overrides, workdir=workdir)
    parent = pipeline.start_pipeline_run(_catalog(catalog, r, workdir), r, Path(workdir))
    args = {"catalog": catalog, "recipe": recipe, "workdir": workdir, "overrides": overrides}
    ok = False
    results: dict[str, dict] = {}
    published: dict[str, Any] = {}
    try:
        results = _train_level1(r, base, fusions, common, parent, parallel, level1_deployment)
        versions = {n: res["version"] for n, res in results.items()}
        published = _call(publish, r, versions=versions, parent_run_id=parent, force=common["force"], **args)
        if not published["reused"]:  # an unchanged ensemble keeps the evaluation it had
            published["evaluation"] = _call(
                evaluate_ensemble, r, version=published["version"], parent_run_id=parent, **args
            )
        published.update(_call(promote, r, version=published["version"], parent_run_id=parent, **args))
        ok = True
    finally:
        pipeline.end_pipeline_run(
            parent,
            ok,
            {"stack_test_macro_f1": published["scores"]["stack"]} if ok else None,
            tags={tag.ENSEMBLE_VERSION: published["version"]} if ok else None,
        )
        _describe_retrain(parent, results, published if ok else None)
    markdown = summary_markdown(summary, results, published, parent)
    create_markdown_artifact(
        markdown, key="retrain-summary", description="test macro-F1 and promotion decision"
    )
    logger.info("\n%s", published["table"])
    return {"catalog": summary, "level1": results, "ensemble": published, "parent_run_id": parent}
