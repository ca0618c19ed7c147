"""Batched inference for the neural level-1 folders: probabilities and embeddings, under ``inference_mode``.

The same runners serve the level-1 pyfuncs, the stacking step and the published ensemble, so a
model is preprocessed identically everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmpc import images, kinds
from mmpc.kinds import Member
from mmpc.kinds.fusion import FusionMeta
from mmpc.kinds.image import ImageMeta
from mmpc.kinds.text import TextMeta
from mmpc.models import store
from mmpc.models.batching import LengthBucketSampler, TextCollator, TextDataset, autocast
from mmpc.models.deadline import check_deadline
from mmpc.models.fusion import FusionHead
from mmpc.models.image import ImageClassifier
from mmpc.models.text import TextClassifier, load_backbone
from mmpc.models.tokenizer import load_tokenizer


class _FolderRunner(Member):
    """A neural level-1 folder: its meta, the device and batch size; ``_place`` loads the weights
    (checked against their digest) into the built module and moves it to the device."""

    def __init__(
        self,
        folder: str | Path,
        device: torch.device | None = None,
        batch_size: int = 64,
        shared: Mapping[str, str] | None = None,
    ):
        self.folder = Path(folder)
        self.meta = kinds.read_meta(self.folder)
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size

    def _place(self, module: torch.nn.Module) -> torch.nn.Module:
        store.load_weights(self.folder, module, self.meta.weights_sha256)
        return module.to(self.device).eval()


class TextRunner(_FolderRunner):
    """A text folder: its tokenizer, backbone and head; probabilities and first-token embeddings."""

    meta: TextMeta

    def __init__(
        self, folder: str | Path, device: torch.device | None = None, batch_size: int = 64, shared=None
    ):
        super().__init__(folder, device, batch_size)
        self.tokenizer = load_tokenizer(self.folder / "tokenizer")
        m = self.meta
        classifier = TextClassifier(
            load_backbone(self.folder / "backbone"), len(m.codes), m.head, m.max_len, m.dropout
        )
        self.model = self._place(classifier)
        self.collate = TextCollator(self.tokenizer.pad_token_id)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.meta.max_len)["input_ids"]

    def forward(self, texts, imgs, embeddings) -> tuple[np.ndarray, np.ndarray]:
        return self.run(texts)

    @torch.inference_mode()
    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [n, C] and first-token embeddings [n, d], in input order."""
        n = len(texts)
        probs = np.zeros((n, len(self.meta.codes)), dtype=np.float32)
        emb = np.zeros((n, self.model.hidden_size), dtype=np.float32)
        if n == 0:
            return probs, emb
        data = TextDataset(self.tokenize(texts))
        # Sorted by length: each batch pads only to its own longest text.
        sampler = LengthBucketSampler(data.lengths, self.batch_size, shuffle=False, pool_batches=10**6)
        for idx in sampler:
            check_deadline("between text batches")
            batch = {k: v.to(self.device) for k, v in self.collate([data[i] for i in idx]).items()}
            with autocast(self.device, True):
                states = self.model.states(batch["input_ids"], batch["attention_mask"])
                logits = self.model.head(states, batch["attention_mask"])
            probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
            emb[idx] = self.model.embedding(states).float().cpu().numpy()
        return probs, emb


class ImageRunner(_FolderRunner):
    """An image folder: the timm classifier and its eval transform; probabilities and pooled features."""

    meta: ImageMeta
    uses_images = True

    def __init__(
        self, folder: str | Path, device: torch.device | None = None, batch_size: int = 64, shared=None
    ):
        super().__init__(folder, device, batch_size)
        self.model = self._place(ImageClassifier(self.meta.arch, len(self.meta.codes), pretrained=False))
        self.cfg = images.ImageTransformConfig(**self.meta.transform)
        self.transform = images.eval_transform(self.cfg)

    def forward(self, texts, imgs, embeddings) -> tuple[np.ndarray, np.ndarray]:
        return self.run(imgs)

    @torch.inference_mode()
    def run(self, imgs: Sequence[Image.Image | None]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [n, C] and pooled features [n, F]; rows without an image are NaN."""
        n = len(imgs)
        probs = np.full((n, len(self.meta.codes)), np.nan, dtype=np.float32)
        emb = np.full((n, self.model.num_features), np.nan, dtype=np.float32)
        present = [i for i, img in enumerate(imgs) if img is not None]
        for start in range(0, len(present), self.batch_size):
            idx = present[start : start + self.batch_size]
            check_deadline("between image batches")
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
        self.meta: FusionMeta = kinds.read_meta(folder)
        self.device = device or torch.device("cpu")
        m = self.meta
        self.head = FusionHead(m.text_dims, m.image_dim, len(m.codes), m.mode, m.dim, m.dropout)
        store.load_weights(Path(folder), self.head, m.weights_sha256)
        self.head.to(self.device).eval()

    @torch.inference_mode()
    def run(self, text_embs: Sequence[np.ndarray], image_emb: np.ndarray) -> np.ndarray:
        """Probabilities [n, C]; NaN where the image embedding is missing."""
        n = len(image_emb)
        probs = np.full((n, len(self.meta.codes)), np.nan, dtype=np.float32)
        ok = ~np.isnan(image_emb).any(axis=1)
        if ok.any():
            texts = [torch.from_numpy(t[ok]).to(self.device) for t in text_embs]
            logits = self.head(texts, torch.from_numpy(image_emb[ok]).to(self.device))
            probs[ok] = torch.softmax(logits.float(), -1).cpu().numpy()
        return probs


def input_folders(fusion_folder: str | Path) -> dict[str, Path]:
    """The level-1 folders a fusion model was built on, by name (kept under ``inputs/``)."""
    meta: FusionMeta = kinds.read_meta(fusion_folder)
    return {name: Path(fusion_folder) / "inputs" / name for name in [*meta.text, meta.image]}


class FusionMember(Member):
    """A fusion folder for inference. In an ensemble whose members have the very weights of its frozen
    inputs (``shared``: member name -> weights digest), it runs its head on their embeddings; otherwise
    it runs the backbones bundled under ``inputs/``."""

    uses_images = True

    def __init__(
        self,
        folder: str | Path,
        device: torch.device | None = None,
        batch_size: int = 64,
        shared: Mapping[str, str] | None = None,
    ):
        folder = Path(folder)
        self.head = FusionRunner(folder, device)
        self.meta: FusionMeta = self.head.meta
        wanted = self.meta.input_weights_sha256
        self.shares = shared is not None and all(shared.get(n) == d for n, d in wanted.items())
        self.inputs: dict[str, Member] = {}
        if self.shares:
            return
        if not (folder / "inputs").is_dir():
            raise store.ModelFolderError(
                f"{folder}: the fusion model's backbones differ from the ensemble's members "
                "and are not bundled"
            )
        if shared is not None:
            warnings.warn(
                f"fusion model {self.meta.name!r}: its frozen backbones differ from the ensemble's "
                "text/image members; it runs its own backbones (slower)",
                stacklevel=2,
            )
        self.inputs = {n: kinds.load(f, device, batch_size) for n, f in input_folders(folder).items()}

    def forward(self, texts, imgs, embeddings) -> tuple[np.ndarray, None]:
        if not self.shares:
            embeddings = {n: m.forward(texts, imgs, {})[1] for n, m in self.inputs.items()}
        m = self.meta
        return self.head.run([embeddings[n] for n in m.text], embeddings[m.image]), None
