"""Multi-process training with ``torchrun``: the same entry point, DistributedDataParallel inside.

``torchrun --nproc_per_node N -m mmpc.cli train <model> ...`` sets WORLD_SIZE, RANK and LOCAL_RANK;
everything else reads them from here. Rank 0 alone logs to MLflow, writes checkpoints and registers.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU); False when not launched so."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def device_for_rank(device: torch.device) -> torch.device:
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
