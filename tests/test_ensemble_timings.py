"""``EnsemblePredictor.timings``: the seconds each member's forward and the booster took in the last
call, in the order the members ran, refreshed by every call (the serving benchmark's stage breakdown
reads nothing else)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from PIL import Image
from test_ensemble import CODES, _image_folder, _text_folder

from mmpc import ensemble, stacking
from mmpc.serving_input import ParsedRequest


def _ensemble(tmp_path):
    folders = {
        "text": _text_folder(tmp_path / "text", seed=0),
        "image": _image_folder(tmp_path / "image"),
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
