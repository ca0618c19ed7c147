"""The kind registry: every layer asks it, so a kind registered from a module of its own trains,
registers, stacks and serves through the unchanged pipeline; the built-in kinds build small folders
that load as their training writes them."""

from __future__ import annotations

import numpy as np
import pytest
from prior_kind import KIND, PriorMeta

from mmpc import ensemble, kinds, pipeline, tracking
from mmpc.demo_catalog import write_demo_catalog
from mmpc.kinds.base import REGISTRY
from mmpc.models import store
from mmpc.recipe import RecipeError, from_dict, load_recipe

CODES = [10, 40, 50, 60]


@pytest.fixture
def prior_kind():
    kinds.register(KIND)
    yield KIND
    del REGISTRY[KIND.name]


def test_the_built_in_kinds_are_registered_with_their_recipe_sections():
    assert kinds.names() == ["fusion", "image", "text", "tfidf"]
    recipe = load_recipe("demo")
    for name, cfg in recipe.models.items():
        assert isinstance(cfg, kinds.of(cfg).config), name
    assert kinds.of(recipe.models["fusion"]).inputs(recipe.models["fusion"]) == [
        "flaubert",
        "camembert",
        "seresnext",
    ]


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(
        RecipeError, match=r"models\.m\.kind: must be one of \['fusion', 'image', 'text', 'tfidf'\]"
    ):
        from_dict({"models": {"m": {"kind": "prior"}}})


def test_a_registered_kind_parses_builds_and_loads(prior_kind, tmp_path):
    recipe = from_dict({"models": {"p": {"kind": "prior", "smoothing": 2.0}}})
    assert recipe.models["p"].smoothing == 2.0
    with pytest.raises(RecipeError, match=r"models\.p: unknown key\(s\) \['smothing'\]"):
        from_dict({"models": {"p": {"kind": "prior", "smothing": 2.0}}})
    kinds.build(recipe.models["p"], "p", CODES, tmp_path / "p")
    meta = kinds.read_meta(tmp_path / "p")
    assert isinstance(meta, PriorMeta) and meta.smoothing == 2.0 and meta.codes == CODES
    probs = kinds.load(tmp_path / "p").predict_proba(["a", "b"], [None, None])
    np.testing.assert_allclose(probs, 0.25)


def test_a_meta_lacking_a_field_of_its_kind_is_a_clear_error(prior_kind, tmp_path):
    kinds.build(from_dict({"models": {"p": {"kind": "prior"}}}).models["p"], "p", CODES, tmp_path / "p")
    meta = store.read_meta(tmp_path / "p")
    del meta["smoothing"]
    store.save_arrays(tmp_path / "p", store.load_arrays(tmp_path / "p"), meta)
    with pytest.raises(store.ModelFolderError, match=r"meta\.json lacks \['smoothing'\] for a PriorMeta"):
        kinds.load(tmp_path / "p")


def test_a_new_kind_trains_stacks_and_publishes_through_the_pipeline(prior_kind, tmp_path, monkeypatch):
    """No line of the pipeline or the ensemble names the kind: it trains in its MLflow run, registers,
    and stacks beside TF-IDF into a published ensemble that answers."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    root = write_demo_catalog(tmp_path / "catalog", size=400, seed=5, image_size=32)
    recipe = load_recipe("demo", {"models": {"prior": {"kind": "prior"}, "tfidf": {"kind": "tfidf"}}})
    catalog = pipeline.open_catalog(root, recipe)
    versions = {
        n: pipeline.train_level1(catalog, recipe, n, tmp_path / "work").version for n in ("prior", "tfidf")
    }
    published = pipeline.stack_and_publish(catalog, recipe, tmp_path / "work", versions, promote=False)
    assert set(published.scores) == {"prior", "tfidf", "stack"}
    assert published.scores["tfidf"] > published.scores["prior"]
    folder = tracking.download_artifacts(tracking.resolve("ensemble", published.version), tmp_path / "ens")
    predictor = ensemble.EnsemblePredictor(folder / "artifacts" / "ensemble")
    assert set(predictor.models) == {"prior", "tfidf"} and not predictor.uses_images
    probs = predictor.predict_proba(["Piscine tubulaire ronde"], [None])
    assert probs.shape == (1, len(catalog.labels.codes))
