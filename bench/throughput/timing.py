"""The timed loop: mmpc's own training step over untimed then timed batches, with the device's
synchronisation, peak memory and, on CUDA, the bf16 matmul peak that MFU is measured against."""

from __future__ import annotations

import contextlib
import gc
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from mmpc.kinds.base import TrainConfig
from mmpc.training import engine


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
