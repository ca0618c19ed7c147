"""Batched inference for level-1 folders: probabilities and embeddings, under ``inference_mode``.

The same runners serve the level-1 pyfuncs, the stacking step and the published ensemble, so a
model is preprocessed identically everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmpc import images
from mmpc.models import store
from mmpc.models.batching import LengthBucketSampler, TextCollator, TextDataset, autocast
from mmpc.models.fusion import FusionHead
from mmpc.models.image import ImageClassifier
from mmpc.models.text import TextClassifier, load_backbone
from mmpc.models.tfidf import TfidfRunner
from mmpc.models.tokenizer import load_tokenizer


class TextRunner:
    def __init__(self, folder: str | Path, device: torch.device | None = None, batch_size: int = 64):
        folder = Path(folder)
        self.folder = folder
        self.meta = store.read_meta(folder)
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(folder / "tokenizer")
        backbone = load_backbone(folder / "backbone")
        self.model = TextClassifier(
            backbone, len(self.meta["codes"]), self.meta["head"], self.meta["max_len"], self.meta["dropout"]
        )
        store.load_weights(folder, self.model)
        self.model.to(self.device).eval()
        self.collate = TextCollator(self.tokenizer.pad_token_id)

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.meta["max_len"])["input_ids"]

    @torch.inference_mode()
    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [n, C] and first-token embeddings [n, d], in input order."""
        n = len(texts)
        probs = np.zeros((n, len(self.meta["codes"])), dtype=np.float32)
        emb = np.zeros((n, self.model.hidden_size), dtype=np.float32)
        if n == 0:
            return probs, emb
        data = TextDataset(self.tokenize(texts))
        # Sorted by length: each batch pads only to its own longest text.
        sampler = LengthBucketSampler(data.lengths, self.batch_size, shuffle=False, pool_batches=10**6)
        for idx in sampler:
            batch = {k: v.to(self.device) for k, v in self.collate([data[i] for i in idx]).items()}
            with autocast(self.device, True):
                states = self.model.states(batch["input_ids"], batch["attention_mask"])
                logits = self.model.head(states, batch["attention_mask"])
            probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
            emb[idx] = self.model.embedding(states).float().cpu().numpy()
        return probs, emb


class ImageRunner:
    def __init__(self, folder: str | Path, device: torch.device | None = None, batch_size: int = 64):
        folder = Path(folder)
        self.folder = folder
        self.meta = store.read_meta(folder)
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.model = ImageClassifier(self.meta["arch"], len(self.meta["codes"]), pretrained=False)
        store.load_weights(folder, self.model)
        self.model.to(self.device).eval()
        self.cfg = images.ImageTransformConfig(**self.meta["transform"])
        self.transform = images.eval_transform(self.cfg)

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    @torch.inference_mode()
    def run(self, imgs: Sequence[Image.Image | None]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [n, C] and pooled features [n, F]; rows without an image are NaN."""
        n = len(imgs)
        probs = np.full((n, len(self.meta["codes"])), np.nan, dtype=np.float32)
        emb = np.full((n, self.model.num_features), np.nan, dtype=np.float32)
        present = [i for i, img in enumerate(imgs) if img is not None]
        for start in range(0, len(present), self.batch_size):
            idx = present[start : start + self.batch_size]
            pixels = torch.stack([self.transform(images.prepare(imgs[i], self.cfg)) for i in idx]).to(
                self.device
            )
            with autocast(self.device, True):
                features = self.model.embedding(pixels)
                logits = self.model.head(features)
            probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
            emb[idx] = features.float().cpu().numpy()
        return probs, emb


class FusionRunner:
    """The fusion head alone, on embeddings produced by the text and image runners."""

    def __init__(self, folder: str | Path, device: torch.device | None = None):
        folder = Path(folder)
        self.meta = store.read_meta(folder)
        self.device = device or torch.device("cpu")
        self.head = FusionHead(
            self.meta["text_dims"],
            self.meta["image_dim"],
            len(self.meta["codes"]),
            self.meta["mode"],
            self.meta["dim"],
            self.meta["dropout"],
        )
        store.load_weights(folder, self.head)
        self.head.to(self.device).eval()

    @torch.inference_mode()
    def run(self, text_embs: Sequence[np.ndarray], image_emb: np.ndarray) -> np.ndarray:
        """Probabilities [n, C]; NaN where the image embedding is missing."""
        n = len(image_emb)
        probs = np.full((n, len(self.meta["codes"])), np.nan, dtype=np.float32)
        ok = ~np.isnan(image_emb).any(axis=1)
        if ok.any():
            texts = [torch.from_numpy(t[ok]).to(self.device) for t in text_embs]
            logits = self.head(texts, torch.from_numpy(image_emb[ok]).to(self.device))
            probs[ok] = torch.softmax(logits.float(), -1).cpu().numpy()
        return probs


def input_folders(fusion_folder: str | Path) -> dict[str, Path]:
    """The level-1 folders a fusion model was built on, by name (kept under ``inputs/``)."""
    meta = store.read_meta(fusion_folder)
    return {name: Path(fusion_folder) / "inputs" / name for name in [*meta["text"], meta["image"]]}


class Level1Predictor:
    """Any level-1 folder (text, image, fusion or tfidf) -> class probabilities for texts and images."""

    def __init__(self, folder: str | Path, device: torch.device | None = None, batch_size: int = 64):
        self.folder = Path(folder)
        self.meta = store.read_meta(self.folder)
        self.kind = self.meta["kind"]
        self.codes: list[int] = self.meta["codes"]
        if self.kind == "text":
            self.text = TextRunner(self.folder, device, batch_size)
        elif self.kind == "image":
            self.image = ImageRunner(self.folder, device, batch_size)
        elif self.kind == "fusion":
            folders = input_folders(self.folder)
            self.texts = [TextRunner(folders[name], device, batch_size) for name in self.meta["text"]]
            self.image = ImageRunner(folders[self.meta["image"]], device, batch_size)
            self.head = FusionRunner(self.folder, device)
        elif self.kind == "tfidf":
            self.tfidf = TfidfRunner(self.folder)
        else:
            raise store.ModelFolderError(f"{folder}: unknown model kind {self.kind!r}")

    @property
    def uses_images(self) -> bool:
        return self.kind in ("image", "fusion")

    def predict_proba(self, texts: Sequence[str], imgs: Sequence[Image.Image | None]) -> np.ndarray:
        if self.kind == "text":
            return self.text.run(texts)[0]
        if self.kind == "image":
            return self.image.run(imgs)[0]
        if self.kind == "tfidf":
            return self.tfidf.run(texts)
        text_embs = [runner.run(texts)[1] for runner in self.texts]
        return self.head.run(text_embs, self.image.run(imgs)[1])
