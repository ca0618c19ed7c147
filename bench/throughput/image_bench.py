"""The image model measured three ways: alone on preloaded tensors, its DataLoader alone, and
training fed by that loader; on CUDA both mmpc's way (channels_last, bf16 autocast, fused Adam) and
the paper's (fp32, contiguous), on CPU the one way they share."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.throughput.common import rate, say
from bench.throughput.image_data import image_loader, image_paths
from bench.throughput.settings import NUM_CLASSES, BenchArgs, Setup
from bench.throughput.timing import free_memory, prepared, timed_epoch
from mmpc import images
from mmpc.models.image import ImageClassifier
from mmpc.training import engine


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
