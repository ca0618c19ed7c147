"""Training throughput of the level-1 networks: the paper's way against mmpc's.

Real-size architectures with random weights (built from configs, nothing is downloaded):
CamemBERT-base and FlauBERT-base (27-class heads, max_len 256) and timm's SE-ResNeXt-50.

Text, the same model and the same samples measured two ways:
- paper: every sample padded to 256, fp32, plain random batches, eager attention, AdamW;
- mmpc:  dynamic padding over length-bucketed batches (LengthBucketSampler + TextCollator), bf16
         autocast on CUDA (fp32 on CPU), SDPA attention where the backbone has it, fused AdamW on CUDA.
Image: images/s of a training step fed by a DataLoader that decodes JPEGs, trims borders and applies
the paper's augmentation, plus the loader alone and the model alone (preloaded tensors).
From the rates it projects the wall time of the paper's whole level-1 recipe on this device.

Runs with torch, transformers and timm alone (no MLflow, Prefect, LightGBM, shap or scikit-learn):
    PYTHONPATH=. python bench/train_throughput.py [--device auto|cpu|cuda] [--scale full|small]
On CPU (or --scale small) a scaled-down configuration runs (~1-2 minutes on 2 cores).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import itertools
import json
import math
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
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
from mmpc.models.batching import LengthBucketSampler, TextCollator, autocast
from mmpc.models.image import ImageClassifier
from mmpc.models.text import TextClassifier, build_backbone
from mmpc.models.tokenizer import train_wordpiece
from mmpc.text import join
from mmpc.training.data import ImageDataset

REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/rakuten/real_sample"
NUM_CLASSES = 27
MAX_LEN = 256

# The paper's recipe (Verma et al. 2020) on the Rakuten catalog, for the projection.
CATALOG_PRODUCTS = 84_916
TRAIN_FRACTION, VALID_FRACTION = 0.75, 0.05
EVAL_COST = 1 / 3  # a forward-only pass costs about a third of forward + backward + step
IMAGE_EPOCHS = 10


@dataclass(frozen=True)
class TextArch:
    """A text backbone as the paper trains it; `full` is the real config, `small` the CPU stand-in."""

    name: str
    backbone_type: str
    head: str
    vocab_size: int
    special_ids: dict[str, int]
    epochs: int
    full: dict
    small: dict


TEXT_ARCHS = (
    TextArch(
        "camembert",
        "camembert",
        "cls",
        32_005,
        {"pad": 1, "bos": 5, "eos": 6},  # camembert-base's own ids
        epochs=10,
        full=dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
        ),
        small=dict(
            hidden_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=1024,
            max_position_embeddings=514,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
        ),
    ),
    TextArch(
        "flaubert",
        "flaubert",
        "flaubert",
        68_729,
        {"pad": 2, "bos": 0, "eos": 1},  # flaubert_base_cased's own ids
        epochs=12,
        full=dict(emb_dim=768, n_layers=12, n_heads=12, max_position_embeddings=512),
        small=dict(emb_dim=256, n_layers=2, n_heads=4, max_position_embeddings=512),
    ),
)


@dataclass
class BenchArgs:
    device: str = "auto"
    scale: str | None = None  # full | small; default: full on CUDA, small on CPU
    steps: int | None = None  # timed steps per measurement
    warmup: int | None = None  # untimed steps before them
    batch_size: int | None = None  # text batch; the paper's 32 at full scale
    image_batch_size: int | None = None  # the paper's 64 at full scale
    image_arch: str = "seresnext50_32x4d"
    real_sample: Path = REAL_SAMPLE
    synthetic: bool = False  # ignore real_sample: log-normal lengths, generated JPEGs
    seed: int = 0


@dataclass
class Setup:
    """What actually runs, resolved from the arguments and the device."""

    device: torch.device
    scale: str
    steps: int
    warmup: int
    text_batch: int
    image_batch: int
    img_size: int


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
    p.add_argument("--scale", choices=["full", "small"], help="default: full on CUDA, small on CPU")
    p.add_argument("--steps", type=int, help="timed steps per measurement (default 40 full, 10 small)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10 full, 2 small)")
    p.add_argument("--batch-size", type=int, help="text batch (default 32 full, 8 small)")
    p.add_argument("--image-batch-size", type=int, help="image batch (default 64 full, 8 small)")
    p.add_argument("--image-arch", default=BenchArgs.image_arch)
    p.add_argument("--real-sample", type=Path, default=REAL_SAMPLE, help="folder with X_train_update.csv")
    p.add_argument("--synthetic", action="store_true", help="ignore the real sample even if present")
    p.add_argument("--seed", type=int, default=0)
    return BenchArgs(**vars(p.parse_args(argv)))


def resolve_setup(args: BenchArgs) -> Setup:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    scale = args.scale or ("full" if use_cuda else "small")
    full = scale == "full"
    return Setup(
        device=device,
        scale=scale,
        steps=args.steps or (40 if full else 10),
        warmup=args.warmup if args.warmup is not None else (10 if full else 2),
        text_batch=args.batch_size or (32 if full else 8),
        image_batch=args.image_batch_size or (64 if full else 8),
        img_size=224 if full else 128,
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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def adamw(model: nn.Module, lr: float, fused: bool, adam: bool = False) -> torch.optim.Optimizer:
    kind = torch.optim.Adam if adam else torch.optim.AdamW
    return kind(model.parameters(), lr=lr, eps=1e-8, fused=fused or None)


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


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    setup: Setup,
    amp: bool,
    channels_last: bool = False,
) -> float:
    """One forward + backward + optimiser step, as mmpc.training.engine.fit does it."""
    batch = to_device(batch, setup.device)
    labels = batch.pop("labels")
    if channels_last:
        batch["pixels"] = batch["pixels"].contiguous(memory_format=torch.channels_last)
    with autocast(setup.device, amp):
        logits = model(**batch)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()  # the engine reads the loss every step (a device sync): so does the bench


def timed(
    step: Callable[[dict], object], batches: Iterable[dict], warmup: int, setup: Setup
) -> tuple[float, float]:
    """Seconds for the batches after the first `warmup` ones (those run untimed), and the peak memory
    of the timed part."""
    it = iter(batches)
    for batch in itertools.islice(it, warmup):
        step(batch)
    synchronize(setup.device)
    reset_peak_memory(setup.device)
    start = time.perf_counter()
    for batch in it:
        step(batch)
    synchronize(setup.device)
    return time.perf_counter() - start, peak_memory_mb(setup.device)


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
    random batches padded to 256. Collated up front: the loop times the model, not the collator."""
    rng = np.random.default_rng(seed)
    epoch = rng.choice(np.minimum(lengths, MAX_LEN), size=setup.text_batch * max(200, 2 * setup.steps))
    chosen = representative_batches(epoch, setup.text_batch, setup.steps, seed)
    items = {int(i): make_item(int(epoch[i]), arch, rng) for i in np.concatenate(chosen)}
    collate = TextCollator(arch.special_ids["pad"])
    mmpc = [collate([items[int(i)] for i in b]) for b in chosen]
    shuffled = rng.permutation(np.concatenate(chosen))
    paper = [
        pad_to(
            collate([items[int(i)] for i in shuffled[s : s + setup.text_batch]]),
            MAX_LEN,
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


def bench_text(
    arch: TextArch, lengths: np.ndarray, setup: Setup, args: BenchArgs, peak_flops: float | None
) -> dict:
    torch.manual_seed(args.seed)
    config = arch.full if setup.scale == "full" else arch.small
    backbone = build_backbone(None, arch.backbone_type, config, arch.vocab_size, arch.special_ids)
    model = TextClassifier(backbone, NUM_CLASSES, arch.head, max_len=MAX_LEN).to(setup.device)
    cuda = setup.device.type == "cuda"
    n_params = non_embedding_params(model)
    layers, d = backbone.config.num_hidden_layers, backbone.config.hidden_size
    batches = text_batches(arch, lengths, setup, args.seed)
    real_lengths = np.concatenate([b["attention_mask"].sum(1).numpy() for b in batches["mmpc"]])
    flops = train_flops(real_lengths, n_params, layers, d)
    default_attn = backbone.config._attn_implementation
    out: dict = {}
    for way in ("paper", "mmpc"):
        mmpc = way == "mmpc"
        # The paper's 2020 code ran eager attention; mmpc keeps the backbone's default (SDPA for
        # CamemBERT in transformers 5, eager for FlauBERT, which has no other implementation).
        attn = set_attention(backbone, default_attn if mmpc else "eager")
        optimizer = adamw(model, 2e-5, fused=mmpc and cuda)
        seconds, peak = timed(
            partial(train_step, model, optimizer, setup=setup, amp=mmpc),
            itertools.chain(batches[way][: setup.warmup], batches[way]),
            setup.warmup,
            setup,
        )
        t = Timing(
            seconds,
            samples=sum(len(b["labels"]) for b in batches[way]),
            real_tokens=int(sum(b["attention_mask"].sum() for b in batches[way])),
            padded_tokens=sum(b["input_ids"].numel() for b in batches[way]),
            peak_mem_mb=peak,
        )
        mfu = flops / seconds / peak_flops if peak_flops else None
        out[way] = {"timing": t, "attn": attn, "mfu": mfu}
        say(
            f"  {arch.name:9s} {way:5s}: {rate(t.samples_s)} samples/s {rate(t.tokens_s, 10)} real tokens/s  "
            f"padding efficiency {t.real_tokens / t.padded_tokens:5.1%}  peak {peak:8.0f} MiB  attn {attn}"
            + (f"  MFU {mfu:.1%}" if mfu is not None else "")
        )
        del optimizer
        model.zero_grad(set_to_none=True)
        free_memory(setup.device)
    ratio = out["mmpc"]["timing"].samples_s / out["paper"]["timing"].samples_s
    say(f"  {arch.name:9s} mmpc/paper: {ratio:.2f}x  ({n_params / 1e6:.1f}M non-embedding parameters)")
    out.update(ratio=ratio, flops=flops, non_embedding_params=n_params)
    del model, backbone
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


def image_train_step(model: ImageClassifier, setup: Setup, fast: bool) -> Callable[[dict], float]:
    model.to(memory_format=torch.channels_last if fast else torch.contiguous_format)
    optimizer = adamw(model, 1e-4, fused=fast, adam=True)  # the paper: Adam, lr 1e-4
    return partial(train_step, model, optimizer, setup=setup, amp=fast, channels_last=fast)


def bench_image(args: BenchArgs, setup: Setup, tmp: Path) -> dict:
    torch.manual_seed(args.seed)
    cuda = setup.device.type == "cuda"
    model = ImageClassifier(args.image_arch, NUM_CLASSES, pretrained=False).to(setup.device)
    n_images = setup.steps * setup.image_batch
    out: dict = {way: {} for way, _ in image_ways(cuda)}

    # The model alone first, before any loader worker exists to share the CPU with.
    fixed = {
        "pixels": torch.randn(setup.image_batch, 3, setup.img_size, setup.img_size),
        "labels": torch.randint(NUM_CLASSES, (setup.image_batch,)),
    }
    for way, fast in image_ways(cuda):
        step = image_train_step(model, setup, fast)
        seconds, _ = timed(step, itertools.repeat(fixed, setup.warmup + setup.steps), setup.warmup, setup)
        out[way]["model_only"] = n_images / seconds
        say(
            f"  {args.image_arch} {way:5s} model only (preloaded tensors): "
            f"{rate(out[way]['model_only'])} images/s"
        )
        del step
        model.zero_grad(set_to_none=True)
        free_memory(setup.device)

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
    seconds, _ = timed(lambda b: None, loader, setup.warmup, setup)
    out["loader_only"] = n_images / seconds
    say(f"  loader only (decode + border trim + augment): {rate(out['loader_only'])} images/s")

    for way, fast in image_ways(cuda):
        step = image_train_step(model, setup, fast)
        seconds, peak = timed(step, loader, setup.warmup, setup)  # a new epoch, the same workers
        out[way].update(end_to_end=n_images / seconds, peak_mem_mb=peak)
        say(
            f"  {args.image_arch} {way:5s} with the loader: {rate(out[way]['end_to_end'])} images/s  "
            f"peak {peak:8.0f} MiB"
        )
        del step
        model.zero_grad(set_to_none=True)
        free_memory(setup.device)
    if not cuda:
        out["paper"] = out["mmpc"]
    bound = "decoding" if out["loader_only"] < out["mmpc"]["model_only"] else "the model"
    say(f"  image training is bound by {bound} on this machine")
    out.update(source=source, bound=bound)
    del loader, model
    free_memory(setup.device)
    return out


# ---------------------------------------------------------------- projection


def project_minutes(text: dict[str, dict], image: dict, way: str) -> dict[str, float]:
    """Minutes of the paper's level-1 recipe at the measured rates: each model trains on 75 % of the
    catalog and evaluates 5 % per epoch; fusion needs one forward pass of each backbone over every
    product (it trains on cached embeddings; the same pass gives the stacker its level-1
    probabilities), then 3 epochs of a tiny head (negligible)."""
    n_train, n_valid = TRAIN_FRACTION * CATALOG_PRODUCTS, VALID_FRACTION * CATALOG_PRODUCTS
    minutes: dict[str, float] = {}
    embed_s = 0.0
    for arch in TEXT_ARCHS:
        rate = text[arch.name][way]["timing"].samples_s
        minutes[arch.name] = arch.epochs * (n_train + n_valid * EVAL_COST) / rate / 60
        embed_s += CATALOG_PRODUCTS * EVAL_COST / rate
    # Image evaluation still decodes every JPEG: the slower of the loader and a forward-only model.
    img = image[way]
    eval_rate = min(image["loader_only"], img["model_only"] / EVAL_COST)
    minutes["seresnext"] = IMAGE_EPOCHS * (n_train / img["end_to_end"] + n_valid / eval_rate) / 60
    minutes["fusion"] = (embed_s + CATALOG_PRODUCTS / eval_rate) / 60
    minutes["total"] = sum(minutes.values())
    return minutes


# ---------------------------------------------------------------- main


def describe(setup: Setup, args: BenchArgs) -> str:
    if setup.scale == "full":
        return (
            f"full: camembert-base and flaubert-base (768 wide, 12 layers), {args.image_arch} at 224px; "
            f"text batch {setup.text_batch}, image batch {setup.image_batch}"
        )
    return (
        "small (NOT the real sizes): camembert/flaubert 2 layers, 256 wide, 4 heads, full vocabularies; "
        f"{args.image_arch} at {setup.img_size}px; text batch {setup.text_batch}, image batch "
        f"{setup.image_batch}"
    )


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    # Tokenizers must not start its thread pool before the DataLoader forks its workers (it warns and
    # can deadlock there); nothing here needs the hub.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup = resolve_setup(args)
    transformers.logging.set_verbosity_error()
    cuda = setup.device.type == "cuda"
    device_name = torch.cuda.get_device_name(setup.device) if cuda else platform.processor() or "cpu"
    say(
        f"device: {setup.device} ({device_name}); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, timm {timm.__version__}"
    )
    if not cuda:
        say(f"torch threads: {torch.get_num_threads()} (the default) on {os.cpu_count()} CPUs")
    say(f"config: {describe(setup, args)}")
    say(f"steps: {setup.warmup} warmup + {setup.steps} timed per measurement; max_len {MAX_LEN}")

    peak_flops = measure_bf16_peak(setup.device) if cuda else None
    if peak_flops:
        say(f"bf16 dense matmul peak (8192^3): {peak_flops / 1e12:.0f} TFLOP/s")

    lengths, length_source = token_lengths(args, np.random.default_rng(args.seed))
    clipped = np.minimum(lengths, MAX_LEN)
    say(f"text lengths: {length_source}")
    say(
        f"  median {np.median(lengths):.0f} tokens, mean {clipped.mean():.0f} after truncation at "
        f"{MAX_LEN}, {np.mean(lengths > MAX_LEN):.0%} truncated"
    )

    def section(title: str) -> None:
        say(f"{title} [{time.perf_counter() - started:.0f} s]")

    section("text (forward + backward + AdamW step):")
    text = {arch.name: bench_text(arch, lengths, setup, args, peak_flops) for arch in TEXT_ARCHS}
    section("image (forward + backward + Adam step):")
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-") as tmp:
        image = bench_image(args, setup, Path(tmp))

    projection = {way: project_minutes(text, image, way) for way in ("paper", "mmpc")}
    section("projected paper recipe on this device (84,916 products; 75 % train, 5 % valid), minutes:")
    for way, minutes in projection.items():
        say(f"  {way:5s}: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    if setup.scale == "small":
        say("  (small config: these are the scaled-down models' rates, not the real recipe's cost)")

    def seconds(way: str) -> float:
        return sum(t[way]["timing"].seconds for t in text.values())

    flops = sum(t["flops"] for t in text.values())
    figures = {
        "device": str(setup.device),
        "device_name": device_name,
        "config": setup.scale,
        "config_desc": describe(setup, args),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
        },
        "steps": setup.steps,
        "warmup": setup.warmup,
        "text_batch_size": setup.text_batch,
        "image_batch_size": setup.image_batch,
        "image_size": setup.img_size,
        "length_source": length_source,
        "median_tokens": float(np.median(lengths)),
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
        peak_mem_kind="torch.cuda.max_memory_allocated"
        if cuda
        else "peak RSS (VmHWM, reset per measurement)",
        image_source=image["source"],
        image_images_s=image["mmpc"]["end_to_end"],
        image_model_only_images_s=image["mmpc"]["model_only"],
        image_loader_only_images_s=image["loader_only"],
        image_paper_images_s=image["paper"]["end_to_end"],
        image_paper_model_only_images_s=image["paper"]["model_only"],
        image_peak_mem_mb=image["mmpc"]["peak_mem_mb"],
        image_bound_by=image["bound"],
        projected_paper_recipe_min_paper_way=projection["paper"]["total"],
        projected_paper_recipe_min_mmpc_way=projection["mmpc"]["total"],
        projected_breakdown_min=projection,
        wall_s=time.perf_counter() - started,
    )
    print(json.dumps(rounded(figures)), flush=True)
    return figures


if __name__ == "__main__":
    main()
