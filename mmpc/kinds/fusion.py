"""The fusion kind: a head over the frozen embeddings of text and image models of the same recipe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mmpc.kinds.base import Kind, Meta, TrainConfig, register


@dataclass
class FusionModelConfig:
    kind: Literal["fusion"] = "fusion"
    text: list[str] = field(default_factory=lambda: ["flaubert", "camembert"])
    image: str = "seresnext"
    mode: Literal["concat", "add"] = "concat"
    dim: int | None = None  # projection size of the image vector; default: the text hidden size
    dropout: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(kw_only=True)
class FusionMeta(Meta):
    text: list[str]
    image: str
    mode: str
    dim: int
    dropout: float
    text_dims: list[int]
    image_dim: int


def _inputs(cfg: FusionModelConfig) -> list[str]:
    return [*cfg.text, cfg.image]


def _validate(name: str, cfg: FusionModelConfig, models: Mapping[str, Any], path: str) -> None:
    # The head reads backbone embeddings: only text and image models have them.
    for ref, kind in [*((t, "text") for t in cfg.text), (cfg.image, "image")]:
        if ref not in models or models[ref].kind != kind:
            raise ValueError(f"{path}: input {ref!r} is not a {kind} model of this recipe")


KIND = register(
    Kind(
        name="fusion",
        config=FusionModelConfig,
        meta=FusionMeta,
        train="mmpc.training.level1:train_fusion",
        load="mmpc.models.runners:FusionMember",
        build="mmpc.training.level1:build_fusion",
        uses_images=True,
        inputs=_inputs,
        validate=_validate,
    )
)
