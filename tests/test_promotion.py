"""@champion moves: only to a model at least as good on the same test split, by hand with a split
check, back with rollback, and never torn by two promotions at once."""

from __future__ import annotations

import re
import shutil
import threading

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from robustness import case

from mmpc import promotion
from mmpc import tags as tag
from mmpc.cli import main

NAME = "mmpc-ensemble"


def _no_rescore(mv):
    raise AssertionError("same test split: no re-scoring needed")


def test_champion_moves_only_to_an_equal_or_better_model(registry):
    add, _ = registry
    v1, v2, v3 = add(0.80), add(0.70), add(0.80)
    assert promotion.promote_if_better(v1, 0.80, _no_rescore).reason == "no champion yet"
    decision = promotion.promote_if_better(v2, 0.70, _no_rescore)
    assert not decision.promoted and decision.champion_version == str(v1.version) and "<" in decision.reason
    assert promotion.promote_if_better(v3, 0.80, _no_rescore).promoted  # ties move the alias
    assert str(promotion.champion(NAME).version) == str(v3.version)


def test_a_champion_from_another_test_split_is_rescored(registry):
    add, _ = registry
    old = add(0.95, split="old-split")
    promotion.promote_if_better(old, 0.95, _no_rescore)
    new = add(0.85, split="new-split")
    decision = promotion.promote_if_better(new, 0.85, lambda mv: 0.80)
    assert decision.promoted and "re-scored" in decision.reason


def test_manual_promotion_checks_the_test_split_and_rollback_restores(registry, capsys):
    add, workdir = registry
    v1, v2, other = add(0.8), add(0.7), add(0.9, split="fp-b")
    promotion.promote_if_better(v1, 0.8, _no_rescore)
    assert main(["promote", str(other.version), "--workdir", str(workdir)]) == 2
    assert "not comparable" in capsys.readouterr().err
    assert main(["promote", str(v2.version), "--workdir", str(workdir)]) == 0
    assert str(promotion.champion(NAME).version) == str(v2.version)
    assert main(["rollback", "--workdir", str(workdir)]) == 0
    assert str(promotion.champion(NAME).version) == str(v1.version)
    assert main(["rollback", "--workdir", str(workdir)]) == 2  # nothing earlier than v1


@pytest.mark.parametrize("first", ["worse", "better"])
def test_two_concurrent_promotions_cannot_both_win(registry, monkeypatch, first):
    add, _ = registry
    base = add(0.5)
    promotion.promote_if_better(base, 0.5, _no_rescore)
    worse, better = add(0.7), add(0.9)
    start = threading.Barrier(2)
    original = promotion.champion

    def slow_champion(name):  # widen the read-then-write window a promotion without a lock would race in
        current = original(name)
        threading.Event().wait(0.3)
        return current

    monkeypatch.setattr(promotion, "champion", slow_champion)
    order = [(worse, 0.7), (better, 0.9)] if first == "worse" else [(better, 0.9), (worse, 0.7)]
    results = {}

    def run(mv, score):
        start.wait()
        results[mv.version] = promotion.promote_if_better(mv, score, _no_rescore)

    threads = [threading.Thread(target=run, args=args) for args in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert str(original(NAME).version) == str(better.version)
    # whichever took the lock first, the better model ends as champion and the history agrees
    assert results[better.version].promoted
    assert promotion.history(NAME)[-1] == str(better.version)


def _broken_copy(tmp_path, damage: str):
    folder = tmp_path / f"broken-{damage.replace(' ', '-')}"
    shutil.copytree(tmp_path / "model", folder)
    if damage == "no artifacts":
        shutil.rmtree(folder)
        folder.mkdir()
    else:
        (folder / damage).unlink()
    return folder


NOT_CROWNED = "exit 2 naming the version and the missing file; @champion stays where it was"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        case("models", "mmpc promote --force: the version's artifact folder is empty", NOT_CROWNED,
             "no artifacts", "MLmodel", id="empty"),
        case("models", "mmpc promote --force: the version's MLmodel is missing", NOT_CROWNED,
             "MLmodel", "MLmodel", id="mlmodel"),
        case("models", "mmpc promote --force: the version's python_model.pkl is missing", NOT_CROWNED,
             "python_model.pkl", "python_model.pkl", id="model-file"),
    ],
)  # fmt: skip
def test_force_never_crowns_a_version_that_does_not_load(registry, capsys, damage, named, observed):
    add, workdir = registry
    good = add(0.8)
    promotion.promote_if_better(good, 0.8, _no_rescore)
    broken = add(0.9, split="fp-b", folder=_broken_copy(workdir, damage))
    assert main(["promote", str(broken.version), "--force", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"v{broken.version} does not load" in err and named in err and len(err.splitlines()) == 1
    assert str(promotion.champion(NAME).version) == str(good.version)
    shown = re.sub(r"/tmp/\S+/", "<tmp>/", err.removeprefix("error: "))
    observed("exit 2", f"{shown}; @champion stays v{good.version}")
    assert main(["promote", str(add(0.9, split="fp-b").version), "--force", "--workdir", str(workdir)]) == 0


NOT_CROWNED_AUTO = "not promoted; the decision and the stacking run's tags say it does not load"


@pytest.mark.robustness(
    "models", "automatic promotion after a retrain: the better version does not load", NOT_CROWNED_AUTO
)
def test_a_better_version_that_does_not_load_is_not_crowned_after_a_retrain(registry, tmp_path, observed):
    from mmpc.catalog import read_catalog
    from mmpc.demo_catalog import write_demo_catalog
    from mmpc.pipeline.promote import decide_promotion

    add, workdir = registry
    good = add(0.8)
    promotion.promote_if_better(good, 0.8, _no_rescore)
    with mlflow.start_run() as run:  # the stacking run that registered it
        pass
    client = MlflowClient()
    mv = client.create_model_version(NAME, str(_broken_copy(workdir, "MLmodel")), run_id=run.info.run_id)
    client.set_model_version_tag(NAME, mv.version, "test_macro_f1", "0.900000")
    client.set_model_version_tag(NAME, mv.version, tag.TEST_FINGERPRINT, "fp-a")
    catalog = read_catalog(write_demo_catalog(tmp_path / "catalog", size=120, seed=3))
    decision = decide_promotion(catalog, client.get_model_version(NAME, mv.version))
    assert not decision.promoted and decision.champion_version == str(good.version)
    assert f"v{mv.version} does not load" in decision.reason and "MLmodel" in decision.reason
    assert ">= champion" in decision.reason  # it scored better: the load is what stopped it
    tags = client.get_run(run.info.run_id).data.tags
    assert tags[tag.PROMOTED] == "False" and tags[tag.PROMOTION_REASON] == decision.reason
    assert str(promotion.champion(NAME).version) == str(good.version)
    shown = re.sub(r"/tmp/\S+/", "<tmp>/", decision.reason)
    observed("not promoted", f"{shown}; @champion stays v{good.version}")


def test_a_first_version_that_does_not_load_is_not_crowned(registry):
    add, workdir = registry
    broken = add(0.9, folder=_broken_copy(workdir, "no artifacts"))
    decision = promotion.promote_if_better(broken, 0.9, _no_rescore)
    assert not decision.promoted and decision.champion_version is None
    assert "does not load" in decision.reason and "no champion yet" in decision.reason
    assert promotion.champion(NAME) is None


@pytest.mark.robustness(
    "models",
    "mmpc rollback: the previous champion's artifacts are gone",
    "exit 2 naming the version and what failed; @champion stays where it was",
)
def test_rollback_refuses_a_previous_champion_that_does_not_load(registry, capsys, observed):
    add, workdir = registry
    folder = shutil.copytree(workdir / "model", workdir / "old-champion")
    old, new = add(0.8, folder=folder), add(0.9)
    promotion.promote_if_better(old, 0.8, _no_rescore)
    promotion.promote_if_better(new, 0.9, _no_rescore)
    (folder / "python_model.pkl").unlink()  # the old champion's artifacts, damaged since
    assert main(["rollback", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no rollback to v{old.version}" in err
    assert f"v{old.version} does not load" in err and "python_model.pkl" in err
    assert str(promotion.champion(NAME).version) == str(new.version)
    assert promotion.history(NAME)[-1] == str(new.version)
    shown = re.sub(r"/tmp/\S+/", "<tmp>/", err.removeprefix("error: "))
    observed("exit 2", shown)
