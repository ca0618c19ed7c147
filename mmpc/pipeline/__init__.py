"""The pipeline's steps, each one MLflow run: level-1 training, stacking and publication, promotion.

Steps take plain arguments (a catalog path, a recipe, a work folder, version numbers) so a scheduler
can run each of them in its own process or machine; ``flows/`` wraps them as Prefect tasks.

Modules, by concern: ``keys`` (what a model depends on, hashed), ``runs`` (MLflow run lifecycle),
``inference`` (level-1 models over catalog rows), ``level1`` (the level-1 step), ``publish`` (stack
and publish), ``promote`` (promotion, with re-scoring). This package's namespace is the steps' API.
"""

from __future__ import annotations

from pathlib import Path

from mmpc import locations
from mmpc.catalog import Catalog, read_catalog
from mmpc.pipeline.inference import CHUNK, predict_rows, request_example
from mmpc.pipeline.keys import checkpoint_folder, code_version, publish_key, training_key
from mmpc.pipeline.level1 import Level1Result, find_level1, level1_order, train_level1
from mmpc.pipeline.promote import decide_promotion, promote_version
from mmpc.pipeline.publish import PublishResult, stack_and_publish
from mmpc.pipeline.runs import end_pipeline_run, start_pipeline_run
from mmpc.recipe import Recipe

__all__ = [
    "CHUNK",
    "Level1Result",
    "PublishResult",
    "checkpoint_folder",
    "code_version",
    "decide_promotion",
    "end_pipeline_run",
    "find_level1",
    "level1_order",
    "open_catalog",
    "predict_rows",
    "promote_version",
    "publish_key",
    "request_example",
    "stack_and_publish",
    "start_pipeline_run",
    "train_level1",
    "training_key",
]


def open_catalog(path: str | Path, recipe: Recipe, workdir: str | Path | None = None) -> Catalog:
    """A catalog folder, or an ``s3://bucket/prefix`` mirrored under ``<workdir>/catalogs`` first."""
    local = locations.materialize(path, Path(workdir or ".") / "catalogs")
    return read_catalog(
        local,
        splits=recipe.split_spec(),
        images=recipe.catalog.images,
        drop_invalid=recipe.catalog.drop_invalid,
    )
