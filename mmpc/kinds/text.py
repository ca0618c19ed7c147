"""The text kind: a transformer encoder (FlauBERT, CamemBERT, any AutoModel) and a classification head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmpc.kinds.base import Kind, Meta, TrainConfig, register


@dataclass
class TokenizerConfig:
    pretrained: str | None = None  # a hub name or a local folder; default: the model's own checkpoint
    train_vocab_size: int = 4000  # when not pretrained: a WordPiece tokenizer trained on the train split
    lowercase: bool = False


@dataclass
class TextModelConfig:
    kind: Literal["text"] = "text"
    pretrained: str | None = None  # e.g. camembert-base; None builds `backbone_type` from `backbone_config`
    backbone_type: str | None = None  # a transformers model_type: camembert, flaubert, ...
    backbone_config: dict[str, Any] = field(default_factory=dict)
    head: Literal["flaubert", "cls", "flatten"] = "cls"
    dropout: float = 0.1
    max_len: int = 256
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(kw_only=True)
class TextMeta(Meta):
    head: str
    max_len: int
    dropout: float
    hidden_size: int
    backbone: str | None  # the checkpoint or model type it was built from


def _defaults(name: str, cfg: TextModelConfig, models: Any, path: str) -> None:
    # A checkpoint is read with its own tokenizer, never one trained on the catalog.
    if cfg.pretrained and not cfg.tokenizer.pretrained:
        cfg.tokenizer.pretrained = cfg.pretrained


def _checkpoints(cfg: TextModelConfig) -> list[str]:
    return [r for r in (cfg.pretrained, cfg.tokenizer.pretrained) if r]


KIND = register(
    Kind(
        name="text",
        config=TextModelConfig,
        meta=TextMeta,
        train="mmpc.training.level1:train_text",
        load="mmpc.models.runners:TextRunner",
        build="mmpc.training.level1:build_text",
        preflight="mmpc.models.pretrained:check_text",
        checkpoints=_checkpoints,
        validate=_defaults,
    )
)
