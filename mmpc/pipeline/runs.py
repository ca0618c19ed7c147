"""MLflow run lifecycle: the pipeline's parent run, the tags every step's run carries, and finding an
interrupted training's run to resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mmpc import orphans, run_names, tracking
from mmpc import tags as tag
from mmpc.catalog import Catalog
from mmpc.pipeline.keys import code_version
from mmpc.recipe import Recipe
from mmpc.training import checkpoint

# Run tags a level-1 version carries too: data fingerprints, inputs and the training key.
_VERSION_TAG_PREFIXES = (
    tag.CATALOG,
    tag.DATA_FINGERPRINT,
    tag.FINGERPRINT_PREFIX,
    tag.INPUT_PREFIX,
    tag.TRAIN_KEY,
)


def run_tags(recipe: Recipe, catalog: Catalog, step: str) -> dict[str, str]:
    return {
        tag.STEP: step,
        tag.RECIPE: recipe.name,
        tag.SEED: str(recipe.seed),
        tag.CODE_VERSION: code_version(),
        tag.CATALOG: catalog.name,
        **orphans.owner_tags(),  # a run whose process died is found and marked FAILED later
    }


def start_pipeline_run(catalog: Catalog, recipe: Recipe, workdir: Path, run_name: str | None = None) -> str:
    """The parent run every step of one pipeline nests under, named ``retrain <recipe> · seed <seed>
    · <start>`` unless ``run_name`` says otherwise; returns its id."""
    tracking.configure(workdir)
    exp = tracking.experiment_id(catalog.name, workdir)
    orphans.fail_orphans(exp)
    with mlflow.start_run(
        experiment_id=exp,
        run_name=run_name or run_names.run_name(f"retrain {recipe.name}", recipe.seed),
        tags=run_tags(recipe, catalog, "pipeline"),
    ) as run:
        tracking.log_params(recipe.to_dict())
        tracking.log_catalog(catalog)
    # The fluent run ended above; reopen it as RUNNING so children can nest until the pipeline ends.
    MlflowClient().update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def end_pipeline_run(
    run_id: str, ok: bool, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None
) -> None:
    """Finish the pipeline's parent run and write its ``summary.json`` (the ensemble's test macro-F1
    and version when it got that far); a failed pipeline also fails the steps still marked RUNNING
    under it (their processes have stopped by now: the flow waits for every step)."""
    client = MlflowClient()
    if not ok:
        orphans.fail_children(run_id, "the pipeline failed before this step finished")
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, value)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    done = client.get_run(run_id).data
    score, version = done.metrics.get("stack_test_macro_f1"), done.tags.get(tag.ENSEMBLE_VERSION)
    tracking.log_summary(run_id, "ensemble", score, version)
    client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def resumable_run(folder: Path, key: str, experiment: str | None) -> tuple[str | None, ModelVersion | None]:
    """The MLflow run of an interrupted training, and its registered version if it got that far.

    The checkpoint names its run; a training killed before its first checkpoint is found by the tag
    its run was created with (an unfinished run of the same checkpoint key) in ``experiment``.
    """
    client = MlflowClient()
    run_id = checkpoint.read_extra(folder).get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None
    if not run_id and experiment:
        unfinished = client.search_runs(
            [experiment],
            f"tags.`{tag.CHECKPOINT}` = '{key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        run_id = unfinished[0].info.run_id if unfinished else None
    if not run_id:
        return None, None
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    return run_id, (versions[0] if versions else None)


def version_tags(run) -> dict[str, str]:
    """A level-1 version's tags, from its run: data fingerprints, kind, scores, inputs."""
    tags, metrics = run.data.tags, run.data.metrics
    return {
        **{k: v for k, v in tags.items() if k.startswith(_VERSION_TAG_PREFIXES)},
        tag.KIND: tags[tag.KIND],
        tag.RUN_ID: run.info.run_id,
        "valid_macro_f1": f"{metrics['valid_macro_f1']:.6f}",
        "test_macro_f1": f"{metrics['test_macro_f1']:.6f}",
    }


def last_step(run_id: str, metric: str) -> int:
    history = MlflowClient().get_metric_history(run_id, metric)
    return max((m.step for m in history), default=0)
