"""The pipeline's steps, each one MLflow run: level-1 training, fusion, stacking and publication.

Steps take plain arguments (a catalog path, a recipe, a work folder, version numbers) so a scheduler
can run each of them in its own process or machine; ``flows/`` wraps them as Prefect tasks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

import mmpc
from mmpc import ensemble, images, locations, orphans, promotion, stacking, tracking
from mmpc import tags as tag
from mmpc.catalog import Catalog, read_catalog
from mmpc.metrics import macro_f1
from mmpc.models import pretrained
from mmpc.models.runners import Level1Predictor
from mmpc.recipe import FusionModelConfig, ImageModelConfig, Recipe, TextModelConfig, TfidfModelConfig
from mmpc.serving import ensemble_signature, level1_signature
from mmpc.training import checkpoint, distributed
from mmpc.training import level1 as train_l1
from mmpc.training.engine import FitResult, resolve_device, seed_everything
from mmpc.training.tfidf import train_tfidf

log = logging.getLogger(__name__)

PYFUNC_DIR = Path(mmpc.__file__).resolve().parent / "pyfunc"
CHUNK = 256  # catalog rows decoded and predicted at a time: bounded memory on 85k-product catalogs
# Run tags a level-1 version carries too: data fingerprints, fusion inputs and the training key.
_VERSION_TAG_PREFIXES = (
    tag.CATALOG,
    tag.DATA_FINGERPRINT,
    tag.FINGERPRINT_PREFIX,
    tag.INPUT_PREFIX,
    tag.TRAIN_KEY,
)


@dataclass
class Level1Result:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # an earlier version trained on the same inputs was found and kept


@dataclass
class PublishResult:
    version: str
    run_id: str
    scores: dict[str, float]
    table: str
    promoted: bool
    reason: str
    champion_version: str | None
    reused: bool = False


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


def open_catalog(path: str | Path, recipe: Recipe, workdir: str | Path | None = None) -> Catalog:
    """A catalog folder, or an ``s3://bucket/prefix`` mirrored under ``<workdir>/catalogs`` first."""
    local = locations.materialize(path, Path(workdir or ".") / "catalogs")
    return read_catalog(
        local,
        splits=recipe.split_spec(),
        images=recipe.catalog.images,
        drop_invalid=recipe.catalog.drop_invalid,
    )


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def training_key(
    catalog: Catalog, recipe: Recipe, name: str, input_versions: dict[str, str] | None = None
) -> str:
    """Everything a level-1 model's training and reported scores depend on: its recipe section, the
    digests of a local checkpoint's files, the seed, the code version, the label set, the content of
    the splits it reads, and for fusion the versions of its inputs. Equal keys mean an equal model,
    whatever machine trained it."""
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


def find_level1(
    catalog: Catalog, recipe: Recipe, name: str, input_versions: dict[str, str] | None = None
) -> Level1Result | None:
    """The registered version of ``name`` trained on exactly these inputs, if there is one."""
    return _reused_level1(name, training_key(catalog, recipe, name, input_versions))


def promote_version(catalog: Catalog, workdir: Path, version: str) -> promotion.Decision:
    """The promotion step on its own: ``mmpc-ensemble`` ``version`` against the current champion."""
    tracking.configure(workdir)
    return decide_promotion(catalog, tracking.resolve("ensemble", version))


def _reused_level1(name: str, key: str) -> Level1Result | None:
    mv = tracking.find_version(name, tag.TRAIN_KEY, key)
    if mv is None:
        return None
    metrics = dict(MlflowClient().get_run(mv.run_id).data.metrics) if mv.run_id else {}
    log.info("%s: inputs unchanged, reusing %s v%s (run %s)", name, mv.name, mv.version, mv.run_id)
    return Level1Result(name, str(mv.version), mv.run_id or "", metrics, reused=True)


def predict_rows(
    predict: Callable[[list[str], list], np.ndarray], frame: pd.DataFrame, with_images: bool
) -> np.ndarray:
    """Probabilities for catalog rows, a chunk at a time (images are decoded per chunk)."""
    parts = []
    for start in range(0, len(frame), CHUNK):
        chunk = frame.iloc[start : start + CHUNK]
        imgs = (
            images.load_optional(chunk["image_path"], chunk["has_image"])
            if with_images
            else [None] * len(chunk)
        )
        parts.append(predict(chunk["text"].tolist(), imgs))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def request_example(frame: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """Serving input example: real rows of the catalog, the photo as base64."""
    rows = frame.head(n)
    encoded = [
        base64.b64encode(Path(p).read_bytes()).decode() if has else None
        for p, has in zip(rows["image_path"], rows["has_image"], strict=True)
    ]
    return pd.DataFrame(
        {
            "designation": rows["designation"].tolist(),
            "description": rows["description"].tolist(),
            "image": encoded,
        }
    )


def _run_tags(recipe: Recipe, catalog: Catalog, step: str) -> dict[str, str]:
    return {
        tag.STEP: step,
        tag.RECIPE: recipe.name,
        tag.SEED: str(recipe.seed),
        tag.CODE_VERSION: code_version(),
        tag.CATALOG: catalog.name,
        **orphans.owner_tags(),  # a run whose process died is found and marked FAILED later
    }


def start_pipeline_run(catalog: Catalog, recipe: Recipe, workdir: Path, run_name: str = "retrain") -> str:
    """The parent run every step of one pipeline nests under; returns its id."""
    tracking.configure(workdir)
    exp = tracking.experiment_id(catalog.name, workdir)
    orphans.fail_orphans(exp)
    with mlflow.start_run(
        experiment_id=exp, run_name=run_name, tags=_run_tags(recipe, catalog, "pipeline")
    ) as run:
        tracking.log_params(recipe.to_dict())
        tracking.log_catalog(catalog)
    # The fluent run ended above; reopen it as RUNNING so children can nest until the pipeline ends.
    MlflowClient().update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def end_pipeline_run(
    run_id: str, ok: bool, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None
) -> None:
    """Finish the pipeline's parent run; a failed pipeline also fails the steps still marked RUNNING
    under it (their processes have stopped by now: the flow waits for every step)."""
    client = MlflowClient()
    if not ok:
        orphans.fail_children(run_id, "the pipeline failed before this step finished")
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, value)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def _download_level1(versions: dict[str, str], dst: Path) -> dict[str, Path]:
    folders = {}
    for name, version in versions.items():
        mv = tracking.resolve(name, version)
        folders[name] = tracking.level1_folder(tracking.download_artifacts(mv, dst / name))
    return folders


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
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(workdir).resolve() / "checkpoints" / catalog.name / f"{name}-{digest}"


def _resumable_run(folder: Path, key: str, experiment: str | None) -> tuple[str | None, ModelVersion | None]:
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


def _version_tags(run) -> dict[str, str]:
    """A level-1 version's tags, from its run: data fingerprints, kind, scores, fusion inputs."""
    tags, metrics = run.data.tags, run.data.metrics
    return {
        **{k: v for k, v in tags.items() if k.startswith(_VERSION_TAG_PREFIXES)},
        tag.KIND: tags[tag.KIND],
        tag.RUN_ID: run.info.run_id,
        "valid_macro_f1": f"{metrics['valid_macro_f1']:.6f}",
        "test_macro_f1": f"{metrics['test_macro_f1']:.6f}",
    }


def _last_step(run_id: str, metric: str) -> int:
    history = MlflowClient().get_metric_history(run_id, metric)
    return max((m.step for m in history), default=0)


def _fit(
    cfg,
    name: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    codes: list[int],
    tmp: Path,
    input_versions: dict[str, str] | None,
    opts: train_l1.RunOptions,
) -> tuple[FitResult, dict[str, str]]:
    """Train one kind into ``tmp/model``; returns the fit and, for fusion, the input versions used."""
    out = tmp / "model"
    if isinstance(cfg, TextModelConfig):
        return train_l1.train_text(cfg, train, valid, codes, out, opts), {}
    if isinstance(cfg, ImageModelConfig):
        return train_l1.train_image(cfg, train, valid, codes, out, opts), {}
    if isinstance(cfg, TfidfModelConfig):
        return train_tfidf(cfg, train, valid, codes, out, opts), {}
    if isinstance(cfg, FusionModelConfig):
        needed = [*cfg.text, cfg.image]
        missing = [n for n in needed if n not in (input_versions or {})]
        if missing:
            raise ValueError(f"fusion model {name!r} needs registered versions of {missing}")
        versions = {n: str(input_versions[n]) for n in needed}
        inputs = _download_level1(versions, tmp / "inputs")
        return train_l1.train_fusion(cfg, inputs, train, valid, codes, out, opts), versions
    raise ValueError(f"unknown model kind {cfg.kind!r}")  # pragma: no cover - the parser admits no other


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
    cfg = recipe.model(name)
    pretrained.check(name, cfg)  # a wrong checkpoint fails here, before a run starts
    seed_everything(recipe.seed)
    device = distributed.device_for_rank(resolve_device(recipe.device))
    # Rank 0 creates the store and experiment before other ranks read it (SQLite cannot be
    # initialised by two processes at once).
    exp = tracking.experiment_id(catalog.name, workdir) if distributed.is_main() else None
    distributed.barrier()
    key = training_key(catalog, recipe, name, input_versions)
    ckpt = checkpoint_folder(workdir, catalog, recipe, name, input_versions)
    ckpt_key = f"{catalog.name}/{ckpt.name}"
    resume_id, registered = _resumable_run(ckpt, ckpt_key, exp)
    # A version registered by an interrupted run of this training is finished below (alias, run end),
    # not reused half-done.
    if reuse and registered is None and (found := _reused_level1(name, key)) is not None:
        return found if distributed.is_main() else None
    train, valid, test = catalog.split("train"), catalog.split("valid"), catalog.split("test")
    codes = list(catalog.labels.codes)
    tags = {
        **_run_tags(recipe, catalog, "level1"),
        tag.MODEL: name,
        tag.KIND: cfg.kind,
        tag.TRAIN_KEY: key,
        tag.CHECKPOINT: ckpt_key,
    }
    if exp is not None:  # rank 0: runs left RUNNING by dead processes, except the one resumed here
        orphans.fail_orphans(exp, keep={resume_id} if resume_id else None)
    if not distributed.is_main():
        if registered is None:
            with tracking.scratch() as tmp:
                opts = train_l1.RunOptions(device, recipe.seed, name, checkpoint_dir=ckpt)
                _fit(cfg, name, train, valid, codes, tmp, input_versions, opts)
        return None
    if registered is not None:  # killed after registering: finish what was left, that version is the result
        log.info("%s: run %s already registered %s v%s", name, resume_id, registered.name, registered.version)
        client = MlflowClient()
        orphans.adopt(resume_id)
        run = client.get_run(resume_id)
        tracking.complete_version(registered, _version_tags(run))
        if run.info.status != "FINISHED":
            client.set_terminated(resume_id, "FINISHED")
        shutil.rmtree(ckpt, ignore_errors=True)
        return Level1Result(name, str(registered.version), resume_id, dict(run.data.metrics))
    if resume_id:
        log.info("%s: resuming MLflow run %s from %s", name, resume_id, ckpt)
        run_ctx = mlflow.start_run(run_id=resume_id)
    else:
        run_ctx = mlflow.start_run(experiment_id=exp, run_name=name, parent_run_id=parent_run_id, tags=tags)
    with run_ctx as run, tracking.scratch() as tmp:
        if resume_id:
            orphans.adopt(resume_id)
        else:
            tracking.log_params(
                {
                    "model": name,
                    "seed": recipe.seed,
                    "recipe": recipe.name,
                    **recipe.to_dict()["models"][name],
                }
            )
        tracking.log_catalog(catalog)
        out = tmp / "model"  # where _fit saves the trained folder
        logged_until = _last_step(run.info.run_id, "epoch_valid_macro_f1") if resume_id else 0

        def log_metrics(values: dict[str, float], step: int) -> None:
            # Curves are epoch_*; the unprefixed names hold the kept (best) model's figures, the same
            # names for every kind so the MLflow UI compares them side by side. An epoch logged before
            # an interruption is not logged twice.
            if step > logged_until:
                mlflow.log_metrics({f"epoch_{k}": v for k, v in values.items()}, step=step)

        opts = train_l1.RunOptions(
            device, recipe.seed, name, log_metrics, ckpt, {"mlflow_run_id": run.info.run_id}
        )
        result, versions = _fit(cfg, name, train, valid, codes, tmp, input_versions, opts)
        if versions:
            mlflow.set_tags({tag.input_version(n): v for n, v in versions.items()})
        mlflow.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "train_seconds": result.seconds,
            }
        )

        predictor = Level1Predictor(out, device)
        scores = {}
        for split, frame in (("valid", valid), ("test", test)):
            probs = predict_rows(predictor.predict_proba, frame, predictor.uses_images)
            scores.update(tracking.log_evaluation(frame["label"].to_numpy(), probs, codes, split))
        example = request_example(valid)
        mv = tracking.log_pyfunc(
            PYFUNC_DIR / "level1_model.py",
            {"model": str(out)},
            model=name,
            signature=level1_signature(codes),
            input_example=example,
            tags=_version_tags(MlflowClient().get_run(run.info.run_id)),
        )
        log.info(
            "%s: valid macro-F1 %.4f, test macro-F1 %.4f -> %s v%s",
            name,
            scores["valid_macro_f1"],
            scores["test_macro_f1"],
            mv.name,
            mv.version,
        )
    # The checkpoint (which names the run) goes only once the run is finished: a kill before this
    # point resumes into the registered-version branch above.
    shutil.rmtree(ckpt, ignore_errors=True)
    return Level1Result(name, str(mv.version), run.info.run_id, scores)


def _rescore(catalog: Catalog, test: pd.DataFrame) -> Callable[[ModelVersion], float]:
    """Scores a registered ensemble on this test split (a champion published on an older catalog)."""

    def score(mv: ModelVersion) -> float:
        model = mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}")
        preds = []
        for start in range(0, len(test), CHUNK):
            chunk = test.iloc[start : start + CHUNK]
            preds.append(model.predict(request_example(chunk, n=len(chunk)))["prdtypecode"].to_numpy())
        y_pred = np.concatenate(preds) if preds else np.zeros(0, dtype=int)
        return macro_f1(test["label"].to_numpy(), np.asarray(catalog.labels.indices(y_pred), dtype=int))

    return score


def _log_explanations(
    booster,
    X: pd.DataFrame,
    members: list[str],
    codes: list[int],
    probs: dict[str, np.ndarray],
    y: np.ndarray,
    stacked: np.ndarray,
    tmp: Path,
) -> None:
    """SHAP per level-1 model on the test split: Figure 2 (PNG) and Table 2 (CSV) of the paper."""
    contributions, _ = stacking.Explainer(booster, members, codes).explain(X)
    folder = tmp / "explanations"
    folder.mkdir()
    stacking.contributions_png(contributions, folder / "shap_contributions.png")
    table2 = stacking.only_one_right(probs, y, stacked, contributions)
    table2.to_csv(folder / "table2_only_one_model_right.csv", index=False)
    contributions.describe().to_csv(folder / "shap_contributions_summary.csv")
    mlflow.log_artifacts(str(folder), artifact_path="explanations")
    mlflow.log_metrics({f"shap_mean_abs.{m}": float(contributions[m].abs().mean()) for m in members})
    if len(table2):
        mlflow.log_metric("only_one_right_stack_recovered", float(table2["stack_right"].mean()))


def stack_and_publish(
    catalog: Catalog,
    recipe: Recipe,
    workdir: Path,
    versions: dict[str, str],
    *,
    parent_run_id: str | None = None,
    promote: bool = True,
    reuse: bool = True,
) -> PublishResult:
    """Stack the given level-1 versions on the ``stack`` split, score everything on ``test``, publish
    the ensemble as ``mmpc-ensemble`` (@candidate) and, with ``promote``, move @champion if it is at
    least as good. With ``reuse``, an ensemble already published from the same members, recipe and
    data (see ``publish_key``) is returned instead of a new version."""
    tracking.configure(workdir)
    key = publish_key(catalog, recipe, versions)
    if reuse and (found := tracking.find_version("ensemble", tag.PUBLISH_KEY, key)) is not None:
        log.info("ensemble: members and data unchanged, reusing %s v%s", found.name, found.version)
        return _published(catalog, found, promote, list(versions), reused=True)
    seed_everything(recipe.seed)
    device = resolve_device(recipe.device)
    exp = tracking.experiment_id(catalog.name, workdir)
    orphans.fail_orphans(exp)
    codes = list(catalog.labels.codes)
    members = list(versions)
    stack, test = catalog.split("stack"), catalog.split("test")
    tags = {
        **_run_tags(recipe, catalog, "stack"),
        **{tag.member(n): str(v) for n, v in versions.items()},
        tag.PUBLISH_KEY: key,
    }
    with (
        mlflow.start_run(experiment_id=exp, run_name="stack", parent_run_id=parent_run_id, tags=tags) as run,
        tracking.scratch() as tmp,
    ):
        tracking.log_params(
            {"stacking": recipe.to_dict()["stacking"], "members": members, "seed": recipe.seed}
        )
        data_tags = tracking.log_catalog(catalog)
        folders = _download_level1(versions, tmp / "level1")
        predictors = {n: Level1Predictor(f, device) for n, f in folders.items()}
        probs = {split: {} for split in ("stack", "test")}
        for split, frame in (("stack", stack), ("test", test)):
            for n, p in predictors.items():
                probs[split][n] = predict_rows(p.predict_proba, frame, p.uses_images)
        X_stack = stacking.features(probs["stack"], members, codes)
        X_test = stacking.features(probs["test"], members, codes)
        y_stack, y_test = stack["label"].to_numpy(), test["label"].to_numpy()
        fitted = stacking.fit(X_stack, y_stack, recipe.stacking, len(codes), recipe.seed)
        mlflow.log_metrics(
            {
                "cv_macro_f1": fitted.cv_macro_f1,
                "cv_logloss": fitted.cv_logloss,
                "best_rounds": fitted.best_rounds,
            }
        )

        scores = {}
        for n in members:
            p = probs["test"][n]
            ok = ~np.isnan(p).any(axis=1)
            scores[n] = macro_f1(y_test[ok], p[ok].argmax(1))
        test_probs = fitted.booster.predict(X_test)
        stack_scores = tracking.log_evaluation(y_test, test_probs, codes, "test")
        scores["stack"] = stack_scores["test_macro_f1"]
        mlflow.log_metrics({f"test_macro_f1.{n}": v for n, v in scores.items()})
        table = stacking.table(scores)
        mlflow.log_text(table + "\n", "table1_test_macro_f1.md")
        _log_explanations(
            fitted.booster, X_test, members, codes, probs["test"], y_test, test_probs.argmax(1), tmp
        )
        log.info("test macro-F1 (%d products):\n%s", len(test), table)

        booster_dir = tmp / "booster"
        booster_dir.mkdir()
        stacking.save(fitted.booster, booster_dir)
        mlflow.log_artifact(str(booster_dir / stacking.BOOSTER_FILE), artifact_path="stacker")
        bundle = ensemble.build(
            tmp / "ensemble",
            folders,
            versions,
            booster_dir / stacking.BOOSTER_FILE,
            codes,
            recipe.ensemble.top_k,
            recipe.ensemble.batch_size,
        )

        mv = tracking.log_pyfunc(
            PYFUNC_DIR / "ensemble_model.py",
            {"ensemble": str(bundle)},
            model="ensemble",
            signature=ensemble_signature(recipe.ensemble.top_k),
            input_example=request_example(test),
            tags={
                **data_tags,
                tag.RUN_ID: run.info.run_id,
                "test_macro_f1": f"{scores['stack']:.6f}",
                "cv_macro_f1": f"{fitted.cv_macro_f1:.6f}",
                **{tag.member(n): str(v) for n, v in versions.items()},
                tag.PUBLISH_KEY: key,
            },
        )
    return _published(catalog, mv, promote, members)


def _published(
    catalog: Catalog, mv: ModelVersion, promote: bool, members: list[str], reused: bool = False
) -> PublishResult:
    """The scores of a published ensemble (from its stacking run), and the promotion decision."""
    metrics = MlflowClient().get_run(mv.run_id).data.metrics
    scores = {n: metrics[f"test_macro_f1.{n}"] for n in [*members, "stack"]}
    decision = decide_promotion(catalog, mv) if promote else _no_promotion(mv)
    return PublishResult(
        str(mv.version),
        mv.run_id,
        scores,
        stacking.table(scores),
        decision.promoted,
        decision.reason,
        decision.champion_version,
        reused=reused,
    )


def _no_promotion(mv: ModelVersion) -> promotion.Decision:
    current = promotion.champion(mv.name)
    return promotion.Decision(False, "promotion not asked", current and str(current.version))


def decide_promotion(catalog: Catalog, mv: ModelVersion) -> promotion.Decision:
    """Move @champion to ``mv`` when its test macro-F1 is at least the champion's on this catalog's
    test split; the decision is recorded on the version's stacking run."""
    score = float(mv.tags["test_macro_f1"])
    decision = promotion.promote_if_better(mv, score, _rescore(catalog, catalog.split("test")))
    MlflowClient().set_tag(mv.run_id, tag.PROMOTED, str(decision.promoted))
    MlflowClient().set_tag(mv.run_id, tag.PROMOTION_REASON, decision.reason)
    log.info(
        "%s v%s: %s (%s)",
        mv.name,
        mv.version,
        "promoted to @champion" if decision.promoted else "not promoted",
        decision.reason,
    )
    return decision


def level1_order(recipe: Recipe, names: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(text and image models, fusion models) of the recipe, optionally restricted to ``names``."""
    chosen = list(names) if names else list(recipe.models)
    unknown = [n for n in chosen if n not in recipe.models]
    if unknown:
        raise ValueError(
            f"unknown model(s) {unknown}; the recipe {recipe.name!r} has {sorted(recipe.models)}"
        )
    base = [n for n in chosen if recipe.models[n].kind != "fusion"]
    fusion = [n for n in chosen if recipe.models[n].kind == "fusion"]
    return base, fusion
