"""The published ensemble shares one backbone pass with the fusion head only when the weights are
really the same, and falls back to the fusion model's own backbones (with a warning) when not."""

from __future__ import annotations

import json
import re
import warnings

import lightgbm as lgb
import numpy as np
import pytest
import torch
from PIL import Image
from robustness import case

from mmpc import ensemble, kinds, stacking
from mmpc.kinds.fusion import FusionModelConfig
from mmpc.kinds.image import ImageModelConfig
from mmpc.kinds.text import TextModelConfig, TokenizerConfig
from mmpc.models import store
from mmpc.models.runners import FusionMember
from mmpc.serving_input import ParsedRequest

CODES = [10, 40, 50]
TEXTS = ["livre roman poche", "console jeu portable", "manette sans fil"] * 20


TEXT = TextModelConfig(
    backbone_type="camembert",
    backbone_config={
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 40,
    },
    max_len=16,
    tokenizer=TokenizerConfig(train_vocab_size=200),
)


def _text_folder(folder, seed: int):
    torch.manual_seed(seed)
    return kinds.build(TEXT, "text", CODES, folder, TEXTS)


def _image_folder(folder):
    torch.manual_seed(0)
    return kinds.build(
        ImageModelConfig(arch="test_byobnet", pretrained=False, img_size=32), "image", CODES, folder
    )


def _fusion_folder(folder, inputs: dict):
    return kinds.build(
        FusionModelConfig(text=["text"], image="image"), "fusion", CODES, folder, inputs=inputs
    )


def _booster(tmp_path, members):
    names = stacking.feature_names(members, CODES)
    X = np.random.default_rng(0).random((60, len(names)))
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1},
        lgb.Dataset(X, np.arange(60) % 3, feature_name=names),
        3,
    )
    (tmp_path / "b").mkdir()
    return stacking.save(booster, tmp_path / "b")


@pytest.fixture
def members(tmp_path):
    _text_folder(tmp_path / "text", seed=0)
    _image_folder(tmp_path / "image")
    return {"text": tmp_path / "text", "image": tmp_path / "image"}


def _request():
    img = Image.new("RGB", (40, 40), (200, 10, 10))
    return ParsedRequest(["console jeu", "livre"], [img, None], ["ok", "missing"])


def test_identical_backbones_run_once_for_both_heads(tmp_path, members):
    _fusion_folder(tmp_path / "fusion", members)
    order = {**members, "fusion": tmp_path / "fusion"}
    folder = ensemble.build(tmp_path / "ens", order, {}, _booster(tmp_path, list(order)), CODES, top_k=2)
    assert not (folder / "members" / "fusion" / "inputs").exists()  # only the head is bundled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor = ensemble.EnsemblePredictor(folder)
    fusion = predictor.models["fusion"]
    assert isinstance(fusion, FusionMember) and fusion.shares and not fusion.inputs
    out = predictor.predict(_request())
    assert list(out["image_status"]) == ["ok", "missing"] and out["prdtypecode"].isin(CODES).all()


def test_different_weights_are_caught_and_run_separately(tmp_path, members):
    # The fusion model was built on another training of the text model: same architecture, other weights.
    _text_folder(tmp_path / "other_text", seed=1)
    _fusion_folder(tmp_path / "fusion", {"text": tmp_path / "other_text", "image": members["image"]})
    order = {**members, "fusion": tmp_path / "fusion"}
    folder = ensemble.build(tmp_path / "ens", order, {}, _booster(tmp_path, list(order)), CODES, top_k=2)
    assert (folder / "members" / "fusion" / "inputs" / "text").is_dir()  # its own backbones are bundled
    with pytest.warns(UserWarning, match="frozen backbones differ"):
        predictor = ensemble.EnsemblePredictor(folder)
    assert not predictor.models["fusion"].shares and set(predictor.models["fusion"].inputs) == {
        "text",
        "image",
    }
    request = _request()
    probs = predictor.level1_probabilities(request.texts, request.images)
    assert np.isnan(probs["fusion"][1]).all() and np.isfinite(probs["fusion"][0]).all()


def test_a_booster_for_other_members_is_refused(tmp_path, members):
    _fusion_folder(tmp_path / "fusion", members)
    order = {**members, "fusion": tmp_path / "fusion"}
    folder = ensemble.build(
        tmp_path / "ens", order, {}, _booster(tmp_path, ["text", "image"]), CODES, top_k=2
    )
    with pytest.raises(store.ModelFolderError, match="do not match the members"):
        ensemble.EnsemblePredictor(folder)


def _flip(path, at: int, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + n] = bytes(b ^ 0xFF for b in data[at : at + n])
    path.write_bytes(bytes(data))


def _cut(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (what is damaged, how, the error it must give); each names the file.
DAMAGE = {
    "image weights with 64 bytes flipped": (
        "members/image/model.safetensors",
        lambda p: _flip(p, p.stat().st_size // 2),
        r"members/image/model\.safetensors: SHA-256 \w+ does not match the recorded \w+",
    ),
    "text weights cut in half": (
        "members/text/model.safetensors",
        _cut,
        r"members/text/model\.safetensors: SHA-256 .* does not match",
    ),
    "booster cut in half": ("booster.txt", _cut, r"booster\.txt: SHA-256 .* does not match"),
    "ensemble.json cut in half": ("ensemble.json", _cut, r"ensemble\.json: not readable JSON"),
    "meta.json cut in half": ("members/image/meta.json", _cut, r"image/meta\.json: not readable JSON"),
}


REFUSED = "the ensemble refuses to load with an error naming the file (mmpc commands: exit 2); no crash"


@pytest.mark.parametrize(
    "damage", [case("models", f"ensemble folder: {d}", REFUSED, d, id=d) for d in DAMAGE]
)
def test_a_damaged_file_refuses_to_load_and_is_named(tmp_path, members, damage, observed):
    folder = ensemble.build(tmp_path / "ens", members, {}, _booster(tmp_path, list(members)), CODES, top_k=2)
    ensemble.EnsemblePredictor(folder)  # loads whole
    relative, spoil, message = DAMAGE[damage]
    spoil(folder / relative)
    with pytest.raises(store.ModelFolderError, match=message) as err:
        ensemble.EnsemblePredictor(folder)
    observed("refused", _shown(err.value, folder))


def _shown(exc: Exception, folder) -> str:
    """The error as a user reads it, the test's folder and the digests (run-dependent) replaced."""
    return re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", str(exc).replace(str(folder), "<ensemble>"))


@pytest.mark.robustness(
    "models",
    "ensemble folder without a recorded booster digest (built earlier): booster cut in half",
    "refused before LightGBM parses it (its parser aborts the process on a file cut short), naming the file",
)
def test_a_booster_cut_short_without_a_recorded_digest_is_refused_not_a_crash(tmp_path, members, observed):
    # An ensemble built before the digest was recorded: LightGBM's parser would abort the process.
    folder = ensemble.build(tmp_path / "ens", members, {}, _booster(tmp_path, list(members)), CODES, top_k=2)
    manifest = json.loads((folder / ensemble.MANIFEST).read_text())
    del manifest["booster_sha256"]
    (folder / ensemble.MANIFEST).write_text(json.dumps(manifest))
    ensemble.EnsemblePredictor(folder)
    _cut(folder / stacking.BOOSTER_FILE)
    with pytest.raises(store.ModelFolderError, match=r"booster\.txt: not a whole LightGBM model") as err:
        ensemble.EnsemblePredictor(folder)
    observed("refused", _shown(err.value, folder))
