"""Training of the TF-IDF level-1 kind: scikit-learn fits, plain arrays are saved.

Word and character n-gram TF-IDF blocks feed a one-vs-rest LinearSVC; its decision values are
calibrated into probabilities by ``CalibratedClassifierCV(ensemble=False)``: the calibration is fit on
cross-validated decision values of the train split, and the SVM itself on the whole train split.
Only ``train`` rows are fitted; ``valid`` rows are only scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from mmpc.kinds.tfidf import TfidfMeta, TfidfModelConfig
from mmpc.metrics import macro_f1
from mmpc.models import tfidf
from mmpc.training.engine import FitResult
from mmpc.training.level1 import RunOptions

log = logging.getLogger(__name__)


def _calibration_arrays(model: CalibratedClassifierCV, method: str) -> dict[str, np.ndarray]:
    calibrated = model.calibrated_classifiers_[0]  # ensemble=False: one SVM, one calibration
    svm = calibrated.estimator
    arrays = {"coef": svm.coef_, "intercept": svm.intercept_}
    if method == "sigmoid":  # one (a, b) per class, in the SVM's class order
        arrays["a"] = np.array([c.a_ for c in calibrated.calibrators], dtype=np.float64)
        arrays["b"] = np.array([c.b_ for c in calibrated.calibrators], dtype=np.float64)
    else:
        arrays["beta"] = np.array([calibrated.calibrators[0].beta_], dtype=np.float64)
    return arrays


def fit(
    cfg: TfidfModelConfig, texts: Sequence[str], y: np.ndarray, seed: int
) -> tuple[list, CalibratedClassifierCV]:
    """The fitted vectorizers and calibrated SVM (scikit-learn objects)."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 3:
        raise ValueError(f"a TF-IDF model needs at least 3 classes in its train rows, got {len(classes)}")
    blocks = [asdict(b) for b in cfg.features]
    vectorizers = [tfidf.make_vectorizer(b) for b in blocks]
    X = sp.hstack([v.fit_transform(list(texts)) for v in vectorizers], format="csr")
    folds = min(cfg.calibration_folds, int(counts.min()))
    if folds < 2:
        raise ValueError(
            "calibration needs 2 train rows of every class; "
            f"label {classes[counts.argmin()]} has {counts.min()}"
        )
    model = CalibratedClassifierCV(
        LinearSVC(C=cfg.C, class_weight=cfg.class_weight, random_state=seed),
        method=cfg.calibration,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        ensemble=False,
        n_jobs=cfg.n_jobs,
    )
    model.fit(X, y)
    return vectorizers, model


def export(
    out: Path,
    cfg: TfidfModelConfig,
    vectorizers: Sequence,
    model: CalibratedClassifierCV,
    codes: Sequence[int],
    name: str,
) -> tfidf.TfidfRunner:
    """Save fitted objects as arrays + JSON and load them back as the runner that serves them."""
    meta = TfidfMeta(
        kind="tfidf",
        name=name,
        codes=list(codes),
        classes=[int(c) for c in model.classes_],
        calibration=cfg.calibration,
        C=cfg.C,
        n_features=int(model.calibrated_classifiers_[0].estimator.coef_.shape[1]),
        features=[asdict(b) for b in cfg.features],
    )
    tfidf.save(out, vectorizers, _calibration_arrays(model, cfg.calibration), meta)
    return tfidf.TfidfRunner(out)


def train_tfidf(
    cfg: TfidfModelConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    codes: Sequence[int],
    out: Path,
    run: RunOptions,
    inputs: Mapping[str, Path] | None = None,
) -> FitResult:
    """Fit on ``train``, save into ``out``, score ``valid`` with the saved model (one "epoch")."""
    started = time.perf_counter()
    vectorizers, model = fit(cfg, train["text"].tolist(), train["label"].to_numpy(), run.seed)
    runner = export(out, cfg, vectorizers, model, codes, run.name)
    # The saved arrays must give what the fitted objects give: a guard against a scikit-learn
    # release that changes its calibration maths under the same names.
    probe = (valid if len(valid) else train)["text"].head(64).tolist()
    X_probe = sp.hstack([v.transform(probe) for v in vectorizers], format="csr")
    expected = np.zeros((len(probe), len(codes)))
    expected[:, model.classes_] = model.predict_proba(X_probe)
    if not np.allclose(runner.probabilities(probe), expected, rtol=1e-9, atol=1e-12):
        raise RuntimeError("the saved TF-IDF model does not reproduce scikit-learn's probabilities")
    metrics = _scores(runner, train, valid, len(codes))
    if run.log_metrics:
        run.log_metrics(metrics, 1)
    seconds = time.perf_counter() - started
    log.info(
        "%s: %d features, valid macro-F1 %.4f (%.0fs)",
        run.name,
        runner.coef.shape[1],
        metrics["valid_macro_f1"],
        seconds,
    )
    return FitResult(1, metrics["valid_macro_f1"], 1, [metrics], seconds)


def _scores(runner: tfidf.TfidfRunner, train: pd.DataFrame, valid: pd.DataFrame, C: int) -> dict[str, float]:
    """The same per-epoch names as the neural kinds, so the MLflow UI lines them up."""
    labels = list(range(C))
    p_train = runner.probabilities(train["text"].tolist())
    out = {"train_loss": float(log_loss(train["label"], p_train, labels=labels))}
    if len(valid):
        p_valid = runner.probabilities(valid["text"].tolist())
        y_valid = valid["label"].to_numpy()
        out.update(
            valid_loss=float(log_loss(y_valid, p_valid, labels=labels)),
            valid_macro_f1=macro_f1(y_valid, p_valid.argmax(1)),
            valid_accuracy=float((p_valid.argmax(1) == y_valid).mean()),
        )
    else:
        out.update(valid_loss=float("nan"), valid_macro_f1=0.0, valid_accuracy=0.0)
    return out


def build_tfidf(
    cfg: TfidfModelConfig, name: str, codes: list[int], out: Path, texts: list[str], inputs: dict
) -> Path:
    """A TF-IDF folder fitted on ``texts`` with labels dealt round-robin: the shape of a trained one,
    knowing nothing (tests and benchmarks)."""
    texts = texts or [f"produit {i} article {i % 7}" for i in range(60)]
    y = np.arange(len(texts)) % len(codes)
    vectorizers, model = fit(cfg, texts, y, seed=0)
    export(out, cfg, vectorizers, model, codes, name)
    return out
