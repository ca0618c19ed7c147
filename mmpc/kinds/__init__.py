"""The level-1 model kinds, one module each, and the registry every other layer asks.

Adding a kind is one module here (its recipe section, meta record, trainer, loader and builder,
registered with ``register``) plus its import below; recipes then accept ``kind: <name>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmpc.kinds import fusion, image, text, tfidf  # noqa: F401  (each registers its kind)
from mmpc.kinds.base import REGISTRY, Kind, Member, Meta, MetaError, TrainConfig, register, resolve

__all__ = [
    "Kind",
    "Member",
    "Meta",
    "MetaError",
    "TrainConfig",
    "get",
    "key_params",
    "names",
    "of",
    "register",
    "resolve",
]


def names() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> Kind:
    if name not in REGISTRY:
        raise KeyError(f"unknown model kind {name!r}; known kinds: {names()}")
    return REGISTRY[name]


def of(cfg: Any) -> Kind:
    """The kind of a recipe's model section."""
    return get(cfg.kind)


def read_meta(folder: str | Path) -> Meta:
    """A model folder's ``meta.json`` as its kind's typed record."""
    from mmpc.models import store

    data = store.read_meta(folder)
    kind = REGISTRY.get(data.get("kind", ""))
    if kind is None:
        raise store.ModelFolderError(f"{folder}: unknown model kind {data.get('kind')!r}; known: {names()}")
    try:
        return kind.meta.from_json(data, str(Path(folder) / store.META))
    except MetaError as exc:
        raise store.ModelFolderError(str(exc)) from None


def load(
    folder: str | Path, device: Any = None, batch_size: int = 64, shared: Mapping[str, str] | None = None
) -> Member:
    """Any level-1 folder, loaded for inference by its kind."""
    meta = read_meta(folder)
    return resolve(get(meta.kind).load)(Path(folder), device, batch_size, shared)


def train(cfg: Any, train_rows, valid_rows, codes: Sequence[int], out: Path, run, inputs: Mapping[str, Path]):
    """Fit a recipe's model section into the folder ``out``; see ``Kind`` for the arguments."""
    return resolve(of(cfg).train)(cfg, train_rows, valid_rows, codes, out, run, dict(inputs))


def build(
    cfg: Any,
    name: str,
    codes: Sequence[int],
    out: Path,
    texts: Sequence[str] = (),
    inputs: Mapping[str, Path] | None = None,
) -> Path:
    """The folder training would write for ``cfg``, with random weights: for tests and benchmarks."""
    return resolve(of(cfg).build)(cfg, name, list(codes), Path(out), list(texts), dict(inputs or {}))


def key_params(cfg: Any) -> dict[str, str]:
    """What a logged model's page shows of its recipe section: its kind, what it was built from, and
    the key figures of its training (the run's params hold the whole section)."""
    out = {"kind": cfg.kind}
    if hasattr(cfg, "arch"):  # image: the architecture, and where its weights came from
        out |= {"backbone": cfg.arch, "pretrained": str(cfg.pretrained)}
    elif hasattr(cfg, "image"):  # fusion: the models whose embeddings it reads
        out["backbone"] = "+".join([*cfg.text, cfg.image])
    elif backbone := getattr(cfg, "pretrained", None) or getattr(cfg, "backbone_type", None):  # text
        out["backbone"] = str(backbone)
    train = getattr(cfg, "train", None)
    if isinstance(train, TrainConfig):
        out |= {"epochs": str(train.epochs), "lr": str(train.lr), "batch_size": str(train.batch_size)}
    for name in ("C", "calibration"):  # tfidf: the linear SVM and its probabilities
        if hasattr(cfg, name):
            out[name] = str(getattr(cfg, name))
    return out
