"""Level 2: LightGBM on the concatenated class probabilities of the level-1 models.

Features are named ``<model>__<code>`` (LightGBM refuses JSON punctuation in names). A level-1
model that could not answer a row (an image model without a photo) leaves NaN there; LightGBM
routes missing values natively.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from mmpc.labels import RAKUTEN_NAMES
from mmpc.metrics import macro_f1
from mmpc.recipe import StackingConfig

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"
_END_OF_TREES = "\nend of trees\n"  # what LightGBM writes after the last tree of a model file


def feature_names(models: Sequence[str], codes: Sequence[int]) -> list[str]:
    return [f"{m}__{c}" for m in models for c in codes]


def features(probs: Mapping[str, np.ndarray], models: Sequence[str], codes: Sequence[int]) -> pd.DataFrame:
    """The stacker's input: each model's probabilities side by side, in ``models`` order."""
    missing = [m for m in models if m not in probs]
    if missing:
        raise KeyError(f"no probabilities for level-1 model(s) {missing}")
    data = np.concatenate([np.asarray(probs[m], dtype=np.float32) for m in models], axis=1)
    return pd.DataFrame(data, columns=feature_names(models, codes))


@dataclass
class StackResult:
    booster: lgb.Booster
    best_rounds: int
    cv_macro_f1: float
    cv_logloss: float


def lgb_params(cfg: StackingConfig, num_classes: int, seed: int) -> dict:
    return {
        "objective": "multiclass",
        "num_class": num_classes,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 0,
        **cfg.params,
    }


def fit(X: pd.DataFrame, y: np.ndarray, cfg: StackingConfig, num_classes: int, seed: int = 0) -> StackResult:
    """k-fold CV on the stack rows picks the number of rounds (LightGBM's early-stopping callback)
    and gives the stacker's own macro-F1 estimate; the final booster is fit on all stack rows."""
    params = lgb_params(cfg, num_classes, seed)
    counts = np.bincount(y, minlength=num_classes)
    folds = max(2, min(cfg.folds, int(counts[counts > 0].min())))
    if folds < cfg.folds:
        log.warning(
            "stacking: the rarest class has %d stack rows; using %d folds instead of %d",
            counts[counts > 0].min(),
            folds,
            cfg.folds,
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    split_list = list(splitter.split(X, y))
    data = lgb.Dataset(X, label=y, free_raw_data=False)
    cv = lgb.cv(
        params,
        data,
        num_boost_round=cfg.num_boost_round,
        folds=split_list,
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        return_cvbooster=True,
    )
    best_rounds = len(cv["valid multi_logloss-mean"])
    oof = np.zeros((len(y), num_classes))
    for booster, (_, valid_idx) in zip(cv["cvbooster"].boosters, split_list, strict=True):
        oof[valid_idx] = booster.predict(X.iloc[valid_idx], num_iteration=best_rounds)
    booster = lgb.train(params, data, num_boost_round=best_rounds)
    return StackResult(
        booster=booster,
        best_rounds=best_rounds,
        cv_macro_f1=macro_f1(y, oof.argmax(1)),
        cv_logloss=float(cv["valid multi_logloss-mean"][-1]),
    )


def save(booster: lgb.Booster, folder: Path) -> Path:
    """LightGBM's own text format: readable, diffable, no pickle."""
    path = folder / BOOSTER_FILE
    booster.save_model(str(path))
    return path


def load(folder: Path, sha256: str | None = None) -> lgb.Booster:
    """The booster of ``folder``, verified against ``sha256`` when one is recorded. Its text is checked
    for LightGBM's closing marker before parsing: a file cut short aborts LightGBM's C++ parser."""
    from mmpc.models import store  # imports PyTorch: only when a booster is loaded

    path = Path(folder) / BOOSTER_FILE
    if sha256 is not None:
        store.check_digest(path, sha256)
    elif not path.is_file():
        raise store.ModelFolderError(f"{path} is missing")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if _END_OF_TREES not in text:
        raise store.ModelFolderError(
            f"{path}: not a whole LightGBM model (no 'end of trees' line; cut short?)"
        )
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise store.ModelFolderError(f"{path}: LightGBM cannot read it: {exc}") from exc


def table(scores: Mapping[str, float], title: str = "test macro-F1") -> str:
    """The paper's Table 1 layout: one row per model, the stack last."""
    width = max(len(k) for k in scores)
    lines = [f"| {'model'.ljust(width)} | {title} |", f"|{'-' * (width + 2)}|{'-' * (len(title) + 2)}|"]
    lines += [
        f"| {name.ljust(width)} | {value:.4f}{' ' * (len(title) - 6)} |" for name, value in scores.items()
    ]
    return "\n".join(lines)


class Explainer:
    """Per-model SHAP contributions (TreeExplainer) to the stacked prediction.

    A level-1 model's contribution to a row is the sum of the SHAP values of its features for the
    predicted class; with the base value they add up to the booster's raw score for that class.
    """

    def __init__(self, booster: lgb.Booster, models: Sequence[str], codes: Sequence[int]):
        import shap  # imported here: serving without explanations never pays for it

        self.explainer = shap.TreeExplainer(booster)
        self.models = list(models)
        self.width = len(codes)

    def explain(self, X: pd.DataFrame, classes: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """(contributions [rows x models] for ``classes`` (default: the predicted ones), base values)."""
        values = np.asarray(self.explainer.shap_values(X))  # [rows, features, classes]
        base = np.broadcast_to(np.asarray(self.explainer.expected_value, dtype=float), (values.shape[2],))
        if classes is None:
            classes = (values.sum(axis=1) + base).argmax(axis=1)
        rows = np.arange(len(X))
        per_class = values[rows, :, classes]  # [rows, features]
        per_model = per_class.reshape(len(X), len(self.models), self.width).sum(axis=2)
        return pd.DataFrame(per_model, columns=self.models), base[classes]


def only_one_right(
    probs: Mapping[str, np.ndarray],
    y: np.ndarray,
    stacked: np.ndarray,
    contributions: pd.DataFrame,
    products: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The paper's Table 2: rows that exactly one level-1 model got right, whether the stack got them
    right, and which model drove the stacked prediction (largest SHAP contribution). With
    ``products`` (the scored rows, in the same order), each row also names its product: productid,
    title and true product type."""
    models = list(contributions.columns)
    right = np.stack([np.nan_to_num(probs[m], nan=-1).argmax(1) == y for m in models], axis=1)
    rows = np.flatnonzero(right.sum(axis=1) == 1)
    table = pd.DataFrame(
        {
            "row": rows,
            "only_right": [models[i] for i in right[rows].argmax(axis=1)],
            "stack_right": stacked[rows] == y[rows],
            "driver": contributions.iloc[rows].idxmax(axis=1).to_numpy(),
        }
    )
    if products is None:
        return table
    picked = products.iloc[rows]
    named = pd.DataFrame(
        {
            "productid": picked["productid"].to_numpy(),
            "designation": picked["designation"].to_numpy(),
            "true": picked["prdtypecode"].to_numpy(),
            "true_name": [RAKUTEN_NAMES.get(int(c), "") for c in picked["prdtypecode"]],
        }
    )
    return pd.concat([table[["row"]], named, table.drop(columns="row")], axis=1)


def contributions_png(contributions: pd.DataFrame, path: Path) -> None:
    """The paper's Figure 2: the distribution of each model's contribution to the predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * contributions.shape[1] + 2, 4), dpi=110)
    ax.boxplot([contributions[c].to_numpy() for c in contributions.columns], showfliers=False)
    ax.set_xticks(range(1, contributions.shape[1] + 1), list(contributions.columns))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("SHAP contribution to the predicted class (raw score)")
    ax.set_title("Which level-1 model drives the stacked prediction")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
