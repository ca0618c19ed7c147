"""``EnsemblePredictor.timings``: the seconds each member's forward and the booster took in the last
call, in the order the members ran, refreshed by every call (the serving benchmark's stage breakdown
reads nothing else)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from PIL import Image

from mmpc import ensemble, kinds, stacking
from mmpc.kinds.image import ImageModelConfig
from mmpc.kinds.text import TextModelConfig, TokenizerConfig
from mmpc.serving_input import ParsedRequest

CODES = [10, 40, 50]
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


def _ensemble(tmp_path):
    folders = {
        "text": kinds.build(TEXT, "text", CODES, tmp_path / "text", ["livre roman", "console jeu"] * 20),
        "image": kinds.build(
            ImageModelConfig(arch="test_byobnet", pretrained=False, img_size=32),
            "image",
            CODES,
            tmp_path / "image",
        ),
    }
    names = stacking.feature_names(list(folders), CODES)
    X = np.random.default_rng(0).random((60, len(names)))
    params = {"objective": "multiclass", "num_class": 3, "verbosity": -1}
    booster = lgb.train(params, lgb.Dataset(X, np.arange(60) % 3, feature_name=names), 3)
    (tmp_path / "b").mkdir()
    booster_file = stacking.save(booster, tmp_path / "b")
    return ensemble.build(tmp_path / "ens", folders, {}, booster_file, CODES, top_k=2)


def test_timings_record_each_member_and_the_booster_of_the_last_call(tmp_path):
    predictor = ensemble.EnsemblePredictor(_ensemble(tmp_path))
    assert predictor.timings.members == {} and predictor.timings.booster == 0.0
    img = Image.new("RGB", (40, 40), (200, 10, 10))
    predictor.predict(ParsedRequest(["console jeu", "livre"], [img, None], ["ok", "missing"]))
    first = predictor.timings
    assert list(first.members) == ["text", "image"]
    assert all(s > 0 for s in first.members.values()) and first.booster > 0
    predictor.predict_proba(["livre"], [None])
    assert predictor.timings is not first and list(predictor.timings.members) == ["text", "image"]
