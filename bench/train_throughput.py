"""Training throughput of the level-1 networks: the paper's way against mmpc's.

The paper's exact architectures with random weights (nothing is downloaded), as the recipe
`mlproject/paper-shapes.yaml` declares them: FlauBERT-base and CamemBERT-base with their heads (27
classes, max_len 256) and SE-ResNeXt-50; the training hyper-parameters (learning rate, optimiser,
schedule, epochs) are the paper recipe's (`mlproject/paper.yaml`). Every measurement runs mmpc's own
training step, `mmpc.training.engine.train_one_epoch`, over a fixed number of batches, with the model
and optimiser built as mmpc builds them.

Text, the same model and the same samples measured two ways:
- paper: every sample padded to 256, fp32, plain random batches, eager attention, unfused AdamW;
- mmpc:  dynamic padding over length-bucketed batches (LengthBucketSampler + TextCollator), bf16
         autocast on CUDA (fp32 on CPU), SDPA attention where the backbone has it, fused AdamW on CUDA.
Image: images/s of a training step fed by a DataLoader that decodes JPEGs, trims borders and applies
the paper's augmentation, plus the loader alone and the model alone (preloaded tensors).
From the rates it projects the wall time of the paper's whole level-1 recipe on this device.

Runs with torch, transformers, timm, PyYAML and pandas (the recipe reader); no MLflow, Prefect,
LightGBM, shap or scikit-learn:
    PYTHONPATH=. python bench/train_throughput.py [--device auto|cpu|cuda] [--scale full|small|tiny]
On CPU (or --scale small) a scaled-down configuration runs (~1-2 minutes on 2 cores); --scale tiny is a
seconds-long check that everything runs (its figures mean nothing).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from mmpc import images
from mmpc.kinds.base import TrainConfig
from mmpc.kinds.text import TextModelConfig
from mmpc.models.batching import LengthBucketSampler, TextCollator
from mmpc.models.image import ImageClassifier
from mmpc.models.text import TextClassifier, build_backbone
from mmpc.models.tokenizer import train_wordpiece
from mmpc.recipe import Recipe, load_recipe
from mmpc.text import join
from mmpc.training import engine
from mmpc.training.data import ImageDataset

REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/rakuten/real_sample"
SHAPES_RECIPE = "paper-shapes"  # the architectures
PAPER_RECIPE = "paper"  # the hyper-parameters and epochs
NUM_CLASSES = 27

# The paper's recipe (Verma et al. 2020) on the Rakuten catalog, for the projection.
CATALOG_PRODUCTS = 84_916
TRAIN_FRACTION, VALID_FRACTION = 0.75, 0.05
EVAL_COST = 1 / 3  # a forward-only pass costs about a third of forward + backward + step

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


# Per scale: timed steps, warmup steps, text batch, image batch, image size (None: the recipe's).
SCALE_DEFAULTS: dict[str, tuple[int, int, int, int, int | None]] = {
    "full": (40, 10, 32, 64, None),
    "small": (10, 2, 8, 8, 128),
    "tiny": (2, 1, 4, 4, 64),
}


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


@dataclass
class Timing:
    seconds: float
    samples: int
    real_tokens: int = 0
    padded_tokens: int = 0
    peak_mem_mb: float = 0.0

    @property
    def samples_s(self) -> float:
        return self.samples / self.seconds

    @property
    def tokens_s(self) -> float:
        return self.real_tokens / self.seconds


def say(line: str = "") -> None:
    print(line, flush=True)


def rate(value: float, width: int = 8) -> str:
    """Three significant digits, no exponent: 0.0712, 4.59, 1234."""
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:{width}.{digits}f}"


def rounded(value):
    """Four decimals in the JSON line, nested dicts included."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def parse_args(argv: list[str] | None = None) -> BenchArgs:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--scale",
        choices=list(SCALE_DEFAULTS),
        help="default: full on CUDA, small on CPU; tiny: a seconds-long check that everything runs",
    )
    p.add_argument(
        "--steps", type=int, help="timed steps per measurement (default 40 full, 10 small, 2 tiny)"
    )
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10 full, 2 small, 1 tiny)")
    p.add_argument("--batch-size", type=int, help="text batch (default 32 full, 8 small, 4 tiny)")
    p.add_argument("--image-batch-size", type=int, help="image batch (default 64 full, 8 small, 4 tiny)")
    p.add_argument("--image-arch", help=f"timm architecture (default: the {SHAPES_RECIPE} recipe's)")
    p.add_argument("--real-sample", type=Path, default=REAL_SAMPLE, help="folder with X_train_update.csv")
    p.add_argument("--synthetic", action="store_true", help="ignore the real sample even if present")
    p.add_argument("--seed", type=int, default=0)
    return BenchArgs(**vars(p.parse_args(argv)))


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


# ---------------------------------------------------------------- device helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux resets the process's RSS high-water mark (VmHWM) on this write; getrusage never resets.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """GPU: max allocated by torch. CPU: peak RSS of this process since the last reset (VmHWM), or
    getrusage's whole-life peak where /proc is missing."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_bf16_peak(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Dense bf16 matmul FLOP/s measured on this GPU: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1: the tokenizers trainer draws its progress bar there from Rust."""
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------- the timed loop


def timed_epoch(
    run: engine.TrainRun, warmup: Iterable[dict], batches: Iterable[dict], device: torch.device
) -> tuple[float, float]:
    """mmpc's training step over ``warmup`` (untimed), then over ``batches``: their seconds and the
    peak memory of the timed part. The engine reads the loss every step (a device sync), as in training."""
    engine.train_one_epoch(run, warmup)
    synchronize(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    engine.train_one_epoch(run, batches)
    synchronize(device)
    return time.perf_counter() - start, peak_memory_mb(device)


def prepared(
    model: nn.Module, batches: list | DataLoader, cfg: TrainConfig, device: torch.device, fused: bool
) -> engine.TrainRun:
    """The engine's set-up over these batches; ``fused``: the fused optimiser kernel (CUDA only)."""
    optimizer = engine.make_optimizer(model.to(device), cfg, fused=fused and device.type == "cuda")
    return engine.prepare(model, batches, cfg, device=device, desc="bench", optimizer=optimizer)


# ---------------------------------------------------------------- text lengths and batches


def real_texts(folder: Path) -> list[str]:
    with open(folder / "X_train_update.csv", newline="", encoding="utf-8") as f:
        return [join(row["designation"], row["description"]) for row in csv.DictReader(f)]


def token_lengths(args: BenchArgs, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Token counts per product text (with <s> and </s>, before truncation), and where they came from."""
    if not args.synthetic and (args.real_sample / "X_train_update.csv").exists():
        texts = real_texts(args.real_sample)
        # No pretrained CamemBERT/FlauBERT tokenizer offline: a WordPiece of CamemBERT's vocabulary size
        # trained on these texts stands in (it knows their words, so it splits a little less than a
        # pretrained one would: a slight under-estimate of lengths, i.e. of the paper way's waste).
        with quiet_stdout():
            tok = train_wordpiece(texts, vocab_size=32_005)
        counts = np.array([len(ids) for ids in tok(texts)["input_ids"]])
        words = np.array([len(t.split()) for t in texts])
        source = (
            f"token counts of a WordPiece (vocab {len(tok)}) trained offline on the {len(texts)} "
            f"real_sample texts, {(counts - 2).sum() / words.sum():.2f} tokens per whitespace word "
            f"(the 1.3 x words rule would give a median of {np.median(1.3 * words + 2):.0f})"
        )
        return counts, source
    # Product texts: median ~50 tokens with a long tail (mean about twice the median).
    counts = np.maximum(3, rng.lognormal(np.log(50), 1.1, size=20_000)).astype(int)
    return counts, "synthetic log-normal (median 50 tokens, sigma 1.1): no real_sample texts found"


def representative_batches(lengths: np.ndarray, batch_size: int, n: int, seed: int) -> list[np.ndarray]:
    """n batches of an epoch of mmpc's LengthBucketSampler, chosen at evenly spaced quantiles of their
    padded width: with tens of steps and heavy-tailed lengths, n random batches would swing widely."""
    sampler = LengthBucketSampler(lengths, batch_size, seed=seed)
    batches = [np.asarray(b) for b in sampler if len(b) == batch_size]
    widths = np.array([lengths[b].max() for b in batches])
    order = np.argsort(widths, kind="stable")
    picks = order[((np.arange(n) + 0.5) * len(order) / n).astype(int)]
    np.random.default_rng(seed).shuffle(picks)
    return [batches[i] for i in picks]


def make_item(length: int, arch: TextArch, rng: np.random.Generator) -> dict:
    body = rng.integers(10, arch.vocab_size, size=max(0, length - 2)).tolist()
    ids = [arch.special_ids["bos"], *body, arch.special_ids["eos"]]
    return {"input_ids": ids, "labels": int(rng.integers(NUM_CLASSES))}


def pad_to(batch: dict, width: int, pad_id: int) -> dict:
    extra = width - batch["input_ids"].shape[1]
    batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    return batch


def text_batches(arch: TextArch, lengths: np.ndarray, setup: Setup, seed: int) -> dict[str, list[dict]]:
    """The same samples batched both ways: mmpc's length buckets, dynamically padded; the paper's plain
    random batches padded to max_len. Collated up front: the loop times the model, not the collator."""
    rng = np.random.default_rng(seed)
    max_len = arch.cfg.max_len
    epoch = rng.choice(np.minimum(lengths, max_len), size=setup.text_batch * max(200, 2 * setup.steps))
    chosen = representative_batches(epoch, setup.text_batch, setup.steps, seed)
    items = {int(i): make_item(int(epoch[i]), arch, rng) for i in np.concatenate(chosen)}
    collate = TextCollator(arch.special_ids["pad"])
    mmpc = [collate([items[int(i)] for i in b]) for b in chosen]
    shuffled = rng.permutation(np.concatenate(chosen))
    paper = [
        pad_to(
            collate([items[int(i)] for i in shuffled[s : s + setup.text_batch]]),
            max_len,
            arch.special_ids["pad"],
        )
        for s in range(0, len(shuffled), setup.text_batch)
    ]
    return {"paper": paper, "mmpc": mmpc}


def set_attention(backbone: nn.Module, attn: str) -> str:
    """Switch the attention kernels in place; returns the implementation in use (an older
    transformers without ``set_attn_implementation`` keeps the one it was built with)."""
    if backbone.config._attn_implementation != attn and hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation(attn)
    return backbone.config._attn_implementation


def non_embedding_params(model: nn.Module) -> int:
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - embedding


def train_flops(real_lengths: np.ndarray, n_params: int, layers: int, d: int) -> float:
    """Model FLOPs of training on these sequences, counted on real tokens only (padding is waste, not
    model work). Per token of a sequence of length T: 6 N + 12 L d T, with N the non-embedding
    parameters (the 6 = 2 forward + 4 backward multiply-adds) and 12 L d T the attention scores and
    weighted sums (PaLM, Chowdhery et al. 2022, appendix B)."""
    t = real_lengths.astype(np.float64)
    return float((6 * n_params * t + 12 * layers * d * t * t).sum())


# ---------------------------------------------------------------- text benchmark


def text_model(arch: TextArch, device: torch.device) -> TextClassifier:
    """Built as mmpc's text training builds it, from the recipe's section, with random weights."""
    cfg = arch.cfg
    backbone = build_backbone(
        None, cfg.backbone_type, arch.backbone_config, arch.vocab_size, arch.special_ids
    )
    return TextClassifier(backbone, NUM_CLASSES, cfg.head, cfg.max_len, cfg.dropout).to(device)


def text_way(model: TextClassifier, arch: TextArch, batches: list[dict], setup: Setup, mmpc: bool) -> dict:
    """One way's measurement: mmpc's training step over the warmup batches, then the timed ones."""
    # The paper's 2020 code ran eager attention; mmpc keeps the backbone's default (SDPA for
    # CamemBERT in transformers 5, eager for FlauBERT, which has no other implementation).
    default_attn = model.backbone.config._attn_implementation
    attn = set_attention(model.backbone, default_attn if mmpc else "eager")
    cfg = dataclasses.replace(arch.train, amp=mmpc)
    run = prepared(model, batches[: setup.warmup] + batches, cfg, setup.device, fused=mmpc)
    seconds, peak = timed_epoch(run, batches[: setup.warmup], batches, setup.device)
    set_attention(model.backbone, default_attn)
    del run
    model.zero_grad(set_to_none=True)
    free_memory(setup.device)
    timing = Timing(
        seconds,
        samples=sum(len(b["labels"]) for b in batches),
        real_tokens=int(sum(b["attention_mask"].sum() for b in batches)),
        padded_tokens=sum(b["input_ids"].numel() for b in batches),
        peak_mem_mb=peak,
    )
    return {"timing": timing, "attn": attn}


def bench_text(
    arch: TextArch, lengths: np.ndarray, setup: Setup, args: BenchArgs, peak_flops: float | None
) -> dict:
    torch.manual_seed(args.seed)
    model = text_model(arch, setup.device)
    n_params = non_embedding_params(model)
    layers, d = model.backbone.config.num_hidden_layers, model.hidden_size
    batches = text_batches(arch, lengths, setup, args.seed)
    real_lengths = np.concatenate([b["attention_mask"].sum(1).numpy() for b in batches["mmpc"]])
    flops = train_flops(real_lengths, n_params, layers, d)
    out: dict = {}
    for way in ("paper", "mmpc"):
        out[way] = text_way(model, arch, batches[way], setup, mmpc=way == "mmpc")
        t: Timing = out[way]["timing"]
        mfu = flops / t.seconds / peak_flops if peak_flops else None
        out[way]["mfu"] = mfu
        say(
            f"  {arch.name:9s} {way:5s}: {rate(t.samples_s)} samples/s {rate(t.tokens_s, 10)} real tokens/s  "
            f"padding efficiency {t.real_tokens / t.padded_tokens:5.1%}  peak {t.peak_mem_mb:8.0f} MiB  "
            f"attn {out[way]['attn']}" + (f"  MFU {mfu:.1%}" if mfu is not None else "")
        )
    ratio = out["mmpc"]["timing"].samples_s / out["paper"]["timing"].samples_s
    say(f"  {arch.name:9s} mmpc/paper: {ratio:.2f}x  ({n_params / 1e6:.1f}M non-embedding parameters)")
    out.update(ratio=ratio, flops=flops, non_embedding_params=n_params)
    del model
    free_memory(setup.device)
    return out


# ---------------------------------------------------------------- image benchmark


def write_synthetic_jpegs(folder: Path, count: int, rng: np.random.Generator) -> list[str]:
    """500x500 product-like photos: a noisy gradient object on a white frame (so border trimming
    has work), saved as quality-90 JPEGs about the size of the real ones."""
    paths = []
    yy, xx = np.mgrid[0:500, 0:500]
    for i in range(count):
        pixels = np.full((500, 500, 3), 255.0)
        top, left = rng.integers(20, 120, size=2)
        bottom, right = rng.integers(380, 480, size=2)
        colour = rng.uniform(0, 255, size=3)
        shade = (0.6 + 0.4 * (xx + yy) / 1000.0)[..., None]
        obj = colour * shade + rng.normal(0, 8, size=(500, 500, 3))
        pixels[top:bottom, left:right] = obj[top:bottom, left:right]
        path = folder / f"image_{i}_product_{i}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def image_paths(args: BenchArgs, count: int, tmp: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    folder = args.real_sample / "image_train"
    files = [] if args.synthetic or not folder.is_dir() else sorted(str(p) for p in folder.glob("*.jpg"))
    if files:
        source = f"{len(files)} real JPEGs from {folder}"
    else:
        files = write_synthetic_jpegs(tmp, min(count, 128), rng)
        source = f"{len(files)} synthetic 500x500 JPEGs (no real_sample images used)"
    return [files[i % len(files)] for i in range(count)], source


def image_loader(
    paths: list[str], tcfg: images.ImageTransformConfig, setup: Setup, seed: int, workers: int
) -> DataLoader:
    labels = np.random.default_rng(seed).integers(NUM_CLASSES, size=len(paths))
    dataset = ImageDataset(paths, labels, images.train_transform(tcfg), tcfg)
    return DataLoader(
        dataset,
        batch_size=setup.image_batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def image_ways(cuda: bool) -> list[tuple[str, bool]]:
    """(way, fast): mmpc is channels_last + bf16 autocast + fused Adam on CUDA; on CPU that is the
    paper's fp32 way, so only one way runs there."""
    return [("mmpc", cuda), ("paper", False)] if cuda else [("mmpc", False)]


def image_run(
    model: ImageClassifier, batches: list | DataLoader, setup: Setup, fast: bool
) -> engine.TrainRun:
    """The engine set up as mmpc's image training sets it up (channels_last on CUDA), or the paper's way."""
    model.to(memory_format=torch.channels_last if fast else torch.contiguous_format)
    cfg = dataclasses.replace(setup.image_train, amp=fast)
    return prepared(model, batches, cfg, setup.device, fused=fast)


def image_model_only(model: ImageClassifier, setup: Setup, fast: bool) -> float:
    """images/s of mmpc's training step on one preloaded batch, repeated."""
    fixed = {
        "pixels": torch.randn(setup.image_batch, 3, setup.img_size, setup.img_size),
        "labels": torch.randint(NUM_CLASSES, (setup.image_batch,)),
    }
    warmup, batches = [fixed] * setup.warmup, [fixed] * setup.steps
    run = image_run(model, warmup + batches, setup, fast)
    seconds, _ = timed_epoch(run, warmup, batches, setup.device)
    del run
    model.zero_grad(set_to_none=True)
    free_memory(setup.device)
    return setup.steps * setup.image_batch / seconds


def image_with_loader(
    model: ImageClassifier, loader: DataLoader, setup: Setup, fast: bool
) -> tuple[float, float]:
    """images/s and peak memory of mmpc's training step fed by the loader (one epoch of it: the first
    ``warmup`` batches untimed)."""
    run = image_run(model, loader, setup, fast)
    batches = iter(loader)  # a new epoch, the same workers
    seconds, peak = timed_epoch(run, itertools.islice(batches, setup.warmup), batches, setup.device)
    del run
    model.zero_grad(set_to_none=True)
    free_memory(setup.device)
    return setup.steps * setup.image_batch / seconds, peak


def loader_only(loader: DataLoader, warmup: int) -> float:
    batches = iter(loader)
    for _ in itertools.islice(batches, warmup):
        pass
    start, n = time.perf_counter(), 0
    for batch in batches:
        n += len(batch["labels"])
    return n / (time.perf_counter() - start)


def bench_image(args: BenchArgs, setup: Setup, tmp: Path) -> dict:
    torch.manual_seed(args.seed)
    cuda, arch = setup.device.type == "cuda", setup.image_arch
    model = ImageClassifier(arch, NUM_CLASSES, pretrained=False).to(setup.device)
    out: dict = {way: {} for way, _ in image_ways(cuda)}
    # The model alone first, before any loader worker exists to share the CPU with.
    for way, fast in image_ways(cuda):
        out[way]["model_only"] = image_model_only(model, setup, fast)
        say(f"  {arch} {way:5s} model only (preloaded tensors): {rate(out[way]['model_only'])} images/s")

    data = model.data_config()
    tcfg = images.ImageTransformConfig(
        img_size=setup.img_size, mean=tuple(data["mean"]), std=tuple(data["std"])
    )
    paths, source = image_paths(
        args, (setup.warmup + setup.steps) * setup.image_batch, tmp, np.random.default_rng(args.seed)
    )
    workers = min(8, os.cpu_count() or 1)
    say(f"  images: {source}; {workers} loader workers, {setup.img_size}px crops")
    loader = image_loader(paths, tcfg, setup, args.seed, workers)
    out["loader_only"] = loader_only(loader, setup.warmup)
    say(f"  loader only (decode + border trim + augment): {rate(out['loader_only'])} images/s")

    for way, fast in image_ways(cuda):
        images_s, peak = image_with_loader(model, loader, setup, fast)
        out[way].update(end_to_end=images_s, peak_mem_mb=peak)
        say(f"  {arch} {way:5s} with the loader: {rate(images_s)} images/s  peak {peak:8.0f} MiB")
    if not cuda:
        out["paper"] = out["mmpc"]
    bound = "decoding" if out["loader_only"] < out["mmpc"]["model_only"] else "the model"
    say(f"  image training is bound by {bound} on this machine")
    out.update(source=source, bound=bound)
    del loader, model
    free_memory(setup.device)
    return out


# ---------------------------------------------------------------- projection


def project_minutes(setup: Setup, text: dict[str, dict], image: dict, way: str) -> dict[str, float]:
    """Minutes of the paper's level-1 recipe at the measured rates: each model trains its recipe's
    epochs on 75 % of the catalog and evaluates 5 % per epoch; fusion needs one forward pass of each
    backbone over every product (it trains on cached embeddings; the same pass gives the stacker its
    level-1 probabilities), then 3 epochs of a tiny head (negligible)."""
    n_train, n_valid = TRAIN_FRACTION * CATALOG_PRODUCTS, VALID_FRACTION * CATALOG_PRODUCTS
    minutes: dict[str, float] = {}
    embed_s = 0.0
    for arch in setup.texts:
        rate = text[arch.name][way]["timing"].samples_s
        minutes[arch.name] = arch.epochs * (n_train + n_valid * EVAL_COST) / rate / 60
        embed_s += CATALOG_PRODUCTS * EVAL_COST / rate
    # Image evaluation still decodes every JPEG: the slower of the loader and a forward-only model.
    img = image[way]
    eval_rate = min(image["loader_only"], img["model_only"] / EVAL_COST)
    minutes[setup.image_name] = setup.image_epochs * (n_train / img["end_to_end"] + n_valid / eval_rate) / 60
    minutes["fusion"] = (embed_s + CATALOG_PRODUCTS / eval_rate) / 60
    minutes["total"] = sum(minutes.values())
    return minutes


# ---------------------------------------------------------------- main


def width_and_layers(config: dict) -> str:
    """ "768 wide, 12 layers" under either naming scheme (HF's or XLM/FlauBERT's)."""
    width = config.get("hidden_size") or config.get("emb_dim")
    layers = config.get("num_hidden_layers") or config.get("n_layers")
    return f"{width} wide, {layers} layer(s)"


def describe(setup: Setup) -> str:
    texts = " and ".join(a.name for a in setup.texts)
    if setup.scale == "full":
        shapes = ", ".join(
            f"{a.name} {width_and_layers(a.backbone_config)} ({a.cfg.head} head)" for a in setup.texts
        )
        what = f"full: the {SHAPES_RECIPE} recipe's shapes, {shapes}"
    else:
        scaled = SCALED[setup.scale][setup.texts[0].cfg.backbone_type] if setup.texts else {}
        what = f"{setup.scale} (NOT the real sizes): {texts} {width_and_layers(scaled)}, full vocabularies"
    return (
        f"{what}; {setup.image_arch} at {setup.img_size}px; text batch {setup.text_batch}, image batch "
        f"{setup.image_batch}"
    )


def header(setup: Setup, args: BenchArgs) -> tuple[str, float | None]:
    """Print what runs; returns the device's name and, on CUDA, its measured bf16 peak."""
    cuda = setup.device.type == "cuda"
    device_name = torch.cuda.get_device_name(setup.device) if cuda else platform.processor() or "cpu"
    say(
        f"device: {setup.device} ({device_name}); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, timm {timm.__version__}"
    )
    if not cuda:
        say(f"torch threads: {torch.get_num_threads()} (the default) on {os.cpu_count()} CPUs")
    say(f"config: {describe(setup)}")
    say(f"steps: {setup.warmup} warmup + {setup.steps} timed per measurement; max_len {max_len(setup)}")
    peak_flops = measure_bf16_peak(setup.device) if cuda else None
    if peak_flops:
        say(f"bf16 dense matmul peak (8192^3): {peak_flops / 1e12:.0f} TFLOP/s")
    return device_name, peak_flops


def max_len(setup: Setup) -> int:
    return max((a.cfg.max_len for a in setup.texts), default=256)


def text_figures(text: dict[str, dict], peak_flops: float | None) -> dict:
    def seconds(way: str) -> float:
        return sum(t[way]["timing"].seconds for t in text.values())

    flops = sum(t["flops"] for t in text.values())
    figures = {
        # time for the same samples through both models, paper way over mmpc way
        "text_ratio": seconds("paper") / seconds("mmpc"),
    }
    for name, t in text.items():
        for way in ("paper", "mmpc"):
            timing: Timing = t[way]["timing"]
            figures[f"{name}_{way}_samples_s"] = timing.samples_s
            figures[f"{name}_{way}_tokens_s"] = timing.tokens_s
            figures[f"{name}_{way}_padding_efficiency"] = timing.real_tokens / timing.padded_tokens
            figures[f"{name}_{way}_peak_mem_mb"] = timing.peak_mem_mb
            figures[f"{name}_{way}_attn"] = t[way]["attn"]
        figures[f"{name}_ratio"] = t["ratio"]
        figures[f"{name}_mfu"] = t["mmpc"]["mfu"]
    figures.update(
        peak_bf16_tflops=peak_flops / 1e12 if peak_flops else None,
        text_mfu=flops / seconds("mmpc") / peak_flops if peak_flops else None,
        text_mfu_paper_way=flops / seconds("paper") / peak_flops if peak_flops else None,
    )
    return figures


PEAK_MEM_KIND = {
    "cuda": "torch.cuda.max_memory_allocated",
    "cpu": "peak RSS (VmHWM, reset per measurement)",
}


def image_figures(image: dict, cuda: bool) -> dict:
    return dict(
        peak_mem_kind=PEAK_MEM_KIND["cuda" if cuda else "cpu"],
        image_source=image["source"],
        image_images_s=image["mmpc"]["end_to_end"],
        image_model_only_images_s=image["mmpc"]["model_only"],
        image_loader_only_images_s=image["loader_only"],
        image_paper_images_s=image["paper"]["end_to_end"],
        image_paper_model_only_images_s=image["paper"]["model_only"],
        image_peak_mem_mb=image["mmpc"]["peak_mem_mb"],
        image_bound_by=image["bound"],
    )


def setup_figures(setup: Setup, device_name: str, lengths: np.ndarray, length_source: str) -> dict:
    return {
        "device": str(setup.device),
        "device_name": device_name,
        "config": setup.scale,
        "config_desc": describe(setup),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
        },
        "recipe": SHAPES_RECIPE,
        "steps": setup.steps,
        "warmup": setup.warmup,
        "text_batch_size": setup.text_batch,
        "image_batch_size": setup.image_batch,
        "image_size": setup.img_size,
        "image_arch": setup.image_arch,
        "length_source": length_source,
        "median_tokens": float(np.median(lengths)),
    }


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    # Tokenizers must not start its thread pool before the DataLoader forks its workers (it warns and
    # can deadlock there); nothing here needs the hub.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup = resolve_setup(args)
    transformers.logging.set_verbosity_error()
    device_name, peak_flops = header(setup, args)

    lengths, length_source = token_lengths(args, np.random.default_rng(args.seed))
    limit = max_len(setup)
    say(f"text lengths: {length_source}")
    say(
        f"  median {np.median(lengths):.0f} tokens, mean {np.minimum(lengths, limit).mean():.0f} after "
        f"truncation at {limit}, {np.mean(lengths > limit):.0%} truncated"
    )

    def section(title: str) -> None:
        say(f"{title} [{time.perf_counter() - started:.0f} s]")

    section("text (mmpc's train_one_epoch: forward + backward + AdamW step):")
    text = {arch.name: bench_text(arch, lengths, setup, args, peak_flops) for arch in setup.texts}
    section("image (mmpc's train_one_epoch: forward + backward + Adam step):")
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-") as tmp:
        image = bench_image(args, setup, Path(tmp))

    projection = {way: project_minutes(setup, text, image, way) for way in ("paper", "mmpc")}
    section("projected paper recipe on this device (84,916 products; 75 % train, 5 % valid), minutes:")
    for way, minutes in projection.items():
        say(f"  {way:5s}: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    if setup.scale != "full":
        say(f"  ({setup.scale} config: these are the scaled-down models' rates, not the real recipe's cost)")

    figures = {
        **setup_figures(setup, device_name, lengths, length_source),
        **text_figures(text, peak_flops),
        **image_figures(image, setup.device.type == "cuda"),
        "projected_paper_recipe_min_paper_way": projection["paper"]["total"],
        "projected_paper_recipe_min_mmpc_way": projection["mmpc"]["total"],
        "projected_breakdown_min": projection,
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(rounded(figures)), flush=True)
    return figures


if __name__ == "__main__":
    main()
