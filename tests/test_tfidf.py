"""The TF-IDF level-1 kind: saved as arrays + JSON, its probabilities equal scikit-learn's, and it is a
member like any other (loaded by its kind, the ensemble, recipes)."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmpc import ensemble, kinds, stacking
from mmpc.catalog import read_catalog
from mmpc.demo_catalog import write_demo_catalog
from mmpc.kinds.tfidf import TfidfFeatures, TfidfModelConfig
from mmpc.models import store
from mmpc.models.tfidf import TfidfRunner
from mmpc.recipe import RecipeError, from_dict
from mmpc.serving_input import ParsedRequest
from mmpc.training import tfidf as train_tfidf_mod
from mmpc.training.level1 import RunOptions

SMALL = TfidfModelConfig(
    features=[
        TfidfFeatures(analyzer="word", ngram_range=[1, 2]),
        TfidfFeatures(analyzer="char_wb", ngram_range=[2, 4], min_df=2),
    ]
)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = write_demo_catalog(tmp_path_factory.mktemp("tfidf") / "catalog", size=600, seed=3)
    return read_catalog(root)


def _fit(catalog, cfg, out, train=None):
    train = catalog.split("train") if train is None else train
    vectorizers, model = train_tfidf_mod.fit(cfg, train["text"].tolist(), train["label"].to_numpy(), seed=0)
    runner = train_tfidf_mod.export(out, cfg, vectorizers, model, list(catalog.labels.codes), "tfidf")
    return vectorizers, model, runner


@pytest.mark.parametrize("calibration", ["sigmoid", "temperature"])
def test_saved_model_gives_scikit_learns_probabilities(catalog, tmp_path, calibration):
    cfg = TfidfModelConfig(features=SMALL.features, calibration=calibration)
    vectorizers, model, runner = _fit(catalog, cfg, tmp_path / "m")
    texts = [*catalog.split("test", "stack")["text"].tolist(), "", "texte jamais vu zzz"]
    X = sp.hstack([v.transform(texts) for v in vectorizers], format="csr")
    expected = model.predict_proba(X)
    got = runner.probabilities(texts)
    np.testing.assert_allclose(got[:, model.classes_], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    # and the decision values are the SVM's own
    svm = model.calibrated_classifiers_[0].estimator
    np.testing.assert_allclose(runner.decision(texts), svm.decision_function(X), rtol=1e-12, atol=1e-12)


def test_folder_holds_arrays_and_json_only(catalog, tmp_path):
    _fit(catalog, SMALL, tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["meta.json", "model.safetensors", "vocab_0.json", "vocab_1.json"]
    meta = store.read_meta(tmp_path / "m")
    assert meta["kind"] == "tfidf" and meta["calibration"] == "sigmoid"
    assert meta["weights_sha256"] == store.file_digest(tmp_path / "m" / "model.safetensors")
    vocab = json.loads((tmp_path / "m" / "vocab_0.json").read_text())
    assert isinstance(vocab, list) and all(isinstance(t, str) for t in vocab)
    assert set(store.load_arrays(tmp_path / "m")) == {"coef", "intercept", "a", "b", "idf_0", "idf_1"}


def test_its_kind_loads_it_with_every_code(catalog, tmp_path):
    _fit(catalog, SMALL, tmp_path / "m")
    predictor = kinds.load(tmp_path / "m")
    assert predictor.kind == "tfidf" and not predictor.uses_images
    probs = predictor.predict_proba(["Piscine tubulaire ronde", "Lot de romans"], [None, None])
    assert probs.shape == (2, len(catalog.labels.codes)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_class_missing_from_train_gets_probability_zero(catalog, tmp_path):
    train = catalog.split("train")
    absent = int(train["label"].iloc[0])
    _, model, runner = _fit(catalog, SMALL, tmp_path / "m", train[train["label"] != absent])
    assert absent not in model.classes_
    probs = runner.probabilities(catalog.split("test")["text"].tolist())
    assert (probs[:, absent] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_train_tfidf_logs_one_epoch_with_the_common_metric_names(catalog, tmp_path):
    logged = []
    opts = RunOptions(torch.device("cpu"), 0, "tfidf", lambda m, step: logged.append((step, m)))
    result = train_tfidf_mod.train_tfidf(
        SMALL,
        catalog.split("train"),
        catalog.split("valid"),
        list(catalog.labels.codes),
        tmp_path / "m",
        opts,
    )
    assert result.epochs_run == 1 and result.best_epoch == 1
    step, metrics = logged[0]
    assert step == 1 and {"train_loss", "valid_loss", "valid_macro_f1", "valid_accuracy"} <= set(metrics)
    assert metrics["valid_macro_f1"] == result.best_valid_macro_f1 > 0.3  # far above chance (1/27)


def test_an_ensemble_with_a_tfidf_member_predicts(catalog, tmp_path):
    _fit(catalog, SMALL, tmp_path / "tfidf")
    codes = list(catalog.labels.codes)
    stack = catalog.split("stack", "test")
    probs = TfidfRunner(tmp_path / "tfidf").run(stack["text"].tolist())
    X = stacking.features({"tfidf": probs}, ["tfidf"], codes)
    booster = lgb.train(
        {"objective": "multiclass", "num_class": len(codes), "verbosity": -1, "min_data_in_leaf": 2},
        lgb.Dataset(X, stack["label"].to_numpy()),
        5,
    )
    (tmp_path / "b").mkdir()
    folder = ensemble.build(
        tmp_path / "ens", {"tfidf": tmp_path / "tfidf"}, {}, stacking.save(booster, tmp_path / "b"), codes, 3
    )
    predictor = ensemble.EnsemblePredictor(folder)
    out = predictor.predict(
        ParsedRequest(["Piscine tubulaire", "Roman policier"], [None, None], ["missing"] * 2)
    )
    assert out["prdtypecode"].isin(codes).all() and len(out["top_codes"].iloc[0]) == 3


def test_recipe_parses_tfidf_and_names_bad_keys():
    recipe = from_dict(
        {
            "models": {
                "tfidf": {
                    "kind": "tfidf",
                    "features": [{"analyzer": "char_wb", "ngram_range": [2, 5], "min_df": 2}],
                    "C": 0.3,
                    "calibration": "temperature",
                }
            }
        }
    )
    cfg = recipe.model("tfidf")
    assert isinstance(cfg, TfidfModelConfig) and cfg.features[0].ngram_range == [2, 5] and cfg.C == 0.3
    with pytest.raises(RecipeError, match=r"models\.t\.features\[0\]: unknown key\(s\) \['ngrams'\]"):
        from_dict({"models": {"t": {"kind": "tfidf", "features": [{"ngrams": [1, 2]}]}}})
    with pytest.raises(RecipeError, match=r"models\.t\.features\[0\]\.ngram_range"):
        from_dict({"models": {"t": {"kind": "tfidf", "features": [{"ngram_range": [3, 1]}]}}})
    with pytest.raises(RecipeError, match=r"models\.t\.calibration: 'isotonic' is not one of"):
        from_dict({"models": {"t": {"kind": "tfidf", "calibration": "isotonic"}}})


def test_a_fusion_cannot_take_a_tfidf_model_as_input():
    models = {
        "tfidf": {"kind": "tfidf"},
        "img": {"kind": "image"},
        "fusion": {"kind": "fusion", "text": ["tfidf"], "image": "img"},
    }
    with pytest.raises(RecipeError, match=r"models\.fusion: input .tfidf. is not a text model"):
        from_dict({"models": models})
