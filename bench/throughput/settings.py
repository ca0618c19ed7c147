"""What the training-throughput benchmark runs: its scales, its arguments, and the models and
optimisation settings resolved from the recipes and the device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from mmpc.kinds.base import TrainConfig
from mmpc.kinds.text import TextModelConfig
from mmpc.recipe import Recipe, load_recipe

REAL_SAMPLE = Path(__file__).resolve().parents[3] / "shared/data/rakuten/real_sample"
SHAPES_RECIPE = "paper-shapes"  # the architectures
PAPER_RECIPE = "paper"  # the hyper-parameters and epochs
NUM_CLASSES = 27

# The published checkpoints' own special token ids (the recipe takes them from the catalog's tokenizer,
# which the benchmark has none of: its token ids are random).
SPECIAL_IDS = {"camembert": {"pad": 1, "bos": 5, "eos": 6}, "flaubert": {"pad": 2, "bos": 0, "eos": 1}}
# The scaled-down stand-ins: the recipe's backbone with these values laid over it (full vocabularies).
SCALED = {
    "small": {
        "camembert": dict(
            hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024
        ),
        "flaubert": dict(emb_dim=256, n_layers=2, n_heads=4),
    },
    "tiny": {
        "camembert": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        "flaubert": dict(emb_dim=32, n_layers=1, n_heads=2),
    },
}
TINY_IMAGE_ARCH = "resnet10t"  # --scale tiny: a small timm network in place of the recipe's

# Per scale: timed steps, warmup steps, text batch, image batch, image size (None: the recipe's).
SCALE_DEFAULTS: dict[str, tuple[int, int, int, int, int | None]] = {
    "full": (40, 10, 32, 64, None),
    "small": (10, 2, 8, 8, 128),
    "tiny": (2, 1, 4, 4, 64),
}


@dataclass(frozen=True)
class TextArch:
    """One text model of the recipe, at the scale that runs."""

    name: str
    cfg: TextModelConfig  # the recipe's section
    backbone_config: dict
    special_ids: dict[str, int]
    train: TrainConfig  # the paper recipe's hyper-parameters
    epochs: int  # the paper recipe's, for the projection

    @property
    def vocab_size(self) -> int:
        return int(self.backbone_config["vocab_size"])


@dataclass
class BenchArgs:
    device: str = "auto"
    scale: str | None = None  # full | small | tiny; default: full on CUDA, small on CPU
    steps: int | None = None  # timed steps per measurement
    warmup: int | None = None  # untimed steps before them
    batch_size: int | None = None  # text batch; the paper's 32 at full scale
    image_batch_size: int | None = None  # the paper's 64 at full scale
    image_arch: str | None = None  # default: the recipe's (resnet10t at --scale tiny)
    real_sample: Path = REAL_SAMPLE
    synthetic: bool = False  # ignore real_sample: log-normal lengths, generated JPEGs
    seed: int = 0


@dataclass
class Setup:
    """What actually runs, resolved from the arguments, the device and the recipes."""

    device: torch.device
    scale: str
    steps: int
    warmup: int
    text_batch: int
    image_batch: int
    img_size: int
    texts: list[TextArch]
    image_name: str
    image_arch: str
    image_train: TrainConfig
    image_epochs: int


def max_len(setup: Setup) -> int:
    return max((a.cfg.max_len for a in setup.texts), default=256)


def bench_train_config(train: TrainConfig, batch_size: int) -> TrainConfig:
    """The recipe's optimisation (optimiser, learning rate, schedule, clipping) over one epoch of the
    measured batches: no step or time cap, no checkpoints, no compilation."""
    return dataclasses.replace(
        train,
        batch_size=batch_size,
        epochs=1,
        grad_accum=1,
        max_steps=None,
        max_minutes=None,
        checkpoint_every_steps=0,
        compile=False,
    )


def text_archs(shapes: Recipe, paper: Recipe, scale: str, batch_size: int) -> list[TextArch]:
    """The recipe's text models, scaled down below full scale; the paper recipe's training settings."""
    archs = []
    for name, cfg in shapes.models.items():
        if cfg.kind != "text":
            continue
        kind = cfg.backbone_type
        if kind not in SPECIAL_IDS:
            raise SystemExit(f"{name}: no special token ids known for backbone_type {kind!r}")
        config = {**cfg.backbone_config, **SCALED.get(scale, {}).get(kind, {})}
        train = paper.models[name].train if name in paper.models else cfg.train
        archs.append(
            TextArch(
                name, cfg, config, SPECIAL_IDS[kind], bench_train_config(train, batch_size), train.epochs
            )
        )
    return archs


def resolve_setup(args: BenchArgs) -> Setup:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    scale = args.scale or ("full" if use_cuda else "small")
    steps, warmup, text_batch, image_batch, img_size = SCALE_DEFAULTS[scale]
    shapes, paper = load_recipe(SHAPES_RECIPE), load_recipe(PAPER_RECIPE)
    image_name, image_cfg = next((n, c) for n, c in shapes.models.items() if c.kind == "image")
    image_train = paper.models[image_name].train if image_name in paper.models else image_cfg.train
    image_batch = args.image_batch_size or image_batch
    text_batch = args.batch_size or text_batch
    return Setup(
        device=device,
        scale=scale,
        steps=args.steps or steps,
        warmup=args.warmup if args.warmup is not None else warmup,
        text_batch=text_batch,
        image_batch=image_batch,
        img_size=img_size or image_cfg.img_size,
        texts=text_archs(shapes, paper, scale, text_batch),
        image_name=image_name,
        image_arch=args.image_arch or (TINY_IMAGE_ARCH if scale == "tiny" else image_cfg.arch),
        image_train=bench_train_config(image_train, image_batch),
        image_epochs=image_train.epochs,
    )
