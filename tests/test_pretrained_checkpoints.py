"""Pretrained checkpoints from local folders, offline: CamemBERT and FlauBERT with their own tokenizer
classes, timm weights from a file or a folder, and wrong checkpoints refused before training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from checkpoints import camembert_checkpoint, flaubert_checkpoint, timm_weights
from safetensors.torch import load_file
from transformers import CamembertTokenizer, FlaubertTokenizer

from mmpc.models import pretrained, store
from mmpc.models.batching import resolve_device
from mmpc.models.image import ImageClassifier
from mmpc.models.runners import TextRunner
from mmpc.models.text import build_backbone
from mmpc.models.tokenizer import load_tokenizer
from mmpc.recipe import from_dict
from mmpc.training.level1 import RunOptions, train_text

TEXTS = [
    "Coussin décoratif en velours 45x45, bleu nuit, pour le salon de l'appartement",
    "Livre de poche : roman policier d'occasion, très bon état",
    "Console de jeux portable noire avec deux manettes et l'écran tactile",
    "Piscine tubulaire ronde 3 m, pompe de filtration incluse",
    "Figurine de collection peinte à la main, édition limitée",
    "Jeu vidéo PS4 : course automobile en monde ouvert",
] * 10
ARCH = "test_byobnet"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "camembert": camembert_checkpoint(root / "camembert", TEXTS, vocab=120),
        "flaubert": flaubert_checkpoint(root / "flaubert", TEXTS, vocab=300),
        "image_file": timm_weights(root / "imagenet" / f"{ARCH}.safetensors", ARCH),
        "image_folder": timm_weights(root / f"timm-{ARCH}", ARCH, folder=True),
    }


def _text_recipe(name: str, folder: Path | str, backbone_type: str | None = None, **extra):
    cfg = {"kind": "text", "pretrained": str(folder), "head": "cls", "max_len": 32, **extra}
    if backbone_type:
        cfg["backbone_type"] = backbone_type
    return from_dict({"models": {name: cfg}})


def test_checkpoints_load_with_their_own_tokenizer_classes(ckpts):
    cam, flau = load_tokenizer(ckpts["camembert"]), load_tokenizer(ckpts["flaubert"])
    assert isinstance(cam, CamembertTokenizer) and isinstance(flau, FlaubertTokenizer)
    # FlauBERT's Moses pre-tokenisation splits the French elision before BPE.
    pieces = flau.tokenize("l'appartement, 45x45")
    assert pieces[0] == "l'</w>" and ",</w>" in pieces
    assert cam.convert_ids_to_tokens(cam("salon")["input_ids"])[0] == "<s>"


@pytest.mark.parametrize("name", ["camembert", "flaubert"])
def test_backbone_weights_come_from_the_folder(ckpts, name):
    backbone = build_backbone(str(ckpts[name]), None, {})
    saved = load_file(str(ckpts[name] / "model.safetensors"))
    loaded = backbone.state_dict()
    shared = [k for k in saved if k in loaded]
    assert len(shared) >= len(loaded) - 1
    for key in shared:
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)


def test_recipe_reads_a_checkpoint_with_its_own_tokenizer(ckpts):
    recipe = _text_recipe("camembert", ckpts["camembert"], tokenizer={"train_vocab_size": 50})
    assert recipe.models["camembert"].tokenizer.pretrained == str(ckpts["camembert"])


@pytest.mark.parametrize(("name", "backbone_type"), [("camembert", "camembert"), ("flaubert", "flaubert")])
def test_text_model_trains_from_a_checkpoint_folder(ckpts, tmp_path, name, backbone_type):
    """lr 0 for the backbone: the saved backbone is exactly the checkpoint's, the head learned."""
    cfg = _text_recipe(
        name, ckpts[name], backbone_type, train={"epochs": 1, "lr": 0.0, "head_lr": 1e-2, "batch_size": 8}
    ).models[name]
    pretrained.check(name, cfg)
    frame = pd.DataFrame({"text": TEXTS, "label": [i % 6 for i in range(len(TEXTS))]})
    out = tmp_path / "model"
    run = RunOptions(resolve_device("cpu"), 0, name)
    train_text(cfg, frame, frame.head(12), list(range(10, 16)), out, run)
    assert load_tokenizer(out / "tokenizer").get_vocab() == load_tokenizer(ckpts[name]).get_vocab()
    saved = load_file(str(out / store.WEIGHTS))
    original = load_file(str(ckpts[name] / "model.safetensors"))
    backbone = {k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")}
    for key, value in backbone.items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    probs, _ = TextRunner(out).run(TEXTS[:4])
    assert probs.shape == (4, 6)


@pytest.mark.parametrize("source", ["image_file", "image_folder"])
def test_image_backbone_starts_from_local_weights(ckpts, source):
    model = ImageClassifier(ARCH, 27, pretrained=str(ckpts[source]))
    file = ckpts[source] if source == "image_file" else ckpts[source] / "model.safetensors"
    saved = load_file(str(file))
    loaded = model.backbone.state_dict()
    assert set(loaded) <= set(saved)
    for key, value in loaded.items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    pretrained.check(
        "seresnext", from_dict({"models": {"seresnext": _image(ckpts[source])}}).models["seresnext"]
    )


def _image(weights: Path | str, arch: str = ARCH) -> dict:
    return {"kind": "image", "arch": arch, "pretrained": str(weights), "img_size": 32}


def _refusal(ckpts, tmp_path, case: str) -> tuple[str, dict]:
    """A recipe models section with one wrong checkpoint, and what its one-line error must say."""
    cam, flau = str(ckpts["camembert"]), str(ckpts["flaubert"])
    missing = str(tmp_path / "no-such-checkpoint")
    no_config = tmp_path / "empty"
    no_config.mkdir(exist_ok=True)
    text = {"kind": "text", "head": "cls", "max_len": 32}
    return {
        "missing": (
            "models.camembert.pretrained: " + missing + ": no such checkpoint folder",
            {"camembert": {**text, "pretrained": missing}},
        ),
        "no-config": (f"{no_config}: no config.json", {"camembert": {**text, "pretrained": str(no_config)}}),
        "other-architecture": (
            f"models.camembert.pretrained: {flau}: a flaubert checkpoint, "
            "but the recipe's backbone_type is camembert",
            {"camembert": {**text, "pretrained": flau, "backbone_type": "camembert"}},
        ),
        "tokenizer-too-large": (
            f"models.camembert.tokenizer: {flau}: ",
            {"camembert": {**text, "pretrained": cam, "tokenizer": {"pretrained": flau}}},
        ),
        "too-long": (
            f"{cam}: max_len 512 exceeds",
            {"camembert": {**text, "pretrained": cam, "max_len": 512}},
        ),
        "image-missing": (
            f"models.seresnext.pretrained: {missing}: no such weights file or folder",
            {"seresnext": _image(missing)},
        ),
        "image-other-architecture": (
            f"weights of {ARCH}, but the recipe's arch is resnet18",
            {"seresnext": _image(ckpts["image_folder"], "resnet18")},
        ),
        "image-file-of-another-architecture": (
            f"models.seresnext.pretrained: {ckpts['image_file']}: lacks",
            {"seresnext": _image(ckpts["image_file"], "resnet18")},
        ),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "no-config",
        "other-architecture",
        "tokenizer-too-large",
        "too-long",
        "image-missing",
        "image-other-architecture",
        "image-file-of-another-architecture",
    ],
)
def test_wrong_checkpoint_is_refused_with_one_line(ckpts, tmp_path, case):
    expected, models = _refusal(ckpts, tmp_path, case)
    recipe = from_dict({"models": models})
    ((name, cfg),) = recipe.models.items()
    with pytest.raises(pretrained.CheckpointError) as err:
        pretrained.check(name, cfg)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_mmpc_train_refuses_a_wrong_checkpoint_before_any_run(ckpts, tmp_path):
    """Exit 2, one line naming the model and the path; no MLflow run was started."""
    from mmpc.demo_catalog import write_demo_catalog

    catalog = write_demo_catalog(tmp_path / "catalog", size=120, seed=3, image_size=32)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: wrong\nmodels:\n  camembert:\n    kind: text\n    backbone_type: camembert\n"
        f"    pretrained: {ckpts['flaubert']}\n"
    )
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmpc.cli",
            "train",
            "camembert",
            "--catalog",
            str(catalog),
            "--recipe",
            str(recipe),
            "--workdir",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("error: models.camembert.pretrained: ") and str(ckpts["flaubert"]) in lines[-1]
    )
    assert "Traceback" not in proc.stderr
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs == []


def test_checkpoint_fingerprint_follows_the_files(ckpts, tmp_path):
    """A training key changes when the checkpoint's weights change under the same path."""
    import shutil

    folder = shutil.copytree(ckpts["camembert"], tmp_path / "camembert")
    cfg = _text_recipe("camembert", folder).models["camembert"]
    before = pretrained.fingerprint(cfg)
    assert str(folder / "model.safetensors") in before and str(folder / "tokenizer.json") in before
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("32", "32 "))
    after = pretrained.fingerprint(cfg)
    assert after != before and set(after) == set(before)
    assert pretrained.fingerprint(_text_recipe("camembert", "camembert-base").models["camembert"]) == {}
