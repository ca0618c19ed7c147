"""Prefect flows: ``train_level1``, ``train_fusion``, ``stack_and_publish`` and ``retrain``.

``retrain`` is the whole pipeline: check the catalog -> train each level-1 model -> fusion ->
stack -> publish and promote, all nested under one MLflow parent run, with a markdown summary
artifact in Prefect.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mmpc import pipeline
from mmpc.recipe import Recipe, load_recipe

# Faults worth a retry: the tracking server or object store briefly unreachable.
TRANSIENT = (ConnectionError, TimeoutError)


def _transient(task_, task_run, state) -> bool:
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception as exc:  # MLflow wraps connection failures in its own exception
        text = str(exc).lower()
        return any(
            s in text for s in ("connection refused", "max retries exceeded", "timed out", "503", "502")
        )
    return False


def _recipe(recipe: str, overrides: dict[str, Any] | None) -> Recipe:
    return load_recipe(recipe, overrides)


@task(name="check-catalog", cache_policy=NO_CACHE)
def check_catalog(catalog: str, recipe: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the catalog before any training; a broken catalog stops the flow here."""
    cat = pipeline.open_catalog(catalog, _recipe(recipe, overrides))
    counts = cat.frame["split"].value_counts().to_dict()
    get_run_logger().info("catalog %s: %d products, splits %s", cat.name, len(cat.frame), counts)
    return {"name": cat.name, "rows": len(cat.frame), "splits": counts, "fingerprint": cat.fingerprint()}


@task(
    name="train-model",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=_transient,
)
def train_model(
    catalog: str,
    recipe: str,
    model: str,
    workdir: str,
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    input_versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    r = _recipe(recipe, overrides)
    result = pipeline.train_level1(
        pipeline.open_catalog(catalog, r),
        r,
        model,
        Path(workdir),
        parent_run_id=parent_run_id,
        input_versions=input_versions,
    )
    return asdict(result)


@task(
    name="stack-and-publish",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=_transient,
)
def publish(
    catalog: str,
    recipe: str,
    workdir: str,
    versions: dict[str, str],
    overrides: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    r = _recipe(recipe, overrides)
    result = pipeline.stack_and_publish(
        pipeline.open_catalog(catalog, r), r, Path(workdir), versions, parent_run_id=parent_run_id
    )
    return asdict(result)


@flow(name="train_level1", log_prints=True)
def train_level1(
    model: str,
    catalog: str,
    recipe: str = "demo",
    workdir: str = "mmpc-work",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register one text or image level-1 model."""
    return train_model(catalog, recipe, model, workdir, overrides)


@flow(name="train_fusion", log_prints=True)
def train_fusion(
    inputs: dict[str, str],
    catalog: str,
    recipe: str = "demo",
    workdir: str = "mmpc-work",
    model: str = "fusion",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the fusion head over registered text and image versions (``{"flaubert": "3", ...}``)."""
    return train_model(catalog, recipe, model, workdir, overrides, input_versions=inputs)


@flow(name="stack_and_publish", log_prints=True)
def stack_and_publish(
    versions: dict[str, str],
    catalog: str,
    recipe: str = "demo",
    workdir: str = "mmpc-work",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stack registered level-1 versions, publish mmpc-ensemble, promote it if it is at least as good."""
    return publish(catalog, recipe, workdir, versions, overrides)


def summary_markdown(
    catalog: dict[str, Any], results: dict[str, dict], published: dict[str, Any], tracking_uri: str
) -> str:
    lines = [
        f"# mmpc retrain: {catalog['name']}",
        f"{catalog['rows']} products, fingerprint `{catalog['fingerprint'][:12]}`,",
        f"splits {catalog['splits']}",
        "",
        "| model | registered version | test macro-F1 |",
        "|---|---|---|",
    ]
    for name, res in results.items():
        score = res["metrics"].get("test_macro_f1", float("nan"))
        lines.append(f"| {name} | mmpc-{name} v{res['version']} | {score:.4f} |")
    lines.append(
        f"| **stack** | mmpc-ensemble v{published['version']} | **{published['scores']['stack']:.4f}** |"
    )
    decision = "promoted to @champion" if published["promoted"] else "kept as @candidate"
    lines += [
        "",
        f"**Decision:** mmpc-ensemble v{published['version']} {decision}: {published['reason']}.",
        f"Current champion: v{published['champion_version']}.",
        "",
        f"MLflow: `{tracking_uri}`, stacking run `{published['run_id']}`.",
    ]
    return "\n".join(lines)


@flow(name="retrain", log_prints=True)
def retrain(
    catalog: str,
    recipe: str = "demo",
    workdir: str = "mmpc-work",
    models: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole pipeline on a catalog: data check, level-1 models, fusion, stacking, promotion."""
    logger = get_run_logger()
    r = _recipe(recipe, overrides)
    base, fusions = pipeline.level1_order(r, models)
    summary = check_catalog(catalog, recipe, overrides)
    cat = pipeline.open_catalog(catalog, r)
    parent = pipeline.start_pipeline_run(cat, r, Path(workdir))
    ok = False
    try:
        results: dict[str, dict] = {}
        for name in base:
            results[name] = train_model(catalog, recipe, name, workdir, overrides, parent_run_id=parent)
        versions = {n: res["version"] for n, res in results.items()}
        for name in fusions:
            cfg = r.models[name]
            inputs = {n: versions[n] for n in [*cfg.text, cfg.image] if n in versions}
            results[name] = train_model(
                catalog, recipe, name, workdir, overrides, parent_run_id=parent, input_versions=inputs
            )
        versions = {n: res["version"] for n, res in results.items()}
        published = publish(catalog, recipe, workdir, versions, overrides, parent_run_id=parent)
        ok = True
    finally:
        pipeline.end_pipeline_run(
            parent, ok, {"stack_test_macro_f1": published["scores"]["stack"]} if ok else None
        )
    import mlflow

    markdown = summary_markdown(summary, results, published, mlflow.get_tracking_uri())
    create_markdown_artifact(
        markdown, key="retrain-summary", description="test macro-F1 and promotion decision"
    )
    logger.info("\n%s", published["table"])
    return {"catalog": summary, "level1": results, "ensemble": published, "parent_run_id": parent}
