"""One training loop for every neural level-1 kind.

Batches are dicts: ``labels`` plus the model's keyword inputs. The loop handles the optimiser and
schedule from the recipe, gradient accumulation and clipping, bf16 autocast on GPU, per-epoch
validation with early stopping on valid macro-F1, and keeps the best weights. It knows nothing of
MLflow: metrics go to the ``log`` callback.

``fit`` is a loop over epochs of public pieces, usable on their own (the training benchmark times
``train_one_epoch`` over fixed batches): ``prepare`` sets a training up (or resumes it from its
checkpoint) as a ``TrainRun``; ``train_one_epoch`` optimises over one epoch's batches; ``validate``
measures the epoch; ``end_epoch`` keeps the best weights, counts early stopping and checkpoints.
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
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm
from transformers import get_scheduler

from mmpc.kinds.base import TrainConfig
from mmpc.models.batching import autocast
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


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.Optimizer:
    """The recipe's Adam or AdamW over the parameter groups; ``fused`` None: fused when on CUDA."""
    groups = _param_groups(model, cfg)
    # The fused CUDA kernel updates all parameters in a few launches instead of one per tensor.
    if fused is None:
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


@dataclass
class TrainRun:
    """What one fit carries from epoch to epoch: the model and what runs it, the optimiser and
    schedule, where training stands (the checkpointed state) and its clock."""

    model: nn.Module  # the weights that are evaluated, checkpointed and kept
    step_model: nn.Module  # what the training batches run through: the model, or its DDP/compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    cfg: TrainConfig
    device: torch.device
    batches_per_epoch: int
    state: TrainState = field(default_factory=TrainState)
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint_dir: Path | None = None
    desc: str = "train"
    seconds_before: float = 0.0  # training time of earlier processes, restored from the checkpoint
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def deadline(self) -> float | None:
        """The time budget covers the whole training, over resumed processes too."""
        if not self.cfg.max_minutes:
            return None
        return self.started - self.seconds_before + self.cfg.max_minutes * 60

    def steps_spent(self) -> bool:
        return _steps_spent(self.scheduler, self.cfg)

    def save_checkpoint(self) -> None:
        if self.checkpoint_dir is not None and distributed.is_main():
            self.state.seconds = self.seconds
            checkpoint.save(
                self.checkpoint_dir, self.state, self.model, self.optimizer, self.scheduler, self.best_state
            )


@dataclass
class EpochStats:
    """One call of :func:`train_one_epoch`: the mean loss over its samples (every rank's under DDP)."""

    train_loss: float
    samples: int
    out_of_time: bool = False


def _epoch_batches(batches: Iterable[dict]) -> int:
    sampler = _batch_sampler(batches)
    return sampler.epoch_batches() if sampler else len(batches)  # type: ignore[arg-type]


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """DDP under torchrun, then ``torch.compile`` if the recipe asks; the plain model otherwise."""
    step_model: nn.Module = model
    if distributed.world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(model, device_ids=ids)
    return torch.compile(step_model) if cfg.compile else step_model


def prepare(
    model: nn.Module,
    train_batches: Iterable[dict],
    cfg: TrainConfig,
    *,
    device: torch.device,
    desc: str = "train",
    checkpoint_dir: Path | None = None,
    checkpoint_extra: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainRun:
    """Set a training up: the model on its device, the optimiser (``make_optimizer`` unless one is
    given) and the schedule sized to the whole training, and, if ``checkpoint_dir`` holds a
    checkpoint, everything restored from it."""
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ValueError(f"train.max_steps must be at least 1, got {cfg.max_steps}")
    model.to(device)
    batches_per_epoch = _epoch_batches(train_batches)
    total = max(1, batches_per_epoch // cfg.grad_accum) * cfg.epochs
    if cfg.max_steps is not None:  # the schedule (warmup, decay) ends where training does
        total = min(total, cfg.max_steps)
    optimizer = optimizer or make_optimizer(model, cfg)
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
    step_model = _wrap(model, cfg, device)
    return TrainRun(
        model,
        step_model,
        optimizer,
        scheduler,
        cfg,
        device,
        batches_per_epoch,
        state=state,
        best_state=best_state,
        checkpoint_dir=checkpoint_dir,
        desc=desc,
        seconds_before=state.seconds,
    )


def _optimizer_step(run: TrainRun) -> None:
    """Clip, step the optimiser and the schedule; checkpoint every ``checkpoint_every_steps``."""
    cfg = run.cfg
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if cfg.checkpoint_every_steps and run.scheduler.last_epoch % cfg.checkpoint_every_steps == 0:
        run.save_checkpoint()


def _stop_now(run: TrainRun, epoch: int) -> tuple[bool, bool]:
    """(stop, out_of_time) after a batch: the step cap or the time budget is reached."""
    if run.steps_spent():
        log.info("%s: step budget of %d steps reached in epoch %d", run.desc, run.cfg.max_steps, epoch)
        return True, False
    if run.deadline is not None and _past(run.deadline, run.device):
        log.info("%s: time budget of %.1f min reached in epoch %d", run.desc, run.cfg.max_minutes, epoch)
        return True, True
    return False, False


def train_one_epoch(run: TrainRun, batches: Iterable[dict]) -> EpochStats:
    """One epoch of optimisation over ``batches`` (epoch ``run.state.epoch``): forward under autocast,
    cross-entropy, gradient accumulation and clipping, optimiser and schedule steps, checkpoints every
    ``checkpoint_every_steps``; stops early at the step cap or the time budget. A resumable batch
    sampler continues at the checkpointed batch; any other iterable is trained from its start."""
    cfg, state, epoch = run.cfg, run.state, run.state.epoch
    sampler = _batch_sampler(batches)
    if sampler:
        sampler.set_epoch(epoch, state.batches_done)
    elif state.batches_done:  # no resumable sampler: redo the epoch from its start
        state.batches_done = 0
    run.step_model.train()
    running, seen, out_of_time = 0.0, 0, False
    batches = () if run.steps_spent() else batches
    bar = tqdm(batches, desc=f"{run.desc} epoch {epoch}/{cfg.epochs}", leave=False, mininterval=1.0)
    run.optimizer.zero_grad(set_to_none=True)
    for batch in bar:
        batch = to_device(batch, run.device)
        labels = batch.pop("labels")
        with autocast(run.device, cfg.amp):
            logits = run.step_model(**batch)
        loss = F.cross_entropy(logits.float(), labels)
        (loss / cfg.grad_accum).backward()
        state.batches_done += 1
        if state.batches_done % cfg.grad_accum == 0 or state.batches_done == run.batches_per_epoch:
            _optimizer_step(run)
        running += loss.item() * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
        stop, out_of_time = _stop_now(run, epoch)
        if stop:
            break
    if distributed.world_size() > 1:  # the epoch's loss over all ranks' samples, not rank 0's share
        totals = torch.tensor([running, float(seen)], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(totals)
        running, seen = totals[0].item(), int(totals[1].item())
    # a resumed epoch reports the loss of the batches it trained after resuming
    return EpochStats(running / max(seen, 1), seen, out_of_time)


def validate(run: TrainRun, valid_batches: Iterable[dict], stats: EpochStats) -> dict[str, float]:
    """The epoch's metrics: its train loss, valid loss, macro-F1 and accuracy, and the learning rate."""
    # Imported here: the engine itself (what the training benchmark times) needs torch alone.
    from mmpc.metrics import macro_f1

    probs, y = predict(run.model, valid_batches, run.device, run.cfg.amp)
    valid_f1 = macro_f1(y, probs.argmax(1))
    valid_loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(y)))
    return {
        "train_loss": stats.train_loss,
        "valid_loss": valid_loss,
        "valid_macro_f1": valid_f1,
        "valid_accuracy": float((probs.argmax(1) == y).mean()),
        "lr": run.scheduler.get_last_lr()[0],
    }


def end_epoch(run: TrainRun, metrics: dict[str, float], log_metrics: MetricLogger | None = None) -> None:
    """Record the epoch: its metrics, the best weights and early-stopping count, then a checkpoint
    that starts the next epoch."""
    state, epoch = run.state, run.state.epoch
    state.history.append(metrics)
    if log_metrics and distributed.is_main():
        log_metrics(metrics, epoch)
    improved = metrics["valid_macro_f1"] > state.best_f1
    log.info(
        "%s epoch %d/%d: train_loss %.4f valid_loss %.4f valid_macro_f1 %.4f%s (%.0fs)",
        run.desc,
        epoch,
        run.cfg.epochs,
        metrics["train_loss"],
        metrics["valid_loss"],
        metrics["valid_macro_f1"],
        " *" if improved else "",
        time.perf_counter() - run.started,
    )
    if improved:
        state.best_f1, state.best_epoch, state.stale = metrics["valid_macro_f1"], epoch, 0
        run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    else:
        state.stale += 1
        if state.stale >= run.cfg.patience:
            log.info("%s: early stop, no better valid macro-F1 for %d epochs", run.desc, run.cfg.patience)
    state.epoch, state.batches_done = epoch + 1, 0
    run.save_checkpoint()


def _more_epochs(run: TrainRun) -> bool:
    """Epochs and patience left and the step cap not reached; an epoch left mid-way at the cap (a
    checkpoint taken before its validation) still runs, to be validated."""
    state = run.state
    return (
        state.epoch <= run.cfg.epochs
        and state.stale < run.cfg.patience
        and (state.batches_done > 0 or not run.steps_spent())
    )


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
    run = prepare(
        model,
        train_batches,
        cfg,
        device=device,
        desc=desc,
        checkpoint_dir=checkpoint_dir,
        checkpoint_extra=checkpoint_extra,
    )
    out_of_time = False
    while not out_of_time and _more_epochs(run):
        stats = train_one_epoch(run, train_batches)
        out_of_time = stats.out_of_time
        end_epoch(run, validate(run, valid_batches, stats), log_metrics)
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    state = run.state
    return FitResult(state.best_epoch, state.best_f1, len(state.history), state.history, run.seconds)
