"""In process: the ensemble pyfunc against the naive composition, each registered level-1 pyfunc on
the request and then the booster on their concatenated probabilities."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.serving.common import batches
from bench.serving.store import Store


@dataclass
class Naive:
    """Each level-1 pyfunc on its own, then the booster on their concatenated probabilities."""

    models: dict[str, Any]  # name -> mlflow PyFuncModel
    members: list[str]
    codes: list[int]
    booster: Any

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        from mmpc import stacking

        probs = {n: m.predict(frame).to_numpy() for n, m in self.models.items()}
        return self.booster.predict(stacking.features(probs, self.members, self.codes))


def load_naive(store: Store) -> Naive:
    import mlflow

    from mmpc import stacking

    models = {n: mlflow.pyfunc.load_model(f"models:/mmpc-{n}/{store.versions[n]}") for n in store.members}
    return Naive(models, store.members, store.codes, stacking.load(store.ensemble_folder))


def interleaved(
    calls: dict[str, Callable[[pd.DataFrame], Any]], frames: Sequence[pd.DataFrame], max_s: float
) -> dict[str, float]:
    """products/s of each call on the same batches, alternating calls batch by batch (shared noise)."""
    for call in calls.values():  # warm-up: first-call allocations, lazy imports
        call(frames[0])
    spent = dict.fromkeys(calls, 0.0)
    done = 0
    deadline = time.monotonic() + max_s
    for frame in frames[1:]:
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(frame)
            spent[name] += time.perf_counter() - t0
        done += len(frame)
        if time.monotonic() > deadline:
            break
    return {name: done / s for name, s in spent.items()} | {"products": float(done)}


def agreement(ens_model: Any, naive: Naive, frame: pd.DataFrame) -> float:
    """Share of products where the ensemble and the naive composition predict the same code."""
    ens = ens_model.predict(frame)["prdtypecode"].to_numpy()
    nai = np.asarray(naive.codes)[naive.predict(frame).argmax(1)]
    return float((ens == nai).mean())


def bench_inprocess(
    store: Store, frame: pd.DataFrame, batch: int, n_batches: int, max_s: float
) -> tuple[dict, Any, Naive]:
    """(figures, the ensemble pyfunc, the naive composition) for ``n_batches`` timed batches."""
    import mlflow
    import torch

    ens_model = mlflow.pyfunc.load_model(str(store.ensemble_dir))
    naive = load_naive(store)
    frames = batches(frame, batch)[: n_batches + 1]
    speed = interleaved({"ensemble": ens_model.predict, "naive": naive.predict}, frames, max_s)
    speed["agreement"] = agreement(ens_model, naive, frames[0])
    speed["threads"] = float(torch.get_num_threads())  # set by the pyfuncs' load_context
    return speed, ens_model, naive
