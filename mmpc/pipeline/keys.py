"""What a trained or published model depends on, hashed: equal keys mean an equal model, whatever
machine made it. The keys are MLflow tags, so reuse works across machines and restarts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import mmpc
from mmpc.catalog import Catalog
from mmpc.models import pretrained
from mmpc.recipe import Recipe


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(mmpc.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{mmpc.__version__}+{sha}" if sha else mmpc.__version__


def _digest(key: dict, length: int = 32) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:length]


def training_key(
    catalog: Catalog, recipe: Recipe, name: str, input_versions: dict[str, str] | None = None
) -> str:
    """Everything a level-1 model's training and reported scores depend on: its recipe section, the
    digests of a local checkpoint's files, the seed, the code version, the label set, the content of
    the splits it reads, and the registered versions of the models it reads (fusion's inputs)."""
    return _digest(
        {
            "model": recipe.to_dict()["models"][name],
            "checkpoint": pretrained.fingerprint(recipe.model(name)),
            "seed": recipe.seed,
            "code": code_version(),
            "labels": list(catalog.labels.codes),
            "data": {s: catalog.fingerprint([s]) for s in ("train", "valid", "test")},
            "inputs": {n: str(v) for n, v in (input_versions or {}).items()},
        }
    )


def publish_key(catalog: Catalog, recipe: Recipe, versions: dict[str, str]) -> str:
    """What a published ensemble depends on: its members, the stacking and ensemble recipes, the
    seed, the code version and the content of the ``stack`` and ``test`` splits."""
    cfg = recipe.to_dict()
    return _digest(
        {
            "members": {n: str(v) for n, v in versions.items()},
            "stacking": cfg["stacking"],
            "ensemble": cfg["ensemble"],
            "seed": recipe.seed,
            "code": code_version(),
            "labels": list(catalog.labels.codes),
            "data": {s: catalog.fingerprint([s]) for s in ("stack", "test")},
        }
    )


def checkpoint_folder(
    workdir: Path, catalog: Catalog, recipe: Recipe, name: str, input_versions: dict[str, str] | None
) -> Path:
    """Where a training's checkpoints live: keyed by everything that defines the training, so the
    same command finds them again and a changed recipe or catalog starts afresh."""
    key = {
        "model": recipe.to_dict()["models"][name],
        "seed": recipe.seed,
        "data": catalog.fingerprint(["train", "valid"]),
        "inputs": input_versions or {},
    }
    return Path(workdir).resolve() / "checkpoints" / catalog.name / f"{name}-{_digest(key, 16)}"
