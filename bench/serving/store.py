"""The models the serving benchmark serves, and the requests it sends them.

By default a demo catalog is written and the whole ``retrain`` flow runs with the recipe (``demo+fast``:
the demo's architectures with fewer epochs and rounds) into a temporary store; a store that already
holds models (``demo/`` after ``make demo``) is reused as it is.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.serving.common import log


@dataclass
class Store:
    uri: str
    catalog: Path
    ensemble_version: str
    members: list[str]  # stacking order
    versions: dict[str, str]  # level-1 name -> registered version
    ensemble_dir: Path  # the downloaded pyfunc folder of mmpc-ensemble
    codes: list[int] = field(default_factory=list)

    @property
    def ensemble_folder(self) -> Path:
        """The mmpc ensemble folder inside the pyfunc (members, booster, manifest)."""
        return self.ensemble_dir / "artifacts" / "ensemble"


def build_store(workdir: Path, recipe: str, size: int, seed: int) -> Path:
    """A demo catalog and the whole ``retrain`` flow into ``workdir``; returns the catalog."""
    import torch
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain
    from mmpc.demo_catalog import write_demo_catalog

    catalog = write_demo_catalog(workdir / "catalog", size=size, seed=seed)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)  # the temporary store, never the caller's
    # One torch thread while training: with two, a busy neighbour job made the build 5x slower here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with prefect_test_harness():
            retrain(catalog=str(catalog), recipe=recipe, workdir=str(workdir))
    finally:
        torch.set_num_threads(threads)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return catalog


def open_store(workdir: Path, catalog: Path, scratch: Path, alias: str) -> Store:
    """The ensemble version behind ``alias`` (champion, else candidate), its members, its folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mmpc import ensemble, tracking

    uri = tracking.configure(workdir)  # the workdir's SQLite store, or MLFLOW_TRACKING_URI
    try:
        mv = tracking.resolve("ensemble", alias)
    except MlflowException:
        mv = tracking.resolve("ensemble", "candidate")
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{mv.name}/{mv.version}", dst_path=str(scratch / "ens"))
    )
    manifest = json.loads((local / "artifacts" / "ensemble" / ensemble.MANIFEST).read_text())
    members = [m["name"] for m in manifest["members"]]
    versions = {
        n: mv.tags.get(f"mmpc.member.{n}") or m["version"]
        for n, m in zip(members, manifest["members"], strict=True)
    }
    return Store(uri, catalog, str(mv.version), members, versions, local, manifest["codes"])


def prepare_store(
    workdir: Path, catalog: Path | None, recipe: str, size: int, seed: int, alias: str, scratch: Path
) -> tuple[Store, float]:
    """The store in ``workdir``, built first when it holds none; the seconds the build took."""
    workdir = workdir.resolve()
    catalog = (catalog or workdir / "catalog").resolve()
    t0 = time.perf_counter()
    if not (workdir / "mlflow.db").is_file():
        log(f"building the models: demo catalog of {size} products, retrain flow ({recipe}) -> {workdir}")
        catalog = build_store(workdir, recipe, size, seed)
    built = time.perf_counter() - t0
    store = open_store(workdir, catalog, scratch, alias)
    log(f"mmpc-ensemble v{store.ensemble_version}, members {store.versions}, built in {built:.0f} s")
    return store, built


def request_rows(catalog: Path, recipe: str, n: int) -> pd.DataFrame:
    """Real test-split rows as serving input; every other row carries its photo as base64."""
    from mmpc import pipeline
    from mmpc.recipe import load_recipe

    cat = pipeline.open_catalog(catalog, load_recipe(recipe))
    test = cat.split("test")
    rows = pd.concat([test] * (1 + n // max(1, len(test))), ignore_index=True).head(n)
    images = [
        base64.b64encode(Path(p).read_bytes()).decode() if has and i % 2 == 0 else None
        for i, (p, has) in enumerate(zip(rows["image_path"], rows["has_image"], strict=True))
    ]
    description = [d if isinstance(d, str) else None for d in rows["description"]]
    return pd.DataFrame(
        {"designation": rows["designation"].tolist(), "description": description, "image": images}
    )
