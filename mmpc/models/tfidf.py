"""TF-IDF level-1 models at inference, from plain arrays: no pickle.

Folder layout::

    meta.json            kind "tfidf", class codes, feature blocks, calibration method, classes
    vocab_<i>.json       the terms of feature block i, in column order
    model.safetensors    idf_<i> per block, coef [classes, features], intercept [classes] and the
                         calibration: a, b per class (sigmoid) or beta (temperature)

The vectorizer is scikit-learn's own ``TfidfVectorizer`` rebuilt with the saved vocabulary and idf
(so tokenisation is the library's, not a copy of it); the decision values and their calibration are
the few lines of algebra of ``CalibratedClassifierCV(LinearSVC(), ensemble=False).predict_proba``.
Tests compare the probabilities with the fitted scikit-learn objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.feature_extraction.text import TfidfVectorizer

from mmpc import kinds
from mmpc.kinds import Member
from mmpc.kinds.tfidf import TfidfMeta
from mmpc.models import store

KIND = "tfidf"
# The vectorizer settings that matter at inference; min_df, max_df and max_features only shape the
# vocabulary, which is saved as is.
VECTORIZER_KEYS = ("analyzer", "ngram_range", "sublinear_tf", "lowercase", "strip_accents")


def make_vectorizer(block: dict[str, Any], vocabulary: Sequence[str] | None = None) -> TfidfVectorizer:
    """The vectorizer of one feature block: to fit (no vocabulary) or to apply a saved one."""
    fit_only = (
        {}
        if vocabulary is not None
        else {
            "min_df": block.get("min_df", 1),
            "max_df": block.get("max_df", 1.0),
            "max_features": block.get("max_features"),
        }
    )
    return TfidfVectorizer(
        analyzer=block["analyzer"],
        ngram_range=tuple(block["ngram_range"]),
        sublinear_tf=block["sublinear_tf"],
        lowercase=block["lowercase"],
        strip_accents=block.get("strip_accents"),
        vocabulary=list(vocabulary) if vocabulary is not None else None,
        dtype=np.float64,
        **fit_only,
    )


def calibrated_proba(decision: np.ndarray, method: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Calibrated probabilities from one-vs-rest decision values [n, classes]."""
    if method == "temperature":
        proba = softmax(arrays["beta"][0] * decision, axis=1)
    elif method == "sigmoid":
        proba = expit(-(arrays["a"] * decision + arrays["b"]))
        total = proba.sum(axis=1, keepdims=True)
        # Every calibrator at exactly zero: uniform, as scikit-learn does.
        proba = np.divide(proba, total, out=np.full_like(proba, 1 / proba.shape[1]), where=total != 0)
    else:
        raise store.ModelFolderError(f"unknown calibration method {method!r}")
    proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
    return proba


def save(
    folder: Path, vectorizers: Sequence[TfidfVectorizer], arrays: dict[str, np.ndarray], meta: TfidfMeta
) -> dict[str, Any]:
    """Write a fitted TF-IDF model: vocabularies in JSON, every array in safetensors, meta last."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(arrays)
    for i, vec in enumerate(vectorizers):
        terms = vec.get_feature_names_out().tolist()  # column order
        (folder / f"vocab_{i}.json").write_text(json.dumps(terms, ensure_ascii=False))
        tensors[f"idf_{i}"] = np.asarray(vec.idf_, dtype=np.float64)
    blocks = [{k: b[k] for k in VECTORIZER_KEYS if k in b} for b in meta.features]
    return store.save_arrays(folder, tensors, {**meta.to_json(), "features": blocks})


class TfidfRunner(Member):
    """A saved TF-IDF model: texts -> class probabilities [n, C] over every code of the model."""

    def __init__(
        self,
        folder: str | Path,
        device: Any = None,
        batch_size: int = 0,
        shared: Mapping[str, str] | None = None,
    ):
        self.folder = Path(folder)
        self.meta: TfidfMeta = kinds.read_meta(self.folder)
        if self.meta.kind != KIND:
            raise store.ModelFolderError(f"{folder}: not a TF-IDF model folder (kind {self.meta.kind!r})")
        self.arrays = store.load_arrays(self.folder, self.meta.weights_sha256)
        self.vectorizers = []
        for i, block in enumerate(self.meta.features):
            path = self.folder / f"vocab_{i}.json"
            if not path.is_file():
                raise store.ModelFolderError(f"{folder}: vocab_{i}.json is missing")
            vec = make_vectorizer(block, json.loads(path.read_text()))
            vec.idf_ = self.arrays[f"idf_{i}"]
            self.vectorizers.append(vec)
        self.coef, self.intercept = self.arrays["coef"], self.arrays["intercept"]
        width = sum(len(v.vocabulary_) for v in self.vectorizers)
        if self.coef.shape[1] != width:
            raise store.ModelFolderError(
                f"{folder}: coefficients for {self.coef.shape[1]} features, vocabularies hold {width}"
            )
        # Label indices the classifier saw (a class absent from train gets probability 0).
        self.classes = np.asarray(self.meta.classes, dtype=np.int64)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform(list(texts)) for v in self.vectorizers], format="csr")

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """LinearSVC's decision_function: X @ coef.T + intercept."""
        return self.features(texts) @ self.coef.T + self.intercept

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """float64 probabilities, one column per code of the model (what scikit-learn computes)."""
        out = np.zeros((len(texts), len(self.meta.codes)), dtype=np.float64)
        if len(texts):
            out[:, self.classes] = calibrated_proba(self.decision(texts), self.meta.calibration, self.arrays)
        return out

    def run(self, texts: Sequence[str]) -> np.ndarray:
        """float32 probabilities, like every other runner's."""
        return self.probabilities(texts).astype(np.float32)

    def forward(self, texts, imgs, embeddings) -> tuple[np.ndarray, None]:
        return self.run(texts), None
