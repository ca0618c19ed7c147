"""The image samples: the real sample's JPEGs (cycled) or generated ones, and the DataLoader that
decodes, trims and augments them as mmpc's image training does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bench.throughput.settings import NUM_CLASSES, BenchArgs, Setup
from mmpc import images
from mmpc.training.data import ImageDataset


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
