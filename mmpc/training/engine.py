"""One training loop for every neural level-1 kind.

Batches are dicts: ``labels`` plus the model's keyword inputs. The loop handles the optimiser and
schedule from the recipe, gradient accumulation and clipping, bf16 autocast on GPU, per-epoch
validation with early stopping on valid macro-F1, and keeps the best weights. It knows nothing of
MLflow: metrics go to the ``log`` callback.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_scheduler

from mmpc.metrics import macro_f1
from mmpc.models.batching import autocast
from mmpc.kinds.base import TrainConfig
from mmpc.training import checkpoint, distributed
from mmpc.training.checkpoint import TrainState

log = logging.getLogger(__name__)

MetricLogger = Callable[[dict[str, float], int], None]

_SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}


@dataclass
class FitResult:
    best_epoch: int
    best_valid_macro_f1: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the recipe asks for device 'cuda' but no CUDA device is available")
    return torch.device(name)


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """No weight decay on biases and norms; ``head_lr`` for everything outside the backbone."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = not name.startswith("backbone.")
        no_decay = p.ndim < 2
        groups.setdefault((is_head, no_decay), []).append(p)
    return [
        {
            "params": params,
            "lr": (cfg.head_lr or cfg.lr) if is_head else cfg.lr,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        }
        for (is_head, no_decay), params in groups.items()
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    # The fused CUDA kernel updates all parameters in a few launches instead of one per tensor.
    fused = all(p.is_cuda for g in groups for p in g["params"]) or None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.eps, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps, fused=fused)


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Iterable[dict], device: torch.device, amp: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax probabilities (float32 numpy) and the labels, if the batches carry them."""
    model.eval()
    probs, labels = [], []
    for batch in batches:
        batch = to_device(batch, device)
        y = batch.pop("labels", None)
        with autocast(device, amp):
            logits = model(**batch)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        if y is not None:
            labels.append(y.cpu())
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 0), dtype=np.float32)
    return p, (torch.cat(labels).numpy() if labels else None)


def _batch_sampler(batches: Iterable[dict]):
    sampler = getattr(batches, "batch_sampler", None)
    return sampler if hasattr(sampler, "set_epoch") else None


def _past(deadline: float, device: torch.device) -> bool:
    """Whether the time budget is spent; under DDP rank 0's clock decides for every rank, so all
    ranks stop at the same batch (a rank that stopped alone would hang the others' all-reduce)."""
    past = time.perf_counter() > deadline
    if distributed.world_size() > 1:
        flag = torch.tensor([float(past)], device=device)
        torch.distributed.broadcast(flag, src=0)
        past = bool(flag.item())
    return past


def _steps_spent(scheduler, cfg: TrainConfig) -> bool:
    """Whether ``cfg.max_steps`` optimiser steps are done; the schedule's step count is restored from a
    checkpoint, so the cap holds over resumed processes too (and is the same on every DDP rank)."""
    return cfg.max_steps is not None and scheduler.last_epoch >= cfg.max_steps


def fit(
    model: nn.Module,
    train_batches: Iterable[dict],
    valid_batches: Iterable[dict],
    cfg: TrainConfig,
    *,
    device: torch.device,
    log_metrics: MetricLogger | None = None,
    desc: str = "train",
    checkpoint_dir: Path | None = None,
    checkpoint_extra: dict | None = None,
) -> FitResult:
    """Train with early stopping on valid macro-F1; on return the model holds its best weights.

    With ``checkpoint_dir``, a checkpoint is written at every epoch end (and every
    ``cfg.checkpoint_every_steps`` optimiser steps); if one is there already, training continues
    from it: same epoch, same batch position, same optimiser, schedule and RNG state.
    """
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ValueError(f"train.max_steps must be at least 1, got {cfg.max_steps}")
    model.to(device)
    sampler = _batch_sampler(train_batches)
    batches_per_epoch = sampler.epoch_batches() if sampler else len(train_batches)  # type: ignore[arg-type]
    total = max(1, batches_per_epoch // cfg.grad_accum) * cfg.epochs
    if cfg.max_steps is not None:  # the schedule (warmup, decay) ends where training does
        total = min(total, cfg.max_steps)
    optimizer = make_optimizer(model, cfg)
    scheduler = get_scheduler(
        _SCHEDULES[cfg.schedule],
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total),
        num_training_steps=total,
    )
    state, best_state = TrainState(extra=dict(checkpoint_extra or {})), None
    if checkpoint.exists(checkpoint_dir):
        state, best_state = checkpoint.load(checkpoint_dir, model, optimizer, scheduler)
        state.extra.update(checkpoint_extra or {})
        log.info("%s: resuming at epoch %d, batch %d", desc, state.epoch, state.batches_done)
    step_model: nn.Module = model
    if distributed.world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        step_model = torch.compile(step_model)
    main = distributed.is_main()

    started, seconds_before = time.perf_counter(), state.seconds

    def save_checkpoint() -> None:
        if checkpoint_dir is not None and main:
            state.seconds = seconds_before + time.perf_counter() - started
            checkpoint.save(checkpoint_dir, state, model, optimizer, scheduler, best_state)

    # the budget covers the whole training, over resumed processes too
    deadline = started - seconds_before + cfg.max_minutes * 60 if cfg.max_minutes else None
    out_of_time = False
    # An epoch left mid-way at the step cap (a checkpoint before its validation) is still validated.
    while (
        state.epoch <= cfg.epochs
        and state.stale < cfg.patience
        and not out_of_time
        and (state.batches_done > 0 or not _steps_spent(scheduler, cfg))
    ):
        epoch = state.epoch
        if sampler:
            sampler.set_epoch(epoch, state.batches_done)
        elif state.batches_done:  # no resumable sampler: redo the epoch from its start
            state.batches_done = 0
        step_model.train()
        running, seen = 0.0, 0
        batches = () if _steps_spent(scheduler, cfg) else train_batches
        bar = tqdm(batches, desc=f"{desc} epoch {epoch}/{cfg.epochs}", leave=False, mininterval=1.0)
        optimizer.zero_grad(set_to_none=True)
        for batch in bar:
            batch = to_device(batch, device)
            labels = batch.pop("labels")
            with autocast(device, cfg.amp):
                logits = step_model(**batch)
            loss = F.cross_entropy(logits.float(), labels)
            (loss / cfg.grad_accum).backward()
            state.batches_done += 1
            if state.batches_done % cfg.grad_accum == 0 or state.batches_done == batches_per_epoch:
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if cfg.checkpoint_every_steps and scheduler.last_epoch % cfg.checkpoint_every_steps == 0:
                    save_checkpoint()
            running += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
            if _steps_spent(scheduler, cfg):
                log.info("%s: step budget of %d steps reached in epoch %d", desc, cfg.max_steps, epoch)
                break
            if deadline is not None and _past(deadline, device):
                out_of_time = True
                log.info("%s: time budget of %.1f min reached in epoch %d", desc, cfg.max_minutes, epoch)
                break
        if distributed.world_size() > 1:  # the epoch's loss over all ranks' samples, not rank 0's share
            totals = torch.tensor([running, float(seen)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            running, seen = totals[0].item(), int(totals[1].item())
        probs, y = predict(model, valid_batches, device, cfg.amp)
        valid_f1 = macro_f1(y, probs.argmax(1))
        valid_loss = float(
            F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(y))
        )
        metrics = {
            # a resumed epoch reports the loss of the batches it trained after resuming
            "train_loss": running / max(seen, 1),
            "valid_loss": valid_loss,
            "valid_macro_f1": valid_f1,
            "valid_accuracy": float((probs.argmax(1) == y).mean()),
            "lr": scheduler.get_last_lr()[0],
        }
        state.history.append(metrics)
        if log_metrics and main:
            log_metrics(metrics, epoch)
        improved = valid_f1 > state.best_f1
        log.info(
            "%s epoch %d/%d: train_loss %.4f valid_loss %.4f valid_macro_f1 %.4f%s (%.0fs)",
            desc,
            epoch,
            cfg.epochs,
            metrics["train_loss"],
            valid_loss,
            valid_f1,
            " *" if improved else "",
            time.perf_counter() - started,
        )
        if improved:
            state.best_f1, state.best_epoch, state.stale = valid_f1, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.stale += 1
            if state.stale >= cfg.patience:
                log.info("%s: early stop, no better valid macro-F1 for %d epochs", desc, cfg.patience)
        state.epoch, state.batches_done = epoch + 1, 0
        save_checkpoint()
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        state.best_epoch,
        state.best_f1,
        len(state.history),
        state.history,
        seconds_before + time.perf_counter() - started,
    )
