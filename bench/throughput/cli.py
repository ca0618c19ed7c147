"""The training-throughput benchmark's command line (``bench/train_throughput.py``)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import transformers

from bench.throughput import report
from bench.throughput.common import say
from bench.throughput.image_bench import bench_image
from bench.throughput.projection import project, projection_figures, report_projection
from bench.throughput.settings import REAL_SAMPLE, SCALE_DEFAULTS, SHAPES_RECIPE, BenchArgs, resolve_setup
from bench.throughput.text_bench import bench_text
from bench.throughput.text_data import token_lengths


def parse_args(argv: list[str] | None = None, description: str = "") -> BenchArgs:
    p = argparse.ArgumentParser(description=description)
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


def main(argv: list[str] | None = None, description: str = "") -> dict:
    """Measure, print the report, and end with the JSON line of every figure, which is returned."""
    started = time.perf_counter()
    args = parse_args(argv, description)
    # Tokenizers must not start its thread pool before the DataLoader forks its workers (it warns and
    # can deadlock there); nothing here needs the hub.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup = resolve_setup(args)
    transformers.logging.set_verbosity_error()
    device_name, peak_flops = report.header(setup)

    lengths, length_source = token_lengths(args, np.random.default_rng(args.seed))
    report.report_lengths(setup, lengths, length_source)

    def section(title: str) -> None:
        say(f"{title} [{time.perf_counter() - started:.0f} s]")

    section("text (mmpc's train_one_epoch: forward + backward + AdamW step):")
    text = {arch.name: bench_text(arch, lengths, setup, args, peak_flops) for arch in setup.texts}
    section("image (mmpc's train_one_epoch: forward + backward + Adam step):")
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-") as tmp:
        image = bench_image(args, setup, Path(tmp))

    projection = project(setup, text, image)
    section("projected paper recipe on this device (84,916 products; 75 % train, 5 % valid), minutes:")
    report_projection(setup, projection)

    figures = {
        **report.setup_figures(setup, device_name, lengths, length_source),
        **report.text_figures(text, peak_flops),
        **report.image_figures(image, setup.device.type == "cuda"),
        **projection_figures(projection),
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(report.rounded(figures)), flush=True)
    return figures
