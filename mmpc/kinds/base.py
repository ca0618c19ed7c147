"""What every level-1 kind declares, and the registry that holds them.

A kind (text, image, fusion, tfidf, ...) is one module in this package that registers a ``Kind``:
its recipe section, the typed record its model folder's ``meta.json`` holds, and where its trainer,
loader and random-weights builder live. The callables are named as ``module:function`` and imported
when used, so parsing a recipe never imports PyTorch and serving never imports training code.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass
class TrainConfig:
    """The optimisation loop shared by every neural level-1 kind."""

    batch_size: int = 32
    eval_batch_size: int = 128
    epochs: int = 10
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 2e-5
    head_lr: float | None = None  # a higher rate for the freshly initialised head, if set
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: Literal["linear", "constant", "cosine"] = "linear"
    warmup_ratio: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    patience: int = 3  # epochs without a better valid macro-F1 before stopping
    num_workers: int = 0
    amp: bool = True  # bf16 autocast on GPU; always fp32 on CPU
    length_bucketing: bool = True
    compile: bool = False  # torch.compile the training model
    checkpoint_every_steps: int = 0  # besides every epoch; 0: epoch ends only
    # A wall-clock cap on the whole fit: the epoch that crosses it stops at the next batch, is
    # validated, and training ends (the best epoch so far is kept). None: no cap.
    max_minutes: float | None = None
    # A cap on optimiser steps over the whole fit, resumed processes included: the epoch that reaches
    # it stops there, is validated, and training ends; the schedule spans at most this many. None: no cap.
    max_steps: int | None = None


class MetaError(ValueError):
    """A model folder's meta.json lacks a field its kind needs."""


@dataclass(kw_only=True)
class Meta:
    """The fields every model folder's ``meta.json`` holds; each kind adds its own."""

    kind: str
    name: str
    codes: list[int]
    weights_sha256: str = ""  # written by the store with the weights, checked at load
    # The level-1 folders this model reads (their weight digests, by model name): fusion's inputs.
    input_weights_sha256: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What training writes: everything but the digest, which the store adds with the weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "weights_sha256"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Meta:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f))
        if missing:
            raise MetaError(f"{where}: meta.json lacks {missing} for a {cls.__name__}")
        return cls(**{k: v for k, v in data.items() if k in names})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


class Member(ABC):
    """A level-1 model loaded for inference. ``forward`` returns class probabilities [n, C] (NaN rows
    where the model has no input, e.g. no photo) and, for a kind with a backbone, its embeddings [n, d],
    which a model reading this one (fusion) takes from ``embeddings`` instead of running it again."""

    meta: Meta
    uses_images: bool = False

    @property
    def codes(self) -> list[int]:
        return self.meta.codes

    @property
    def kind(self) -> str:
        return self.meta.kind

    @abstractmethod
    def forward(
        self, texts: Sequence[str], imgs: Sequence, embeddings: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None]: ...

    def predict_proba(self, texts: Sequence[str], imgs: Sequence) -> np.ndarray:
        return self.forward(texts, imgs, {})[0]


def _no_inputs(cfg: Any) -> list[str]:
    return []


def _no_check(name: str, cfg: Any, models: Mapping[str, Any], path: str) -> None:
    return None


@dataclass(frozen=True)
class Kind:
    """One level-1 kind. ``train``, ``load``, ``build`` and ``preflight`` are ``module:function``
    references with these signatures:

    - ``train(cfg, train, valid, codes, out, run, inputs) -> FitResult``: fits on the ``train`` rows
      (early stopping on ``valid``) and writes the model folder ``out``; ``inputs`` maps the models
      named by ``inputs(cfg)`` to their folders.
    - ``load(folder, device, batch_size, shared) -> Member``: ``shared`` maps the members an ensemble
      has already loaded to their weight digests (None outside an ensemble).
    - ``build(cfg, name, codes, out, texts, inputs) -> Path``: the folder ``train`` would write, with
      random weights (tests and benchmarks); ``texts`` train a tokenizer where one is needed.
    - ``preflight(name, cfg)``: checks a recipe's checkpoint before any run starts.
    """

    name: str
    config: type  # the recipe section: a dataclass whose ``kind`` field is Literal[name]
    meta: type[Meta]
    train: str
    load: str
    build: str
    uses_images: bool = False
    preflight: str | None = None
    inputs: Callable[[Any], list[str]] = _no_inputs  # other models of the recipe it reads
    checkpoints: Callable[[Any], list[str]] = _no_inputs  # local files its training reads (digested)
    # Recipe checks beyond types: (name, cfg, models, dotted path); a ValueError names the path.
    validate: Callable[[str, Any, Mapping[str, Any], str], None] = _no_check


def resolve(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in REGISTRY:
        raise ValueError(f"model kind {kind.name!r} is registered twice")
    REGISTRY[kind.name] = kind
    return kind
