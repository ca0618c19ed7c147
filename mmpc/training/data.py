"""Training datasets of images and cached embeddings (text batching is in ``mmpc.models.batching``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmpc import images


class ImageDataset(Dataset):
    """Decodes, border-trims and transforms product images; a file that will not decode is blank white
    (and counted), so one broken photo cannot stop an epoch."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        cfg: images.ImageTransformConfig,
    ):
        self.paths = list(paths)
        self.labels = labels
        self.transform = transform
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            img = images.prepare(images.load_file(self.paths[i]), self.cfg)
        except (OSError, images.ImageDecodeError):
            img = Image.new("RGB", (self.cfg.img_size, self.cfg.img_size), (255, 255, 255))
        item = {"pixels": self.transform(img)}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


class TensorDictDataset(Dataset):
    """Rows of pre-computed tensors (cached embeddings for the fusion head)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}
