"""Image classifier over a timm backbone: global average pool -> Linear(features, C)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

# ``pretrained``: False (random weights), True (timm's hub weights for the architecture), or the path
# of local weights: a file (safetensors or a PyTorch state dict) or a folder in timm's layout.
Pretrained = bool | str


def create_backbone(arch: str, pretrained: Pretrained = False) -> nn.Module:
    """A timm backbone without classifier, its weights loaded through timm's own pretrained path:
    ``local-dir:`` for a folder, a ``file`` overlay of the pretrained config for a single file."""
    kwargs = {"num_classes": 0, "global_pool": "avg"}
    if isinstance(pretrained, str):
        path = Path(pretrained).expanduser()
        if path.is_dir():
            return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    return timm.create_model(arch, pretrained=pretrained, **kwargs)


def backbone_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the backbone (no classifier), built without allocating weights."""
    with torch.device("meta"):
        backbone = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="avg")
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items()}


class ImageClassifier(nn.Module):
    def __init__(self, arch: str, num_classes: int, pretrained: Pretrained = False, drop_rate: float = 0.0):
        super().__init__()
        # num_classes=0: timm returns the pooled feature vector; the head is ours, so its
        # name and shape are the same for every architecture.
        self.backbone = create_backbone(arch, pretrained)
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
