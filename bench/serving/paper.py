"""The paper's exact shapes in process: the level-1 models of the recipe ``paper-shapes``
(FlauBERT-base, CamemBERT-base with the paper's flatten head, SE-ResNeXt-50, the concat fusion),
written by their kinds with random weights as training would write them, an ensemble over them with a
random booster, against the naive composition (each level-1 model loaded on its own, then the booster)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.serving.common import batches, log
from bench.serving.inprocess import interleaved

RECIPE = "paper-shapes"


@dataclass
class PaperSettings:
    recipe: str = RECIPE  # whose models are built (any recipe: a small one checks the wiring quickly)
    batch: int = 8  # products per call
    n_batches: int = 6  # timed batches (at most)
    max_s: float = 120.0
    vocab: int | None = 30000  # WordPiece vocabulary trained on the request texts; None: the recipe's
    threads: int = 1  # torch intra-op threads


def paper_recipe(name: str, vocab: int | None) -> Any:
    from mmpc.recipe import load_recipe

    recipe = load_recipe(name)
    for cfg in recipe.models.values():
        if vocab and cfg.kind == "text":
            cfg.tokenizer.train_vocab_size = vocab
    return recipe


def random_booster(out: Path, members: list[str], codes: list[int], seed: int = 0) -> Path:
    """A LightGBM stacker of the right shape, trained on random probability features."""
    import lightgbm as lgb

    from mmpc import stacking

    rng = np.random.default_rng(seed)
    n, k = 1500, len(codes)
    X = pd.DataFrame(
        rng.dirichlet(np.ones(k), size=(n, len(members))).reshape(n, -1).astype(np.float32),
        columns=stacking.feature_names(members, codes),
    )
    y = rng.integers(0, k, n)
    params = {"objective": "multiclass", "num_class": k, "verbosity": -1, "seed": seed, "num_leaves": 4}
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=100)
    out.mkdir(parents=True, exist_ok=True)
    return stacking.save(booster, out)


def build_models(recipe: Any, root: Path, texts: list[str], codes: list[int]) -> dict[str, Path]:
    """Every model of the recipe written by its kind, those read by others (fusion's inputs) first."""
    from mmpc import kinds, pipeline

    base, readers = pipeline.level1_order(recipe)
    folders: dict[str, Path] = {}
    for name in [*base, *readers]:
        cfg = recipe.models[name]
        inputs = {n: folders[n] for n in kinds.of(cfg).inputs(cfg)}
        folders[name] = kinds.build(cfg, name, codes, root / name, texts=texts, inputs=inputs)
    return {n: folders[n] for n in recipe.models}  # the recipe's order: the stacking order


def build_ensemble(
    recipe: Any, root: Path, texts: list[str], codes: list[int]
) -> tuple[Path, dict[str, Path]]:
    """(ensemble folder, level-1 folders) of the recipe's models with random weights."""
    from mmpc import ensemble

    folders = build_models(recipe, root, texts, codes)
    booster = random_booster(root / "booster", list(folders), codes)
    versions = dict.fromkeys(folders, "0")
    e = recipe.ensemble
    return ensemble.build(
        root / "ensemble", folders, versions, booster, codes, e.top_k, e.batch_size
    ), folders


def parameters_m(folder: Path) -> float:
    """Millions of parameters in a model folder's weights (fusion: its head)."""
    from safetensors import safe_open

    from mmpc.models import store

    with safe_open(str(folder / store.WEIGHTS), "pt") as f:
        names = list(f.keys())
        return round(sum(int(np.prod(f.get_slice(k).get_shape())) for k in names) / 1e6, 1)


def paper_size(
    requests_frame: pd.DataFrame, texts: list[str], codes: list[int], root: Path, s: PaperSettings
) -> dict[str, Any]:
    """EnsemblePredictor against each level-1 model on its own + the booster, in process."""
    import torch

    from mmpc import kinds, serving_input, stacking
    from mmpc.ensemble import EnsemblePredictor

    t0 = time.perf_counter()
    recipe = paper_recipe(s.recipe, s.vocab)
    ens_dir, folders = build_ensemble(recipe, root, texts, codes)
    # One intra-op thread by default: on these shared 2-core machines two threads make every op wait
    # for a descheduled thread whenever another job runs (seconds per product), which drowns the ratio.
    torch.set_num_threads(s.threads)
    ens = EnsemblePredictor(ens_dir)
    level1 = {n: kinds.load(f) for n, f in folders.items()}
    booster = stacking.load(ens_dir)
    members = list(folders)
    built = time.perf_counter() - t0
    log(f"paper-size models built and loaded in {built:.0f} s")

    def naive(frame: pd.DataFrame) -> np.ndarray:
        req = serving_input.parse(frame)
        probs = {n: m.predict_proba(req.texts, req.images) for n, m in level1.items()}
        return booster.predict(stacking.features(probs, members, codes))

    frames = batches(requests_frame, s.batch)[: s.n_batches + 1]
    frames[0] = frames[0].head(2)  # a small warm-up: paper-size batches take seconds each on 2 cores
    calls = {"ensemble": lambda f: ens.predict(serving_input.parse(f)), "naive": naive}
    speed = interleaved(calls, frames, s.max_s)
    params = {n: parameters_m(f) for n, f in folders.items()}
    text = next(n for n, cfg in recipe.models.items() if cfg.kind == "text")
    tokens = [len(ids) for ids in level1[text].tokenize(serving_input.parse(requests_frame).texts)]
    log(f"paper-size parameters (millions): {params}; torch threads {torch.get_num_threads()}")
    return {
        "ensemble": speed["ensemble"],
        "naive": speed["naive"],
        "products": speed["products"],
        "build_s": built,
        "params_m": params,
        "median_tokens": float(np.median(tokens)),
        "threads": float(torch.get_num_threads()),
    }
