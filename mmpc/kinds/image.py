"""The image kind: a timm classifier (SE-ResNeXt-50 in the paper) on the product photo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmpc.kinds.base import Kind, Meta, TrainConfig, register


@dataclass
class ImageModelConfig:
    kind: Literal["image"] = "image"
    arch: str = "legacy_seresnext50_32x4d"
    # true: timm's hub weights for `arch`; a path: local weights, a file (safetensors or a state dict)
    # or a folder in timm's layout (config.json naming the architecture + model.safetensors); false: random
    pretrained: bool | str = True
    img_size: int = 224
    crop_fraction: float = 224 / 256
    drop_rate: float = 0.0
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(kw_only=True)
class ImageMeta(Meta):
    arch: str
    num_features: int
    transform: dict[str, Any]  # images.ImageTransformConfig's fields: size, crop, normalisation


def _checkpoints(cfg: ImageModelConfig) -> list[str]:
    return [cfg.pretrained] if isinstance(cfg.pretrained, str) else []


KIND = register(
    Kind(
        name="image",
        config=ImageModelConfig,
        meta=ImageMeta,
        train="mmpc.training.level1:train_image",
        load="mmpc.models.runners:ImageRunner",
        build="mmpc.training.level1:build_image",
        uses_images=True,
        preflight="mmpc.models.pretrained:check_image",
        checkpoints=_checkpoints,
    )
)
