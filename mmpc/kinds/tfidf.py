"""The TF-IDF kind: word and character n-gram features, a linear SVM with calibrated probabilities.

It trains in seconds on a CPU and stacks like any other level-1 model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mmpc.kinds.base import Kind, Meta, register


@dataclass
class TfidfFeatures:
    """One block of TF-IDF features (scikit-learn's TfidfVectorizer); blocks are concatenated."""

    analyzer: Literal["word", "char", "char_wb"] = "word"
    ngram_range: list[int] = field(default_factory=lambda: [1, 2])
    min_df: int = 1
    max_df: float = 1.0
    max_features: int | None = None
    sublinear_tf: bool = True
    lowercase: bool = True
    strip_accents: Literal["unicode", "ascii"] | None = None


@dataclass
class TfidfModelConfig:
    """TF-IDF features -> a linear SVM with calibrated probabilities; trains in seconds on a CPU."""

    kind: Literal["tfidf"] = "tfidf"
    features: list[TfidfFeatures] = field(
        default_factory=lambda: [
            TfidfFeatures(analyzer="word", ngram_range=[1, 2]),
            TfidfFeatures(analyzer="char_wb", ngram_range=[2, 5], min_df=2),
        ]
    )
    C: float = 0.5  # LinearSVC's inverse regularisation strength
    class_weight: Literal["balanced"] | None = None
    # Probabilities: `sigmoid` (Platt, one per class, then normalised) or `temperature` (one softmax
    # temperature over the decision values), fit on cross-validated decision values of the train split.
    calibration: Literal["sigmoid", "temperature"] = "sigmoid"
    calibration_folds: int = 3
    n_jobs: int | None = None  # processes for the calibration folds (scikit-learn's n_jobs)


@dataclass(kw_only=True)
class TfidfMeta(Meta):
    classes: list[int]  # the label indices the SVM saw (a rare label may be absent)
    calibration: str
    C: float
    n_features: int
    features: list[dict[str, Any]]  # the vectorizer settings of each block


def _validate(name: str, cfg: TfidfModelConfig, models: Mapping[str, Any], path: str) -> None:
    if not cfg.features:
        raise ValueError(f"{path}.features: at least one feature block is needed")
    for i, block in enumerate(cfg.features):
        low, high = [*block.ngram_range, 0, 0][:2]
        if len(block.ngram_range) != 2 or not 1 <= low <= high:
            raise ValueError(f"{path}.features[{i}].ngram_range: expected [low, high] with 1 <= low <= high")
    if cfg.calibration_folds < 2:
        raise ValueError(f"{path}.calibration_folds: at least 2 folds are needed")
    if cfg.C <= 0:
        raise ValueError(f"{path}.C: must be > 0")


KIND = register(
    Kind(
        name="tfidf",
        config=TfidfModelConfig,
        meta=TfidfMeta,
        train="mmpc.training.tfidf:train_tfidf",
        load="mmpc.models.tfidf:TfidfRunner",
        build="mmpc.training.tfidf:build_tfidf",
        validate=_validate,
    )
)
