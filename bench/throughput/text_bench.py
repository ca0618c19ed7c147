"""The text models measured two ways on the same samples: the paper's (padding to max_len, fp32,
eager attention, unfused AdamW) and mmpc's (length buckets with dynamic padding, bf16 autocast and
fused AdamW on CUDA, the backbone's default attention), with their model FLOPs for MFU."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from bench.throughput.common import rate, say
from bench.throughput.settings import NUM_CLASSES, BenchArgs, Setup, TextArch
from bench.throughput.text_data import text_batches
from bench.throughput.timing import Timing, free_memory, prepared, timed_epoch
from mmpc.models.text import TextClassifier, build_backbone


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
