"""The published model: level-1 folders and the booster, answering in one pass per backbone.

Folder layout::

    ensemble.json          members (name, kind, registered version), class codes, top_k, and the
                           booster's SHA-256 (each member's meta.json holds its weights' digest)
    members/<name>/        level-1 model folders (a member reading others, such as fusion, keeps
                           only its head when its inputs are members with identical weights)
    booster.txt            the LightGBM stacker

The fusion model's backbones are frozen copies of the text and image members. When the weight
digests agree, each backbone runs once per batch and feeds both its own head and the fusion head;
when they do not, the fusion member runs its own bundled backbones (and a warning says so).
Every member is loaded by its kind (``mmpc.kinds``); nothing here knows which kinds exist.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmpc import kinds, stacking
from mmpc.models import store
from mmpc.models.deadline import check_deadline
from mmpc.serving_input import ParsedRequest

log = logging.getLogger(__name__)

MANIFEST = "ensemble.json"


def build(
    out: Path,
    members: dict[str, Path],
    versions: dict[str, str],
    booster_file: Path,
    codes: Sequence[int],
    top_k: int,
    batch_size: int = 64,
) -> Path:
    """Assemble an ensemble folder from level-1 folders (in stacking order) and a booster."""
    out.mkdir(parents=True, exist_ok=True)
    metas = {n: kinds.read_meta(f) for n, f in members.items()}
    digests = {n: m.weights_sha256 for n, m in metas.items()}
    entries = []
    for name, folder in members.items():
        meta = metas[name]
        wanted = meta.input_weights_sha256
        # A model whose inputs are members with the same weights needs only its own head.
        shareable = bool(wanted) and all(digests.get(n) == d for n, d in wanted.items())
        ignore = shutil.ignore_patterns("inputs") if shareable else None
        shutil.copytree(folder, out / "members" / name, ignore=ignore, dirs_exist_ok=True)
        entries.append({"name": name, "kind": meta.kind, "version": versions.get(name)})
    shutil.copy2(booster_file, out / stacking.BOOSTER_FILE)
    manifest = {
        "members": entries,
        "codes": list(codes),
        "top_k": top_k,
        "batch_size": batch_size,
        "booster_sha256": store.file_digest(out / stacking.BOOSTER_FILE),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise store.ModelFolderError(f"{folder} is not an ensemble folder: {MANIFEST} is missing")
    manifest = store.read_json(path)
    missing = [k for k in ("members", "codes", "top_k") if k not in manifest]
    if missing or not all(isinstance(m, dict) and "name" in m for m in manifest.get("members", [])):
        raise store.ModelFolderError(f"{path}: lacks {missing or 'a name for each member'}")
    return manifest


def _load_order(folder: Path, names: Sequence[str]) -> list[str]:
    """Members whose inputs are other members come after those inputs."""
    reads = {n: set(kinds.read_meta(folder / "members" / n).input_weights_sha256) & set(names) for n in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and reads[n] <= set(order)]
        if not ready:
            raise store.ModelFolderError(f"{folder}: members read each other in a cycle: {reads}")
        order += ready
    return order


@dataclass
class Timings:
    """Seconds per stage of a predictor's last call: each member's forward (in run order) and the
    booster. Benchmarks and profiling read it; it costs two clock reads per stage. Under concurrent
    calls it holds one of them, a stage of another call mixed in at worst."""

    members: dict[str, float] = field(default_factory=dict)
    booster: float = 0.0


class EnsemblePredictor:
    def __init__(self, folder: str | Path, device: torch.device | None = None):
        folder = Path(folder)
        manifest = _read_manifest(folder)
        self.codes: list[int] = manifest["codes"]
        self.top_k: int = manifest["top_k"]
        self.members: list[str] = [m["name"] for m in manifest["members"]]
        batch = manifest.get("batch_size", 64)
        # Each member by its kind; one reading another member's embeddings (fusion) shares its pass.
        self.models: dict[str, kinds.Member] = {}
        digests: dict[str, str] = {}
        for name in _load_order(folder, self.members):
            self.models[name] = kinds.load(folder / "members" / name, device, batch, shared=digests)
            digests[name] = self.models[name].meta.weights_sha256
        # Ensembles built before the digest was recorded: the booster's text is still checked whole.
        self.booster = stacking.load(folder, manifest.get("booster_sha256"))
        expected = stacking.feature_names(self.members, self.codes)
        if self.booster.feature_name() != expected:
            raise store.ModelFolderError(
                f"{folder}: the booster's features do not match the members {self.members}"
            )
        self._explainer: stacking.Explainer | None = None  # built on the first request that asks
        self.timings = Timings()  # of the last call

    @property
    def uses_images(self) -> bool:
        return any(m.uses_images for m in self.models.values())

    def level1_probabilities(self, texts: Sequence[str], imgs: Sequence) -> dict[str, np.ndarray]:
        """Every member's class probabilities, each backbone run once."""
        probs: dict[str, np.ndarray] = {}
        embeddings: dict[str, np.ndarray] = {}
        self.timings = Timings()
        for name, model in self.models.items():
            check_deadline(f"before model {name!r}")
            t0 = time.perf_counter()
            probs[name], emb = model.forward(texts, imgs, embeddings)
            self.timings.members[name] = time.perf_counter() - t0
            if emb is not None:
                embeddings[name] = emb
        return probs

    def features(self, texts: Sequence[str], imgs: Sequence) -> pd.DataFrame:
        return stacking.features(self.level1_probabilities(texts, imgs), self.members, self.codes)

    def predict_proba(self, texts: Sequence[str], imgs: Sequence) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.codes)))
        return self._booster_predict(self.features(texts, imgs))

    def _booster_predict(self, X: pd.DataFrame) -> np.ndarray:
        # A float32 array (names checked at load) and one thread: a DataFrame costs ~0.7 ms per call
        # in pandas checks, and LightGBM's thread pool is pure overhead on a few rows.
        t0 = time.perf_counter()
        probs = self.booster.predict(X.to_numpy(np.float32), num_threads=1)
        self.timings.booster = time.perf_counter() - t0
        return probs

    def explain(self, X: pd.DataFrame, classes: np.ndarray) -> list[dict[str, float]]:
        """Per-model SHAP contributions to each row's predicted class."""
        if self._explainer is None:
            self._explainer = stacking.Explainer(self.booster, self.members, self.codes)
        contributions, _ = self._explainer.explain(X, classes)
        return contributions.round(6).to_dict(orient="records")

    def predict(
        self, request: ParsedRequest, top_k: int | None = None, explain: bool = False
    ) -> pd.DataFrame:
        k = max(1, min(int(top_k or self.top_k), len(self.codes)))
        if request.texts:
            X = self.features(request.texts, request.images)
            probs = self._booster_predict(X)
        else:
            X, probs = None, np.zeros((0, len(self.codes)))
        order = np.argsort(-probs, axis=1)[:, :k]
        codes = np.asarray(self.codes)
        top_p = np.take_along_axis(probs, order, axis=1)
        out = pd.DataFrame(
            {
                "prdtypecode": codes[order[:, 0]].astype(np.int64) if len(order) else np.zeros(0, np.int64),
                "probability": top_p[:, 0] if len(order) else np.zeros(0),
                "top_codes": [row.tolist() for row in codes[order]],
                "top_probabilities": [row.tolist() for row in top_p],
                "image_status": request.image_status,
            }
        )
        if explain:
            out["contributions"] = self.explain(X, order[:, 0]) if X is not None else []
        return out
