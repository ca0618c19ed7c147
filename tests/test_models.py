"""Level-1 networks: heads, shapes, embeddings, and their folders round-tripping through safetensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmpc.kinds.image import ImageMeta
from mmpc.kinds.text import TextMeta
from mmpc.models import store
from mmpc.models.fusion import FusionHead
from mmpc.models.image import ImageClassifier
from mmpc.models.runners import ImageRunner, TextRunner
from mmpc.models.text import TextClassifier, build_backbone
from mmpc.models.tokenizer import special_token_ids, train_wordpiece

TEXTS = [
    "Coussin décoratif velours 45x45 bleu",
    "Livre de poche roman policier occasion",
    "Console de jeux portable noire",
    "Piscine tubulaire ronde 3m",
] * 20
TINY = {
    "flaubert": {"emb_dim": 32, "n_layers": 1, "n_heads": 2, "max_position_embeddings": 64},
    "camembert": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 80,
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=300)


def _model(tokenizer, backbone_type: str, head: str, max_len: int = 16) -> TextClassifier:
    backbone = build_backbone(
        None, backbone_type, TINY[backbone_type], len(tokenizer), special_token_ids(tokenizer)
    )
    return TextClassifier(backbone, num_classes=27, head=head, max_len=max_len)


@pytest.mark.parametrize("backbone_type", ["flaubert", "camembert"])
@pytest.mark.parametrize("head", ["flaubert", "cls", "flatten"])
def test_text_heads_give_logits_and_embeddings(tokenizer, backbone_type, head):
    model = _model(tokenizer, backbone_type, head).eval()
    enc = tokenizer(TEXTS[:3], padding=True, truncation=True, max_length=16, return_tensors="pt")
    logits = model(enc["input_ids"], enc["attention_mask"])
    assert logits.shape == (3, 27)
    states = model.states(enc["input_ids"], enc["attention_mask"])
    assert model.embedding(states).shape == (3, 32)
    assert torch.isfinite(logits).all()


def test_flatten_head_is_independent_of_padding(tokenizer):
    """The paper's flatten head sees max_len positions whether the batch was padded or not."""
    model = _model(tokenizer, "camembert", "flatten").eval()
    enc = tokenizer(TEXTS[:1], truncation=True, max_length=16, return_tensors="pt")
    short = model(enc["input_ids"], enc["attention_mask"])
    pad = tokenizer(TEXTS[:1], padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    padded = model(pad["input_ids"], pad["attention_mask"])
    assert torch.allclose(short, padded, atol=1e-5)
    head = model.head.net[1]
    assert head.in_features == 16 * 32


def test_flaubert_head_matches_paper_shape(tokenizer):
    model = _model(tokenizer, "flaubert", "flaubert")
    layers = [m for m in model.head.net if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in layers] == [(32, 27)]
    model = _model(tokenizer, "camembert", "cls")
    layers = [m for m in model.head.net if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in layers] == [(32, 32), (32, 27)]


def test_image_classifier_exposes_pooled_features():
    model = ImageClassifier("test_byobnet", num_classes=27).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model.embedding(x).shape == (2, model.num_features)
    assert model(x).shape == (2, 27)


@pytest.mark.parametrize("mode,width", [("concat", 32 + 32 + 32), ("add", 32)])
def test_fusion_head_projects_image_with_conv1d(mode, width):
    head = FusionHead([32, 32], image_dim=96, num_classes=27, mode=mode)
    assert isinstance(head.project, torch.nn.Conv1d) and head.project.kernel_size == (1,)
    assert head.classifier[-1].in_features == width
    out = head([torch.randn(4, 32), torch.randn(4, 32)], torch.randn(4, 96))
    assert out.shape == (4, 27)


def test_fusion_add_needs_equal_text_sizes():
    with pytest.raises(ValueError, match="equal size"):
        FusionHead([32, 48], image_dim=96, num_classes=27, mode="add")


def test_text_folder_round_trip(tmp_path, tokenizer):
    model = _model(tokenizer, "camembert", "cls").eval()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    model.backbone.config.save_pretrained(tmp_path / "backbone")
    meta = store.save_weights(
        tmp_path,
        model,
        TextMeta(
            kind="text",
            name="t",
            codes=list(range(27)),
            head="cls",
            max_len=16,
            dropout=0.1,
            hidden_size=model.hidden_size,
            backbone="camembert",
        ).to_json(),
    )
    assert len(meta["weights_sha256"]) == 64
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))  # no pickles
    runner = TextRunner(tmp_path)
    probs, emb = runner.run(TEXTS[:5])
    enc = tokenizer(TEXTS[:5], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(enc["input_ids"], enc["attention_mask"]), -1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert emb.shape == (5, 32)


def test_image_runner_answers_missing_images_with_nan(tmp_path):
    model = ImageClassifier("test_byobnet", num_classes=27)
    store.save_weights(
        tmp_path,
        model,
        ImageMeta(
            kind="image",
            name="i",
            codes=list(range(27)),
            arch="test_byobnet",
            num_features=model.num_features,
            transform={"img_size": 64},
        ).to_json(),
    )
    runner = ImageRunner(tmp_path)
    img = Image.new("RGB", (80, 80), (200, 30, 30))
    probs, emb = runner.run([img, None])
    assert np.isfinite(probs[0]).all() and np.isclose(probs[0].sum(), 1, atol=1e-5)
    assert np.isnan(probs[1]).all() and np.isnan(emb[1]).all()


def test_weights_that_do_not_fit_are_refused(tmp_path):
    store.save_weights(tmp_path, ImageClassifier("test_byobnet", num_classes=5), {"kind": "image"})
    with pytest.raises(store.ModelFolderError, match="do not fit"):
        store.load_weights(tmp_path, ImageClassifier("test_byobnet", num_classes=27))
