"""MLflow: where runs go, what every run records, and the model registry.

Default store: ``sqlite:///<workdir>/mlflow.db`` with artifacts under ``<workdir>/mlartifacts``;
``MLFLOW_TRACKING_URI`` (a server with PostgreSQL and S3 in production) always wins. The figures
are drawn by ``mmpc.plots``; telling a server outage from a real error is ``mmpc.outages``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import Experiment
from mlflow.entities.model_registry import ModelVersion
from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mmpc import metrics as M
from mmpc import packaging, run_names, workfolder
from mmpc import tags as tag
from mmpc.catalog import Catalog
from mmpc.labels import describe
from mmpc.outages import ArtifactUploadError
from mmpc.plots import confusion_png

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "mmpc-"
CANDIDATE, CHAMPION = "candidate", "champion"
# MLflow keeps param values up to 6000 characters; longer values are cut with a marker.
_PARAM_MAX = 6000
# Seconds between system-metric samples of a training run: demo trainings last seconds to minutes
# (MLflow's default, 10 s, leaves short runs without a single sample).
SYSTEM_METRICS_INTERVAL_S = 1.0
# The file every run keeps at its artifact root (what it trained, on what, how it scored), so the UI's
# compare view has a file common to all runs.
SUMMARY_FILE = "summary.json"
# A split's MLflow dataset: the columns that identify its products (not the images), and the context
# it is logged with by the run that uses it.
DATASET_COLUMNS = ("productid", "designation", "prdtypecode")
DATASET_CONTEXTS = {"train": "training", "valid": "validation", "stack": "training", "test": "testing"}
_DIGEST_CHARS = 16  # MLflow stores dataset digests of at most 36 characters


def registered_name(model: str) -> str:
    return f"{REGISTRY_PREFIX}{model}"


_WORKDIR_STORE: list[str] = []  # the work-folder store this process last pointed MLflow at


def configure(workdir: str | Path) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the SQLite store in ``workdir``; returns the URI.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment: a value this
    function put there is not the user's choice, so another work folder later gets its own store. A work
    folder's store recorded for another folder (a copy or a move) is refused: ``mmpc.workfolder``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    own = not uri or uri in _WORKDIR_STORE
    if own:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{workfolder.store_path(workdir)}"
        _WORKDIR_STORE[:] = [uri]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if own:  # a copied or moved folder's store still points at the original's artifacts
        workfolder.check(workdir)
    return uri


def ui_base() -> str | None:
    """Where people open the MLflow UI: ``MLFLOW_UI_URL``, else a tracking server's own address."""
    base = os.environ.get("MLFLOW_UI_URL") or mlflow.get_tracking_uri()
    return base.rstrip("/") if base.startswith(("http://", "https://")) else None


def run_route(experiment: str, run_id: str) -> str:
    """A run's page in the MLflow UI, relative to the UI's address (``#/...``), in the UI's
    machine-learning mode (see ``UI_WORKFLOW``)."""
    return f"#/experiments/{experiment}/runs/{run_id}?{_ui_query()}"


def version_route(name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI, relative to the UI's address."""
    return f"#/models/{name}/versions/{version}?{_ui_query()}"


def run_link(run_id: str) -> str:
    """A markdown link to a run in the MLflow UI, or its id when there is no UI address."""
    base = ui_base()
    if not base:
        return f"run `{run_id}`"
    exp = MlflowClient().get_run(run_id).info.experiment_id
    return f"[run {run_id[:8]}]({base}/{run_route(exp, run_id)})"


def version_link(model: str, version: str) -> str:
    name = model if model.startswith(REGISTRY_PREFIX) else registered_name(model)
    base = ui_base()
    text = f"{name} v{version}"
    return f"[{text}]({base}/{version_route(name, version)})" if base else text


# MLflow 3.17's UI picks the experiment page's mode from the URL's ``workflowType`` (GenAI, a traces
# dashboard, when absent) and opens a saved view of the runs list, an experiment tag
# ``mlflow.sharedViewState.<id>`` listed under "Views", from ``viewStateShareKey=<id>``.
UI_WORKFLOW = ("workflowType", "machine_learning")
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the kind MLflow's API reads
RUNS_VIEW = "scores"
TEST_SCORE = "test_macro_f1"
# The runs table's column ids: MLflow's canonical keys.
RUNS_NAME_COLUMN, RUNS_DATASET_COLUMN = "attributes.`Run Name`", "attributes.`Dataset`"
RUNS_SCORE_COLUMN = f"metrics.`{TEST_SCORE}`"
# Every run with a test score, not nested (a sort other than by start time un-nests child runs), each
# model's runs of successive retrains side by side (sorted by run name), names and scores in full
# next to each other (the UI applies widths only to the columns its order names).
RUNS_VIEW_STATE: dict[str, Any] = {
    "searchFilter": f"metrics.{TEST_SCORE} >= 0",
    "orderByKey": "tags.`mlflow.runName`",
    "orderByAsc": True,
    "selectedColumns": [RUNS_DATASET_COLUMN, "attributes.`Models`", RUNS_SCORE_COLUMN],
    "columnOrder": [RUNS_NAME_COLUMN, RUNS_SCORE_COLUMN, RUNS_DATASET_COLUMN],
    "columnWidths": {RUNS_NAME_COLUMN: 330, RUNS_SCORE_COLUMN: 130, RUNS_DATASET_COLUMN: 260},
    "runsHiddenMode": "SHOW_ALL",
}


def _ui_query(**params: str) -> str:
    return urlencode({UI_WORKFLOW[0]: UI_WORKFLOW[1], **params})


def runs_list_link(experiment: str, base: str | None = None) -> str | None:
    """The experiment's runs list in the MLflow UI, opened on mmpc's saved view (every run's test
    macro-F1 and datasets); ``None`` when there is no UI address."""
    base = (base or "").rstrip("/") or ui_base()
    if not base:
        return None
    return f"{base}/#/experiments/{experiment}/runs?{_ui_query(viewStateShareKey=RUNS_VIEW)}"


def runs_list_md(run_id: str) -> str:
    """A markdown link to the runs list of ``run_id``'s experiment; empty without a UI address."""
    if not ui_base():
        return ""
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    return f"[every run's test macro-F1]({runs_list_link(experiment)})"


def compare_route(experiment: str, run_ids: Sequence[str]) -> str:
    """The UI's side-by-side view of runs, relative to the UI's address."""
    # The page reads `runs` only as the first parameter (it looks up "?runs").
    query = {
        "runs": json.dumps(list(run_ids)),
        "experiments": json.dumps([experiment]),
        UI_WORKFLOW[0]: UI_WORKFLOW[1],
    }
    return f"#/compare-runs?{urlencode(query)}"


def find_experiment(name: str | None = None) -> Experiment | None:
    """The experiment ``name``, else the ``mmpc/...`` experiment updated last."""
    client = MlflowClient()
    if name:
        return client.get_experiment_by_name(name)
    found = client.search_experiments(filter_string="name LIKE 'mmpc/%'", order_by=["last_update_time DESC"])
    return found[0] if found else None


def set_experiment_tag_once(experiment: Experiment, key: str, value: str) -> None:
    """Set a tag the experiment lacks; one already there (a person's edit) is kept. Two processes that
    start on a new experiment together both find it missing: the second write fails on the store's
    unique key (HTTP 400 from a server), and the first one's tag stands."""
    if key in experiment.tags:
        return
    client = MlflowClient()
    try:
        client.set_experiment_tag(experiment.experiment_id, key, value)
    except MlflowException:
        if key not in client.get_experiment(experiment.experiment_id).tags:
            raise


def ensure_runs_view(experiment: Experiment) -> None:
    """The experiment's kind and mmpc's saved view of its runs list, set when missing (a view the
    team changed and saved is kept)."""
    set_experiment_tag_once(experiment, *EXPERIMENT_KIND)
    now = int(time.time() * 1000)
    view = {"name": RUNS_VIEW, "createdAt": now, "updatedAt": now, "state": json.dumps(RUNS_VIEW_STATE)}
    set_experiment_tag_once(experiment, f"mlflow.sharedViewState.{RUNS_VIEW}", json.dumps(view))


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_id(catalog_name: str, workdir: str | Path) -> str:
    """One experiment per catalog, ``mmpc/<catalog>``; a local store keeps artifacts in the workdir."""
    from mmpc import descriptions  # it reads this module's routes and names

    name = f"mmpc/{catalog_name}"
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if is_local_store(mlflow.get_tracking_uri()):
            location = workfolder.artifact_uri(Path(workdir))
        with suppress(MlflowException):  # created concurrently by another run
            client.create_experiment(name, artifact_location=location)
        found = client.get_experiment_by_name(name)
    descriptions.describe_experiment(found, catalog_name)  # once: an experiment without one
    ensure_runs_view(found)
    return found.experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            text = json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)
            out[path] = text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."
    return out


def log_params(tree: Mapping[str, Any], prefix: str = "") -> None:
    items = list(flatten(tree, prefix).items())
    for start in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[start : start + 100]))


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mmpc-") as tmp:
        yield Path(tmp)


def start_training_run(**kwargs: Any) -> mlflow.ActiveRun:
    """``mlflow.start_run`` with system metrics (CPU, memory, disk, network; NVIDIA GPUs through
    pynvml) sampled every ``SYSTEM_METRICS_INTERVAL_S`` unless ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
    says otherwise. The monitor thread stops when the run ends."""
    if MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() is None:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    return mlflow.start_run(log_system_metrics=True, **kwargs)


def split_dataset(catalog: Catalog, split: str, frame: pd.DataFrame | None = None) -> PandasDataset:
    """The products of one split (``all``: the whole catalog) as an MLflow dataset named
    ``<catalog>-<split>`` whose digest is the split's content fingerprint: every run that reads the
    same rows names the same dataset, so their scores line up in the UI."""
    rows = (catalog.split(split) if split != "all" else catalog.frame) if frame is None else frame
    prints = catalog.fingerprint(None if split == "all" else [split])
    with warnings.catch_warnings():  # a local path fits two equivalent source classes; either will do
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(
            rows[list(DATASET_COLUMNS)].reset_index(drop=True),
            source=str(catalog.root),
            targets="prdtypecode",
            name=f"{catalog.name}-{split}",
            digest=prints[:_DIGEST_CHARS],
        )


def log_splits(catalog: Catalog, splits: Sequence[str]) -> dict[str, PandasDataset]:
    """The active run's input datasets, one per split, each with its context (training, ...)."""
    datasets = {s: split_dataset(catalog, s) for s in splits}
    for split, ds in datasets.items():
        mlflow.log_input(ds, context=DATASET_CONTEXTS[split])
    return datasets


def log_summary(
    run_id: str, model: str, test_macro_f1: float | None, version: str | None, **extra: Any
) -> dict:
    """``summary.json`` at the run's artifact root: the model, its seed and recipe, the catalog's
    fingerprint and split sizes (read back from the run's tags and params), its test macro-F1, the
    version it registered (or evaluated), and ``extra`` fields."""
    run = MlflowClient().get_run(run_id)
    tags, params = run.data.tags, run.data.params
    rows = "data.rows."
    summary = {
        "run_name": run.info.run_name,
        "model": model,
        "seed": int(tags[tag.SEED]) if tag.SEED in tags else None,
        "recipe": tags.get(tag.RECIPE),
        "catalog": tags.get(tag.CATALOG),
        "data_fingerprint": tags.get(tag.DATA_FINGERPRINT),
        "split_sizes": {k.removeprefix(rows): int(v) for k, v in params.items() if k.startswith(rows)},
        "test_macro_f1": test_macro_f1,
        "registered_version": version,
        **extra,
    }
    MlflowClient().log_text(run_id, json.dumps(summary, indent=1, ensure_ascii=False) + "\n", SUMMARY_FILE)
    return summary


def name_version(run_id: str, version: str | int) -> str:
    """Append `` · v<N>`` to the name of the run that registered version N; returns the name."""
    client = MlflowClient()
    name = run_names.with_version(client.get_run(run_id).info.run_name, version)
    client.update_run(run_id, name=name)
    return name


def log_catalog(catalog: Catalog) -> dict[str, str]:
    """The data fingerprint and split manifest of the catalog a run used; returns the tags set."""
    with scratch() as tmp:
        paths = catalog.write_manifest(tmp)
        mlflow.log_artifacts(str(tmp), artifact_path="data")
        summary = json.loads(Path(paths["fingerprint"]).read_text())
    tags = {
        tag.CATALOG: catalog.name,
        tag.DATA_FINGERPRINT: summary["fingerprint"],
        **{tag.fingerprint(s): v["fingerprint"] for s, v in summary["splits"].items()},
    }
    mlflow.set_tags(tags)
    mlflow.log_params({f"data.rows.{s}": v["rows"] for s, v in summary["splits"].items()})
    # Rows left out by catalog.drop_invalid: how many here, which ones in data/dropped_rows.csv.
    mlflow.log_param("data.dropped_rows", summary["dropped_rows"])
    return tags


def log_evaluation(
    y: np.ndarray, probs: np.ndarray, codes: list[int], split: str, dataset: PandasDataset | None = None
) -> dict[str, float]:
    """Metrics ``<split>_macro_f1`` etc. (against ``dataset`` when given), the confusion matrix as a
    PNG and a CSV, and the per-class report (text and CSV) with the product-type names.

    Rows whose probabilities are missing (an image model without a photo) are left out and counted.
    """
    ok = ~np.isnan(probs).any(axis=1)
    scores = M.scores(y[ok], probs[ok], split)
    mlflow.log_metrics(scores, dataset=dataset)
    mlflow.log_metric(f"{split}_rows", float(ok.sum()))
    scores[f"{split}_rows"] = float(ok.sum())
    y_pred = probs[ok].argmax(1)
    cm = M.confusion(y[ok], y_pred, len(codes))
    with scratch() as tmp:
        confusion_png(
            cm, codes, tmp / f"{split}_confusion.png", f"{split}: macro-F1 {scores[f'{split}_macro_f1']:.4f}"
        )
        names = [describe(c) for c in codes]
        pd.DataFrame(cm, index=names, columns=names).rename_axis("true \\ predicted").to_csv(
            tmp / f"{split}_confusion.csv"
        )
        (tmp / f"{split}_report.txt").write_text(M.per_class_report(y[ok], y_pred, codes))
        M.per_class(y[ok], y_pred, codes).to_csv(tmp / f"{split}_per_class.csv", index=False)
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")
    return scores


def _local_files(artifacts: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in artifacts.values():
        root = Path(path)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            out[f.relative_to(root.parent).as_posix()] = f.stat().st_size
    return out


def _remote_files(client: MlflowClient, model_id: str, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in client.list_logged_model_artifacts(model_id, path):
        if item.is_dir:
            out.update(_remote_files(client, model_id, item.path))
        else:
            out[item.path] = item.file_size or 0
    return out


def verify_logged_model(model_id: str, artifacts: dict[str, str]) -> None:
    """Every local file of the model is in the artifact store with its size, and so is ``MLmodel``."""
    remote = _remote_files(MlflowClient(), model_id)
    missing = ["MLmodel"] if "MLmodel" not in remote else []
    for rel, size in _local_files(artifacts).items():
        if not any(path.endswith("/" + rel) and remote[path] == size for path in remote):
            missing.append(rel)
    if missing:
        raise ArtifactUploadError(
            f"logged model {model_id}: {len(missing)} file(s) missing or incomplete in the artifact "
            f"store, e.g. {missing[:5]}; not registered"
        )


def log_pyfunc(
    code_file: Path,
    artifacts: dict[str, str],
    *,
    model: str,
    signature,
    input_example,
    tags: dict[str, str] | None = None,
    model_config: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    scores: Sequence[tuple[dict[str, float], PandasDataset]] = (),
) -> ModelVersion:
    """Log a models-from-code pyfunc into the active run and register it as ``mmpc-<model>``.

    The version is created only after the artifact store holds every file of the model, with its
    tags in the same call, so no registered version points at missing files or lacks its tags. It
    gets the ``candidate`` alias. ``params`` are the logged model's own (its page and the logged-models
    table list them). MLflow copies the run's step-0 metrics onto the model without their dataset;
    ``scores`` are logged again against the model and their dataset, so every model's scores on one
    dataset share a column group in the logged-models table.
    """
    name = registered_name(model)
    with scratch() as tmp:
        # The model carries the inference modules it needs and names only their libraries: it loads
        # where mmpc is not installed (a model server's own environment, a Spark executor).
        info = mlflow.pyfunc.log_model(
            name=model,
            python_model=str(code_file),
            artifacts=artifacts,
            code_paths=[str(packaging.write_code(tmp))],
            signature=signature,
            input_example=input_example,
            pip_requirements=packaging.requirements(),
            model_config=model_config,
            params={k: str(v) for k, v in (params or {}).items()},
        )
    verify_logged_model(info.model_id, artifacts)
    for metrics, dataset in scores:
        mlflow.log_metrics(metrics, model_id=info.model_id, dataset=dataset)
    mv = mlflow.register_model(info.model_uri, name, tags=dict(tags or {}))
    return complete_version(mv, {})


def complete_version(mv: ModelVersion, tags: dict[str, str]) -> ModelVersion:
    """Set a new version's tags, then its ``candidate`` alias; repeating it changes nothing, so a
    process killed half-way through can finish the job."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)
    client.set_registered_model_alias(mv.name, CANDIDATE, mv.version)
    log.info("registered %s version %s (@%s)", mv.name, mv.version, CANDIDATE)
    from mmpc import descriptions  # it reads this module's routes and names

    return descriptions.describe_registered(client.get_model_version(mv.name, mv.version))


def find_version(model: str, tag: str, value: str) -> ModelVersion | None:
    """The newest complete version of ``mmpc-<model>`` whose tag ``tag`` equals ``value``.

    Complete: READY, and the run that registered it FINISHED. A version whose process was killed
    between registering it and ending its run is not reused as is: the resumed training finishes it
    (tags, alias, run status) first."""
    name = registered_name(model)
    client = MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{tag}` = '{value}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True):
        if mv.status == "READY" and (not mv.run_id or client.get_run(mv.run_id).info.status == "FINISHED"):
            return mv
    return None


def logged_model_id(mv: ModelVersion) -> str | None:
    """The logged model (``m-...``) a version was registered from. Some registry stores leave
    ``model_id`` empty; the version's ``models:/m-...`` source names it then."""
    if mv.model_id:
        return mv.model_id
    source = mv.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def resolve(model: str, ref: str | int) -> ModelVersion:
    """A registered version by number (``3``) or alias (``champion``, ``@champion``)."""
    name = model if model.startswith(REGISTRY_PREFIX) else registered_name(model)
    client = MlflowClient()
    ref = str(ref)
    if ref.isdigit():
        return client.get_model_version(name, ref)
    return client.get_model_version_by_alias(name, ref.lstrip("@"))


def download_artifacts(mv: ModelVersion, dst: Path) -> Path:
    """A version's MLflow model folder, downloaded under ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(dst))
    )


def level1_folder(mlflow_model_dir: Path) -> Path:
    """The mmpc model folder inside a downloaded level-1 pyfunc."""
    return mlflow_model_dir / "artifacts" / "model"
