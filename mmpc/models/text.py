"""Text classifiers over a transformers backbone, with the paper's heads.

- ``flaubert``: first token -> dropout -> Linear(d, C)
- ``cls``:      first token -> Linear(d, d) -> tanh -> dropout -> Linear(d, C)   (CamemBERT's)
- ``flatten``:  all max_len token states -> Linear(max_len * d, d) -> tanh -> Linear(d, C); the
                paper's CamemBERT code, needs states padded to max_len.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

HeadKind = Literal["flaubert", "cls", "flatten"]


def hidden_size(config: PretrainedConfig) -> int:
    # FlauBERT's config calls it emb_dim and maps hidden_size onto it.
    return int(config.hidden_size)


class TextHead(nn.Module):
    def __init__(self, kind: HeadKind, d: int, num_classes: int, max_len: int, dropout: float):
        super().__init__()
        self.kind = kind
        self.max_len = max_len
        if kind == "flaubert":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, num_classes))
        elif kind == "cls":
            self.net = nn.Sequential(
                nn.Linear(d, d), nn.Tanh(), nn.Dropout(dropout), nn.Linear(d, num_classes)
            )
        elif kind == "flatten":
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(max_len * d, d),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(d, num_classes),
            )
        else:
            raise ValueError(f"unknown text head {kind!r}; expected flaubert, cls or flatten")

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "flatten":
            # Padding positions contribute zeros, and dynamic padding's shorter batches are padded back
            # to max_len: the same product gives the same logits however its batch was padded.
            if attention_mask is not None:
                states = states * attention_mask[..., None].to(states.dtype)
            pad = self.max_len - states.shape[1]
            return self.net(F.pad(states, (0, 0, 0, pad)) if pad > 0 else states[:, : self.max_len])
        return self.net(states[:, 0])


class TextClassifier(nn.Module):
    """A transformers backbone and a classification head; exposes states, embedding and logits."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        num_classes: int,
        head: HeadKind = "cls",
        max_len: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone = backbone
        self.hidden_size = hidden_size(backbone.config)
        self.head = TextHead(head, self.hidden_size, num_classes, max_len, dropout)

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden layer, [batch, tokens, d]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state

    @staticmethod
    def embedding(states: torch.Tensor) -> torch.Tensor:
        """The product's text vector: the first token of the last layer, [batch, d]."""
        return states[:, 0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.states(input_ids, attention_mask), attention_mask)


# Config attribute names that carry special token ids, per naming scheme (HF vs XLM/FlauBERT).
_SPECIAL_ATTRS = {
    "pad": ("pad_token_id", "pad_index"),
    "bos": ("bos_token_id", "bos_index"),
    "eos": ("eos_token_id", "eos_index"),
}


def build_backbone(
    pretrained: str | None,
    backbone_type: str | None,
    backbone_config: dict,
    vocab_size: int | None = None,
    special_ids: dict[str, int] | None = None,
) -> PreTrainedModel:
    """``from_pretrained`` for real weights; otherwise a model built from its config, random weights.

    A backbone built from config gets the vocabulary size and special token ids of the tokenizer
    trained for it, so padding is masked and positions are counted the same way.
    """
    if pretrained:
        return _without_pooler(AutoModel.from_pretrained(pretrained))
    if not backbone_type:
        raise ValueError("a text model needs `pretrained` (a model name or folder) or `backbone_type`")
    config = AutoConfig.for_model(backbone_type, **backbone_config)
    if vocab_size is not None:
        # An explicit vocabulary (a published architecture's shape) is kept when the tokenizer fits it.
        explicit = backbone_config.get("vocab_size")
        if explicit is not None and explicit < vocab_size:
            raise ValueError(
                f"backbone_config.vocab_size {explicit} is smaller than the tokenizer's {vocab_size} tokens"
            )
        config.vocab_size = explicit if explicit is not None else vocab_size
    for key, token_id in (special_ids or {}).items():
        for attr in _SPECIAL_ATTRS[key]:
            if hasattr(config, attr):
                setattr(config, attr, token_id)
    return _without_pooler(AutoModel.from_config(config))


def _without_pooler(backbone: PreTrainedModel) -> PreTrainedModel:
    """The heads read the token states, never BERT's pooler: drop it so it holds no unused weights
    (DistributedDataParallel refuses parameters that get no gradient)."""
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
    return backbone


def load_backbone(folder: Path) -> PreTrainedModel:
    """The backbone's architecture from its saved config.json; weights are loaded separately."""
    return _without_pooler(AutoModel.from_config(AutoConfig.from_pretrained(folder)))
