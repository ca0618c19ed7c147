"""The published model: level-1 folders and the booster, answering in one pass per backbone.

Folder layout::

    ensemble.json          members (name, kind, registered version), class codes, top_k
    members/<name>/        level-1 model folders (a fusion member keeps only its head when its
                           inputs are members with identical weights)
    booster.txt            the LightGBM stacker

The fusion model's backbones are frozen copies of the text and image members. When the weight
digests agree, each backbone runs once per batch and feeds both its own head and the fusion head;
when they do not, the fusion member runs its own bundled backbones (and a warning says so).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmpc import stacking
from mmpc.models import store
from mmpc.models.runners import FusionRunner, ImageRunner, Level1Predictor, TextRunner
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
    digests = {n: store.read_meta(f)["weights_sha256"] for n, f in members.items()}
    entries = []
    for name, folder in members.items():
        meta = store.read_meta(folder)
        dst = out / "members" / name
        shareable = meta["kind"] == "fusion" and all(
            digests.get(n) == d for n, d in meta["input_weights_sha256"].items()
        )
        # A fusion whose inputs are members with the same weights needs only its head.
        ignore = shutil.ignore_patterns("inputs") if shareable else None
        shutil.copytree(folder, dst, ignore=ignore, dirs_exist_ok=True)
        entries.append({"name": name, "kind": meta["kind"], "version": versions.get(name)})
    shutil.copy2(booster_file, out / stacking.BOOSTER_FILE)
    manifest = {"members": entries, "codes": list(codes), "top_k": top_k, "batch_size": batch_size}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


class EnsemblePredictor:
    def __init__(self, folder: str | Path, device: torch.device | None = None):
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        self.codes: list[int] = manifest["codes"]
        self.top_k: int = manifest["top_k"]
        self.members: list[str] = [m["name"] for m in manifest["members"]]
        batch = manifest.get("batch_size", 64)
        self.texts: dict[str, TextRunner] = {}
        self.images: dict[str, ImageRunner] = {}
        self.fusions: dict[str, FusionRunner] = {}
        self.separate: dict[str, Level1Predictor] = {}  # fusion members that run their own backbones
        kinds = {m["name"]: m["kind"] for m in manifest["members"]}
        for name in self.members:
            path = folder / "members" / name
            if kinds[name] == "text":
                self.texts[name] = TextRunner(path, device, batch)
            elif kinds[name] == "image":
                self.images[name] = ImageRunner(path, device, batch)
        for name in self.members:
            path = folder / "members" / name
            if kinds[name] == "fusion":
                if self._shares_backbones(path):
                    self.fusions[name] = FusionRunner(path, device)
                elif (path / "inputs").is_dir():
                    warnings.warn(
                        f"ensemble member {name!r}: its frozen backbones differ from the ensemble's "
                        "text/image members; it runs its own backbones (slower)",
                        stacklevel=2,
                    )
                    self.separate[name] = Level1Predictor(path, device, batch)
                else:
                    raise store.ModelFolderError(
                        f"{path}: the fusion member's backbones differ from the ensemble's members "
                        "and are not bundled"
                    )
            elif kinds[name] not in ("text", "image"):
                self.separate[name] = Level1Predictor(path, device, batch)
        self.booster = stacking.load(folder)
        expected = stacking.feature_names(self.members, self.codes)
        if self.booster.feature_name() != expected:
            raise store.ModelFolderError(
                f"{folder}: the booster's features do not match the members {self.members}"
            )
        self._explainer: stacking.Explainer | None = None  # built on the first request that asks

    def _shares_backbones(self, fusion_folder: Path) -> bool:
        meta = store.read_meta(fusion_folder)
        loaded = {n: r.weights_sha256 for n, r in {**self.texts, **self.images}.items()}
        return all(loaded.get(n) == d for n, d in meta["input_weights_sha256"].items())

    @property
    def uses_images(self) -> bool:
        return bool(self.images) or bool(self.fusions) or any(p.uses_images for p in self.separate.values())

    def level1_probabilities(self, texts: Sequence[str], imgs: Sequence) -> dict[str, np.ndarray]:
        """Every member's class probabilities, each backbone run once."""
        probs: dict[str, np.ndarray] = {}
        embs: dict[str, np.ndarray] = {}
        for name, runner in self.texts.items():
            probs[name], embs[name] = runner.run(texts)
        for name, runner in self.images.items():
            probs[name], embs[name] = runner.run(imgs)
        for name, runner in self.fusions.items():
            meta = runner.meta
            probs[name] = runner.run([embs[n] for n in meta["text"]], embs[meta["image"]])
        for name, predictor in self.separate.items():
            probs[name] = predictor.predict_proba(texts, imgs)
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
        return self.booster.predict(X.to_numpy(np.float32), num_threads=1)

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
