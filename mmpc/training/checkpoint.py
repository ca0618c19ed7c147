"""Training checkpoints: everything needed to continue a killed training where it stopped.

Tensors (model, optimiser state, best weights, torch RNG) go to ``state.safetensors``; everything
else (epoch, batch position, scheduler, history, numpy/python RNG, the caller's extras such as the
MLflow run id) to ``state.json``. Both are written to a temporary folder renamed over the previous
checkpoint, so a kill during the write leaves the last whole checkpoint in place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


@dataclass
class TrainState:
    """Where a training stands: completed epochs, batches done in the current one, early stopping."""

    epoch: int = 1  # the epoch in progress (1-based)
    batches_done: int = 0  # batches of that epoch already trained
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # training time before the last checkpoint, over every resumed process


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    folder: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update({f"best.{k}": v.contiguous() for k, v in (best_weights or {}).items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    # Tied parameters share storage; safetensors stores each name on its own, so clone.
    save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "state": state.__dict__,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "rng": {
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        },
    }
    (tmp / STATE_JSON).write_text(json.dumps(meta))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def exists(folder: Path | None) -> bool:
    return folder is not None and (Path(folder) / STATE_JSON).is_file()


def read_extra(folder: Path | None) -> dict[str, Any]:
    """The caller's extras of a checkpoint (e.g. its MLflow run id), without loading tensors."""
    if not exists(folder):
        return {}
    return json.loads((Path(folder) / STATE_JSON).read_text())["state"].get("extra", {})


def load(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    """Restore model, optimiser, scheduler and RNGs in place; return the state and the best weights."""
    folder = Path(folder)
    meta = json.loads((folder / STATE_JSON).read_text())
    tensors = load_file(str(folder / STATE_TENSORS))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    np_state = meta["rng"]["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py_state = meta["rng"]["python"]
    random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return TrainState(**meta["state"]), best
