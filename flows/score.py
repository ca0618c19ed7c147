"""The nightly scoring flow: the champion over the products that are new or changed since it last
scored them (found by content), into a dated Parquet folder, with a summary artifact in Prefect.

    <root>/scored_products.parquet    productid, content digest, version: what has been scored
    <root>/<YYYYmmdd-HHMMSS>/         one night's parts and manifest (mmpc.scoring.parts)

A failed or crashed run posts one alert to ``MMPC_ALERT_WEBHOOK`` (flows/alerts.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.alerts import notify_failure
from flows.retrain import RETRYING
from mmpc import scoring, tracking
from mmpc.locations import DEFAULT_WORKDIR
from mmpc.scoring import changes
from mmpc.scoring.sources import open_source


@task(name="find-changed-products", **RETRYING)
def find_changed(catalog: str, root: str, workdir: str, model: str, version: str) -> dict[str, Any]:
    tracking.configure(workdir)
    resolved = str(tracking.resolve(model, version).version)
    source = open_source(catalog, Path(workdir) / "catalogs")
    delta = changes.select(source, Path(root), resolved, Path(workdir) / "scoring" / "delta")
    return {"delta": delta, "version": resolved, "image_root": source.image_root}


@task(name="score-products", **RETRYING)
def score_products(found: dict[str, Any], out: str, workdir: str, model: str, engine: str) -> dict[str, Any]:
    delta = found["delta"]
    manifest = scoring.score(
        delta.products, out, workdir, model, found["version"], engine=engine, image_root=found["image_root"]
    )
    changes.record(Path(out).parent, delta, found["version"])  # only once the manifest is written
    return manifest


def summary_markdown(catalog: str, found: dict[str, Any], manifest: dict[str, Any] | None, out: str) -> str:
    delta = found["delta"]
    lines = [
        f"# mmpc nightly scoring: {catalog}",
        "",
        f"{delta.total} products, {delta.changed} new or changed since v{found['version']} last scored them.",
    ]
    if manifest is None:
        return "\n".join([*lines, "", "Nothing to score."])
    signals = {k: manifest[k] for k in ("mean_confidence", "under_confidence_share", "image_invalid_share")}
    drift = manifest.get("class_mix_js_distance")
    lines += [
        "",
        f"Scored {manifest['rows']} into `{out}` with {manifest['model']} v{manifest['version']} "
        f"([MLflow run]({tracking.run_link(manifest['run_id'])})).",
        "",
        "| signal | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in signals.items()),
        f"| class mix drift (Jensen-Shannon distance to training) | {drift:.4f} |"
        if drift is not None
        else "",
    ]
    return "\n".join(lines)


@flow(name="score", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def score(
    catalog: str,
    root: str,
    workdir: str = DEFAULT_WORKDIR,
    model: str = "ensemble",
    version: str = "@champion",
    engine: str = "local",
) -> dict[str, Any]:
    """Score the new and changed products of ``catalog`` (a folder or ``s3://`` prefix) with a
    registered version into a dated folder under ``root``."""
    logger = get_run_logger()
    found = find_changed(catalog, root, workdir, model, version)
    out = str(Path(root) / datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    manifest = score_products(found, out, workdir, model, engine) if found["delta"].changed else None
    markdown = summary_markdown(catalog, found, manifest, out)
    create_markdown_artifact(markdown, key="score-summary", description="new and changed products scored")
    logger.info("\n%s", markdown)
    return {
        "total": found["delta"].total,
        "changed": found["delta"].changed,
        "manifest": manifest,
        "output": out,
    }
