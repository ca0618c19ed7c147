"""Training of each level-1 kind, from catalog rows to a saved model folder.

Only ``train`` rows are fitted and only ``valid`` rows steer early stopping; the callers never pass
``stack`` or ``test`` rows here.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import PreTrainedTokenizerBase

from mmpc import images
from mmpc.kinds.base import TrainConfig
from mmpc.kinds.fusion import FusionMeta, FusionModelConfig
from mmpc.kinds.image import ImageMeta, ImageModelConfig
from mmpc.kinds.text import TextMeta, TextModelConfig
from mmpc.models import store
from mmpc.models.batching import LengthBucketSampler, TextCollator, TextDataset
from mmpc.models.fusion import FusionHead
from mmpc.models.image import ImageClassifier
from mmpc.models.runners import ImageRunner, TextRunner
from mmpc.models.text import TextClassifier, build_backbone
from mmpc.models.tokenizer import load_tokenizer, special_token_ids, train_wordpiece
from mmpc.training import distributed
from mmpc.training.data import ImageDataset, TensorDictDataset
from mmpc.training.engine import FitResult, MetricLogger, fit, seed_everything

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """How one level-1 training runs: device, seed, name, metric sink and checkpoints."""

    device: torch.device
    seed: int
    name: str
    log_metrics: MetricLogger | None = None
    checkpoint_dir: Path | None = None
    checkpoint_extra: dict | None = None

    def fit(self, model, train_batches, valid_batches, cfg: TrainConfig) -> FitResult:
        return fit(
            model,
            train_batches,
            valid_batches,
            cfg,
            device=self.device,
            log_metrics=self.log_metrics,
            desc=self.name,
            checkpoint_dir=self.checkpoint_dir,
            checkpoint_extra=self.checkpoint_extra,
        )


def _train_sampler(lengths, batch_size: int, seed: int) -> LengthBucketSampler:
    """Seeded, resumable, and under torchrun each rank's slice of the same global batches."""
    return LengthBucketSampler(
        lengths, batch_size, seed=seed, num_replicas=distributed.world_size(), rank=distributed.rank()
    )


def _loader(
    dataset, cfg: TrainConfig, *, train: bool, run: RunOptions, batch_sampler=None, collate_fn=None
) -> DataLoader:
    """Training batches come from a seeded, resumable batch sampler; evaluation keeps row order."""
    if train and batch_sampler is None:
        batch_sampler = _train_sampler(len(dataset), cfg.batch_size, run.seed)
    if batch_sampler is None:
        batch_sampler = BatchSampler(SequentialSampler(dataset), cfg.eval_batch_size, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=run.device.type == "cuda",
        # The loader's own generator: its per-epoch seed draw must not move the global RNG that
        # dropout uses, or a resumed training would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(run.seed),
    )


def _text_model(
    cfg: TextModelConfig, codes: Sequence[int], texts: Sequence[str]
) -> tuple[PreTrainedTokenizerBase, TextClassifier]:
    """The tokenizer (the checkpoint's own, or WordPiece trained on ``texts``) and the classifier."""
    if tokenizer_ref := cfg.tokenizer.pretrained or cfg.pretrained:
        tokenizer = load_tokenizer(tokenizer_ref)
    else:
        tokenizer = train_wordpiece(list(texts), cfg.tokenizer.train_vocab_size, cfg.tokenizer.lowercase)
    backbone = build_backbone(
        cfg.pretrained, cfg.backbone_type, cfg.backbone_config, len(tokenizer), special_token_ids(tokenizer)
    )
    return tokenizer, TextClassifier(backbone, len(codes), cfg.head, cfg.max_len, cfg.dropout)


def _save_text(
    out: Path, cfg: TextModelConfig, name: str, codes: Sequence[int], tokenizer, model: TextClassifier
) -> None:
    tokenizer.save_pretrained(out / "tokenizer")
    model.backbone.config.save_pretrained(out / "backbone")
    meta = TextMeta(
        kind="text",
        name=name,
        codes=list(codes),
        head=cfg.head,
        max_len=cfg.max_len,
        dropout=cfg.dropout,
        hidden_size=model.hidden_size,
        backbone=cfg.pretrained or cfg.backbone_type,
    )
    store.save_weights(out, model, meta.to_json())


def train_text(
    cfg: TextModelConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    codes: Sequence[int],
    out: Path,
    run: RunOptions,
    inputs: Mapping[str, Path] | None = None,
) -> FitResult:
    seed_everything(run.seed)
    tokenizer, model = _text_model(cfg, codes, train["text"].tolist())

    def encode(frame: pd.DataFrame) -> TextDataset:
        ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=cfg.max_len)["input_ids"]
        return TextDataset(ids, frame["label"].to_numpy())

    train_data, valid_data = encode(train), encode(valid)
    collate = TextCollator(tokenizer.pad_token_id)
    t = cfg.train
    lengths = train_data.lengths if t.length_bucketing else len(train_data)
    train_sampler = _train_sampler(lengths, t.batch_size, run.seed)
    valid_sampler = LengthBucketSampler(
        valid_data.lengths, t.eval_batch_size, shuffle=False, pool_batches=10**6
    )
    train_loader = _loader(
        train_data, t, train=True, run=run, batch_sampler=train_sampler, collate_fn=collate
    )
    valid_loader = _loader(
        valid_data, t, train=False, run=run, batch_sampler=valid_sampler, collate_fn=collate
    )
    result = run.fit(model, train_loader, valid_loader, t)
    model.to("cpu")
    _save_text(out, cfg, run.name, codes, tokenizer, model)
    return result


def build_text(
    cfg: TextModelConfig, name: str, codes: list[int], out: Path, texts: list[str], inputs: dict
) -> Path:
    """A text folder as ``train_text`` writes it, untrained (its tokenizer trained on ``texts``)."""
    tokenizer, model = _text_model(cfg, codes, texts)
    _save_text(out, cfg, name, codes, tokenizer, model)
    return out


def image_transform_config(cfg: ImageModelConfig, model: ImageClassifier) -> images.ImageTransformConfig:
    data = model.data_config()
    return images.ImageTransformConfig(
        img_size=cfg.img_size,
        crop_fraction=cfg.crop_fraction,
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
    )


def train_image(
    cfg: ImageModelConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    codes: Sequence[int],
    out: Path,
    run: RunOptions,
    inputs: Mapping[str, Path] | None = None,
) -> FitResult:
    seed_everything(run.seed)
    # Products without a photo teach an image model nothing.
    train, valid = train[train["has_image"]], valid[valid["has_image"]]
    if train.empty or valid.empty:
        raise ValueError(f"{run.name}: no product with an image in the train or valid split")
    model = ImageClassifier(cfg.arch, len(codes), pretrained=cfg.pretrained, drop_rate=cfg.drop_rate)
    tcfg = image_transform_config(cfg, model)
    if run.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    t = cfg.train
    train_data = ImageDataset(
        train["image_path"].tolist(), train["label"].to_numpy(), images.train_transform(tcfg), tcfg
    )
    valid_data = ImageDataset(
        valid["image_path"].tolist(), valid["label"].to_numpy(), images.eval_transform(tcfg), tcfg
    )
    train_loader = _loader(train_data, t, train=True, run=run)
    valid_loader = _loader(valid_data, t, train=False, run=run)
    result = run.fit(model, train_loader, valid_loader, t)
    model.to("cpu")
    _save_image(out, run.name, codes, cfg, model)
    return result


def _save_image(
    out: Path, name: str, codes: Sequence[int], cfg: ImageModelConfig, model: ImageClassifier
) -> None:
    transform = asdict(image_transform_config(cfg, model))
    meta = ImageMeta(
        kind="image",
        name=name,
        codes=list(codes),
        arch=cfg.arch,
        num_features=model.num_features,
        transform=transform,
    )
    store.save_weights(out, model, meta.to_json())


def build_image(
    cfg: ImageModelConfig, name: str, codes: list[int], out: Path, texts: list[str], inputs: dict
) -> Path:
    """An image folder as ``train_image`` writes it, with random weights."""
    model = ImageClassifier(cfg.arch, len(codes), pretrained=False, drop_rate=cfg.drop_rate)
    _save_image(out, name, codes, cfg, model)
    return out


def embed_rows(
    frame: pd.DataFrame, text_runners: Sequence[TextRunner], image_runner: ImageRunner
) -> tuple[list[np.ndarray], np.ndarray]:
    """Frozen-backbone embeddings of catalog rows: one per text model, and the image features."""
    texts = frame["text"].tolist()
    text_embs = [runner.run(texts)[1] for runner in text_runners]
    imgs = images.load_optional(frame["image_path"], frame["has_image"])
    return text_embs, image_runner.run(imgs)[1]


def train_fusion(
    cfg: FusionModelConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    codes: Sequence[int],
    out: Path,
    run: RunOptions,
    inputs: Mapping[str, Path],
) -> FitResult:
    """Train the fusion head on embeddings computed once by the frozen level-1 backbones.

    ``inputs`` maps each level-1 name in ``cfg.text`` and ``cfg.image`` to its model folder; the
    folders are copied under ``out/inputs`` so the fusion model is complete on its own.
    """
    seed_everything(run.seed)
    text_runners = [TextRunner(inputs[n], run.device, cfg.train.eval_batch_size) for n in cfg.text]
    image_runner = ImageRunner(inputs[cfg.image], run.device, cfg.train.eval_batch_size)

    def dataset(frame: pd.DataFrame) -> TensorDictDataset:
        text_embs, image_emb = embed_rows(frame, text_runners, image_runner)
        ok = ~np.isnan(image_emb).any(axis=1)  # fusion learns from products with a photo
        return TensorDictDataset(
            {
                "texts": list(zip(*[torch.from_numpy(t[ok]) for t in text_embs], strict=True)),
                "image": torch.from_numpy(image_emb[ok]),
                "labels": torch.from_numpy(frame["label"].to_numpy()[ok]),
            }
        )

    log.info(
        "%s: embedding %d train and %d valid products with the frozen backbones",
        run.name,
        len(train),
        len(valid),
    )
    train_data, valid_data = dataset(train), dataset(valid)
    head = _fusion_head(cfg, codes, text_runners, image_runner)
    t = cfg.train
    result = run.fit(
        head, _loader(train_data, t, train=True, run=run), _loader(valid_data, t, train=False, run=run), t
    )
    head.to("cpu")
    _save_fusion(out, cfg, run.name, codes, head, inputs, text_runners, image_runner)
    return result


def _fusion_head(
    cfg: FusionModelConfig,
    codes: Sequence[int],
    text_runners: Sequence[TextRunner],
    image_runner: ImageRunner,
) -> FusionHead:
    text_dims = [r.model.hidden_size for r in text_runners]
    return FusionHead(text_dims, image_runner.model.num_features, len(codes), cfg.mode, cfg.dim, cfg.dropout)


def _save_fusion(
    out: Path,
    cfg: FusionModelConfig,
    name: str,
    codes: Sequence[int],
    head: FusionHead,
    inputs: Mapping[str, Path],
    text_runners: Sequence[TextRunner],
    image_runner: ImageRunner,
) -> None:
    """The head, with copies of its input folders under ``inputs/`` (hard links where possible)."""
    for n, folder in inputs.items():
        shutil.copytree(folder, out / "inputs" / n, copy_function=_link_or_copy, dirs_exist_ok=True)
    meta = FusionMeta(
        kind="fusion",
        name=name,
        codes=list(codes),
        text=list(cfg.text),
        image=cfg.image,
        mode=cfg.mode,
        dim=head.dim,
        dropout=cfg.dropout,
        text_dims=[r.model.hidden_size for r in text_runners],
        image_dim=image_runner.model.num_features,
        # What an ensemble checks before sharing one backbone pass between a level-1 head and this one.
        input_weights_sha256={n: r.meta.weights_sha256 for n, r in zip(cfg.text, text_runners, strict=True)}
        | {cfg.image: image_runner.meta.weights_sha256},
    )
    store.save_weights(out, head, meta.to_json())


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def build_fusion(
    cfg: FusionModelConfig, name: str, codes: list[int], out: Path, texts: list[str], inputs: dict
) -> Path:
    """A fusion folder as ``train_fusion`` writes it, with a random head over the ``inputs`` folders."""
    text_runners = [TextRunner(inputs[n]) for n in cfg.text]
    image_runner = ImageRunner(inputs[cfg.image])
    head = _fusion_head(cfg, codes, text_runners, image_runner)
    _save_fusion(out, cfg, name, codes, head, inputs, text_runners, image_runner)
    return out
