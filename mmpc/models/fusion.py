"""The fusion head over frozen level-1 embeddings (the paper's level-1 fusion model).

The image vector (2048 for SE-ResNeXt-50) is projected by a Conv1d(features, d, kernel 1) to the text
size d; then ``concat`` [t1, t2, img'] -> Linear(sum, C), or ``add`` t1 + t2 + img' -> Linear(d, C).
The backbones are frozen, so the head trains on cached embeddings.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

FusionMode = Literal["concat", "add"]


class FusionHead(nn.Module):
    def __init__(
        self,
        text_dims: list[int],
        image_dim: int,
        num_classes: int,
        mode: FusionMode = "concat",
        dim: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if not text_dims:
            raise ValueError("fusion needs at least one text embedding")
        self.mode = mode
        self.dim = dim or text_dims[0]
        if mode == "add" and any(d != self.dim for d in text_dims):
            raise ValueError(
                f"fusion mode 'add' needs text embeddings of equal size {self.dim}, got {text_dims}"
            )
        self.project = nn.Conv1d(image_dim, self.dim, kernel_size=1)
        width = sum(text_dims) + self.dim if mode == "concat" else self.dim
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def fused(self, texts: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        img = self.project(image.unsqueeze(-1)).squeeze(-1)
        if self.mode == "concat":
            return torch.cat([*texts, img], dim=-1)
        return torch.stack([*texts, img]).sum(0)

    def forward(self, texts: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fused(texts, image))
