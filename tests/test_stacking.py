"""The level-2 stacker: features, CV, missing values, the text booster format."""

from __future__ import annotations

import numpy as np
import pytest

from mmpc import stacking
from mmpc.metrics import macro_f1
from mmpc.recipe import StackingConfig

C = 6
CODES = [10, 40, 50, 60, 1140, 1160]
CFG = StackingConfig(
    params={"learning_rate": 0.1, "num_leaves": 8, "min_data_in_leaf": 5},
    num_boost_round=200,
    early_stopping_rounds=20,
    folds=4,
)


def _fake_level1(y: np.ndarray, confused: list[tuple[int, int]], rng, noise: float = 1.0) -> np.ndarray:
    """Probabilities from a model that cannot tell the classes of each ``confused`` pair apart."""
    logits = rng.normal(0, noise, (len(y), C))
    logits[np.arange(len(y)), y] += 3.0
    for a, b in confused:
        rows = np.isin(y, [a, b])
        logits[rows, a] = logits[rows, b] = np.maximum(logits[rows, a], logits[rows, b])
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 1200)
    probs = {"text": _fake_level1(y, [(0, 1)], rng), "image": _fake_level1(y, [(2, 3)], rng)}
    return y, probs


def test_features_are_named_by_model_and_code(data):
    y, probs = data
    X = stacking.features(probs, ["text", "image"], CODES)
    assert X.shape == (len(y), 2 * C)
    assert list(X.columns[:2]) == ["text__10", "text__40"] and X.columns[-1] == "image__1160"
    with pytest.raises(KeyError, match="fusion"):
        stacking.features(probs, ["text", "fusion"], CODES)


def test_stack_beats_each_model_when_their_confusions_differ(data):
    y, probs = data
    X = stacking.features(probs, ["text", "image"], CODES)
    tr, te = slice(0, 800), slice(800, None)
    result = stacking.fit(X.iloc[tr], y[tr], CFG, C, seed=0)
    assert 1 <= result.best_rounds <= CFG.num_boost_round
    stacked = macro_f1(y[te], result.booster.predict(X.iloc[te]).argmax(1))
    singles = [macro_f1(y[te], p[te].argmax(1)) for p in probs.values()]
    assert stacked > max(singles) + 0.05
    assert abs(result.cv_macro_f1 - stacked) < 0.1  # the CV estimate is honest


def test_missing_image_features_are_routed_not_fatal(data):
    y, probs = data
    probs = {k: v.copy() for k, v in probs.items()}
    probs["image"][::5] = np.nan
    X = stacking.features(probs, ["text", "image"], CODES)
    result = stacking.fit(X, y, CFG, C, seed=0)
    out = result.booster.predict(X.iloc[::5])
    assert np.isfinite(out).all() and np.allclose(out.sum(1), 1)


def test_booster_round_trips_in_lightgbm_text_format(tmp_path, data):
    y, probs = data
    X = stacking.features(probs, ["text", "image"], CODES)
    result = stacking.fit(X, y, CFG, C, seed=0)
    path = stacking.save(result.booster, tmp_path)
    assert path.read_text().startswith("tree\n")
    again = stacking.load(tmp_path)
    np.testing.assert_allclose(again.predict(X.head(20)), result.booster.predict(X.head(20)))


def test_same_seed_same_stacker(data):
    y, probs = data
    X = stacking.features(probs, ["text", "image"], CODES)
    a = stacking.fit(X, y, CFG, C, seed=3).booster.predict(X.head(50))
    b = stacking.fit(X, y, CFG, C, seed=3).booster.predict(X.head(50))
    np.testing.assert_array_equal(a, b)


def test_table_lists_models_then_stack():
    text = stacking.table({"flaubert": 0.81, "stack": 0.9})
    lines = text.splitlines()
    assert "flaubert" in lines[2] and "0.8100" in lines[2] and "stack" in lines[3]


def test_shap_contributions_add_up_to_the_raw_score(data):
    y, probs = data
    probs = {k: v.copy() for k, v in probs.items()}
    probs["image"][::7] = np.nan  # missing image features are explained too
    X = stacking.features(probs, ["text", "image"], CODES)
    booster = stacking.fit(X, y, CFG, C, seed=0).booster
    contributions, base = stacking.Explainer(booster, ["text", "image"], CODES).explain(X.head(60))
    raw = booster.predict(X.head(60), raw_score=True)
    predicted = raw.argmax(1)
    np.testing.assert_allclose(contributions.sum(axis=1) + base, raw[np.arange(60), predicted], atol=1e-6)
    assert list(contributions.columns) == ["text", "image"]


def test_table2_names_the_only_right_model_and_the_driver(data):
    y, probs = data
    X = stacking.features(probs, ["text", "image"], CODES)
    booster = stacking.fit(X, y, CFG, C, seed=0).booster
    contributions, _ = stacking.Explainer(booster, ["text", "image"], CODES).explain(X)
    stacked = booster.predict(X).argmax(1)
    table = stacking.only_one_right(probs, y, stacked, contributions)
    assert len(table) > 0 and set(table["only_right"]) <= {"text", "image"}
    row = table.iloc[0]
    right = [m for m in ("text", "image") if probs[m][row["row"]].argmax() == y[row["row"]]]
    assert right == [row["only_right"]]
    # where the stack recovered such a product, the model that was right usually drove it
    recovered = table[table["stack_right"]]
    assert (recovered["driver"] == recovered["only_right"]).mean() > 0.6
