"""Image classifier over a timm backbone: global average pool -> Linear(features, C)."""

from __future__ import annotations

import timm
import torch
from torch import nn


class ImageClassifier(nn.Module):
    def __init__(self, arch: str, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0):
        super().__init__()
        # num_classes=0: timm returns the pooled feature vector; the head is ours, so its
        # name and shape are the same for every architecture.
        self.backbone = timm.create_model(arch, pretrained=pretrained, num_classes=0, global_pool="avg")
        self.num_features = int(self.backbone.num_features)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))

    def embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled image features, [batch, num_features] (2048 for SE-ResNeXt-50)."""
        return self.backbone(pixels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(pixels))

    def data_config(self) -> dict:
        """timm's preprocessing defaults for this backbone (mean, std, input size)."""
        return timm.data.resolve_data_config({}, model=self.backbone)
