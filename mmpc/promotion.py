"""Moving ``@champion``: after a retrain (only to a model at least as good on the same test split),
by hand with ``mmpc promote``, and back with ``mmpc rollback``; never to a version that does not load.

Every move happens under a promotion lock and re-reads the champion inside it, so two concurrent
promotions cannot both win: the second one compares itself with the first one's result. The lock is a
file lock beside a local SQLite store, and a lease written as a registered-model tag (set, then read
back) on a tracking server.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mmpc import descriptions, tracking
from mmpc import tags as tag

log = logging.getLogger(__name__)

LEASE_SECONDS = 300


class PromotionError(RuntimeError):
    """A promotion or rollback that must not happen; the message says why."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_version: str | None


@contextmanager
def lock(name: str, timeout: float = 300) -> Iterator[None]:
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :]).with_name(f".{name}.promotion.lock")
        with FileLock(str(path), timeout=timeout):
            yield
        return
    with _lease(name, timeout):
        yield


@contextmanager
def _lease(name: str, timeout: float) -> Iterator[None]:
    client = MlflowClient()
    token = f"{uuid.uuid4().hex}:{time.time():.0f}"
    deadline = time.monotonic() + timeout
    while True:
        held = client.get_registered_model(name).tags.get(tag.PROMOTION_LOCK)
        expired = held and time.time() - float(held.split(":")[1]) > LEASE_SECONDS
        if not held or expired:
            client.set_registered_model_tag(name, tag.PROMOTION_LOCK, token)
            time.sleep(0.5)  # a competitor that wrote at the same moment shows up on the read-back
            if client.get_registered_model(name).tags.get(tag.PROMOTION_LOCK) == token:
                break
        if time.monotonic() > deadline:
            raise PromotionError(f"{name}: promotion lock held by another process for over {timeout:.0f} s")
        time.sleep(0.5)
    try:
        yield
    finally:
        if client.get_registered_model(name).tags.get(tag.PROMOTION_LOCK) == token:
            client.delete_registered_model_tag(name, tag.PROMOTION_LOCK)


def champion(name: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION)
    except MlflowException:
        return None


def history(name: str) -> list[str]:
    return json.loads(MlflowClient().get_registered_model(name).tags.get(tag.CHAMPION_HISTORY, "[]"))


def _crown(name: str, version: str) -> None:
    client = MlflowClient()
    client.set_registered_model_alias(name, tracking.CHAMPION, version)
    past = [v for v in history(name) if v != version] + [version]
    client.set_registered_model_tag(name, tag.CHAMPION_HISTORY, json.dumps(past[-100:]))
    descriptions.describe_registered_model(name)  # it names the champion


def promote_if_better(mv: ModelVersion, score: float, rescore: Callable[[ModelVersion], float]) -> Decision:
    """Make ``mv`` the champion when ``score`` (its test macro-F1) is at least the champion's on the
    same test split (a champion scored on another split is re-scored with ``rescore`` first) and it
    loads as serving loads it; a version that does not load is not crowned, and the reason says why."""
    with lock(mv.name):
        current = champion(mv.name)
        if current is not None and str(current.version) == str(mv.version):
            return Decision(False, f"v{mv.version} is already the champion", str(mv.version))
        promoted, reason = _compare(score, current, mv, rescore)
        kept = str(current.version) if current is not None else None
        if not promoted:
            return Decision(False, reason, kept)
        try:
            check_loads(mv)
        except PromotionError as exc:
            log.warning("%s", exc)
            return Decision(False, f"{exc} (its score: {reason})", kept)
        _crown(mv.name, str(mv.version))
        return Decision(True, reason, str(mv.version))


def _compare(
    score: float, current: ModelVersion | None, mv: ModelVersion, rescore: Callable[[ModelVersion], float]
) -> tuple[bool, str]:
    """Whether ``score`` beats the champion's on ``mv``'s test split, and the decision in words."""
    if current is None:
        return True, "no champion yet"
    same_split = current.tags.get(tag.TEST_FINGERPRINT) == mv.tags.get(tag.TEST_FINGERPRINT)
    if same_split and "test_macro_f1" in current.tags:
        best, basis = float(current.tags["test_macro_f1"]), "same test split"
    else:
        best, basis = rescore(current), "champion re-scored on the current test split"
    promoted = score >= best
    return promoted, (
        f"test macro-F1 {score:.4f} {'>=' if promoted else '<'} champion v{current.version}'s "
        f"{best:.4f} ({basis})"
    )


def check_loads(mv: ModelVersion) -> None:
    """Refuses a version serving could not load: its artifacts are downloaded and loaded the way
    serving loads them (which checks every weight file and the booster against its recorded digest)."""
    from mmpc import packaging  # walks the kinds registry: only when a version is checked

    with tracking.scratch() as tmp:
        try:
            with packaging.own_imports():
                mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}", dst_path=str(tmp))
        except Exception as exc:  # whatever stops the load would stop serving it too
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PromotionError(
                f"{mv.name} v{mv.version} does not load (artifacts at {mv.source}), so it cannot be "
                f"the champion: {type(exc).__name__}: {why}"
            ) from exc


def promote(model: str, version: str, force: bool = False) -> str:
    """Make a version the champion by hand; it must have been evaluated on the champion's test split
    and must load (``force`` skips the split check only)."""
    name = tracking.registered_name(model) if not model.startswith(tracking.REGISTRY_PREFIX) else model
    with lock(name):
        mv = MlflowClient().get_model_version(name, str(version))
        current = champion(name)
        if current is not None and not force:
            ours, theirs = mv.tags.get(tag.TEST_FINGERPRINT), current.tags.get(tag.TEST_FINGERPRINT)
            if ours != theirs:
                raise PromotionError(
                    f"{name} v{mv.version} was evaluated on test split {str(ours)[:12]}, the champion "
                    f"v{current.version} on {str(theirs)[:12]}: their scores are not comparable "
                    "(re-evaluate it on the current catalog, or pass --force)"
                )
        check_loads(mv)
        _crown(name, str(mv.version))
        previous = f"v{current.version}" if current else "none"
        return f"{name}@{tracking.CHAMPION}: {previous} -> v{mv.version}"


def rollback(model: str) -> str:
    """Give ``@champion`` back to the version that held it before the current one, if it loads."""
    name = tracking.registered_name(model) if not model.startswith(tracking.REGISTRY_PREFIX) else model
    with lock(name):
        current = champion(name)
        if current is None:
            raise PromotionError(f"{name} has no champion to roll back")
        past = [v for v in history(name) if v != str(current.version)]
        if not past:
            raise PromotionError(f"{name}: no earlier champion than v{current.version} is recorded")
        previous = past[-1]
        client = MlflowClient()
        try:
            check_loads(client.get_model_version(name, previous))
        except PromotionError as exc:
            raise PromotionError(
                f"{name}: no rollback to v{previous}, @champion stays v{current.version}: {exc}"
            ) from exc
        client.set_registered_model_alias(name, tracking.CHAMPION, previous)
        client.set_registered_model_tag(name, tag.CHAMPION_HISTORY, json.dumps(past))
        descriptions.describe_registered_model(name)  # it names the champion
        return f"{name}@{tracking.CHAMPION}: v{current.version} -> v{previous}"
