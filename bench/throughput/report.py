"""The report: the header (device, versions, configuration, text lengths) and the figures of the
last-line JSON."""

from __future__ import annotations

import os
import platform

import numpy as np
import timm
import torch
import transformers

from bench.throughput.common import say
from bench.throughput.settings import SCALED, SHAPES_RECIPE, Setup, max_len
from bench.throughput.timing import Timing, measure_bf16_peak

PEAK_MEM_KIND = {
    "cuda": "torch.cuda.max_memory_allocated",
    "cpu": "peak RSS (VmHWM, reset per measurement)",
}


def rounded(value):
    """Four decimals in the JSON line, nested dicts included."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


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


def header(setup: Setup) -> tuple[str, float | None]:
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


def report_lengths(setup: Setup, lengths: np.ndarray, length_source: str) -> None:
    limit = max_len(setup)
    say(f"text lengths: {length_source}")
    say(
        f"  median {np.median(lengths):.0f} tokens, mean {np.minimum(lengths, limit).mean():.0f} after "
        f"truncation at {limit}, {np.mean(lengths > limit):.0%} truncated"
    )


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
