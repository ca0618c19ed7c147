"""A level-1 kind defined outside mmpc, as a user adds one: the class prior of the train split,
whatever the product (a baseline every model should beat). One module: recipe section, meta record,
trainer, loader and builder, registered with ``mmpc.kinds.register``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mmpc import kinds
from mmpc.models import store
from mmpc.training.engine import FitResult


@dataclass
class PriorConfig:
    kind: Literal["prior"] = "prior"
    smoothing: float = 1.0  # added to every class count


@dataclass(kw_only=True)
class PriorMeta(kinds.Meta):
    smoothing: float


def _save(out: Path, cfg: PriorConfig, name: str, codes: list[int], counts: np.ndarray) -> None:
    prior = (counts + cfg.smoothing) / (counts + cfg.smoothing).sum()
    meta = PriorMeta(kind="prior", name=name, codes=list(codes), smoothing=cfg.smoothing)
    store.save_arrays(out, {"prior": prior.astype(np.float32)}, meta.to_json())


def train_prior(cfg: PriorConfig, train, valid, codes, out: Path, run, inputs) -> FitResult:
    counts = np.bincount(train["label"].to_numpy(), minlength=len(codes)).astype(np.float64)
    _save(out, cfg, run.name, list(codes), counts)
    return FitResult(best_epoch=1, best_valid_macro_f1=0.0, epochs_run=1)


def build_prior(cfg: PriorConfig, name: str, codes: list[int], out: Path, texts, inputs) -> Path:
    _save(out, cfg, name, codes, np.zeros(len(codes)))
    return out


class PriorMember(kinds.Member):
    def __init__(self, folder: Path, device=None, batch_size: int = 0, shared=None):
        self.meta = kinds.read_meta(folder)
        self.prior = store.load_arrays(folder)["prior"]

    def forward(self, texts, imgs, embeddings) -> tuple[np.ndarray, None]:
        return np.tile(self.prior, (len(texts), 1)), None


KIND = kinds.Kind(
    name="prior",
    config=PriorConfig,
    meta=PriorMeta,
    train="prior_kind:train_prior",
    load="prior_kind:PriorMember",
    build="prior_kind:build_prior",
)
