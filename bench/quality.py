"""Quality benchmark: mmpc's CPU-friendly level-1 text kinds and their LightGBM stack on real text.

Trains, on the CPU and within a wall-clock budget, every level-1 model of the recipe
(``bench/quality.yaml``: a TF-IDF + linear SVM model and a small transformer trained from scratch
with a WordPiece tokenizer trained on the train text), stacks them with mmpc's LightGBM stacker and
prints the paper's Table 1 layout on the test rows: macro-F1 per model and for the stack, with wall
times. The last printed line is one JSON object with every figure.

Rows are honest. Level 1 runs out of fold on the train CSV (k folds per kind): every train row gets
probabilities from models that never saw it, so the stacker learns from all train rows (k-fold CV
on them picks its rounds), and a transformer's early stopping uses a slice of its own fit rows. The
test CSV is only scored: each kind's test probabilities are the mean of its fold models. A
``reference`` row is the recipe's TF-IDF model fit once on every train row: the single model a user
would otherwise deploy.

    python bench/quality.py --train train.csv --test test.csv
    python bench/quality.py                    # splits ../shared/data/rakuten/translated_en/dev.csv 80/20
    python bench/quality.py --limit 4000       # a quick run on a sample

CSV columns: ``text`` and ``prdtypecode``. Only mmpc's own code trains and predicts (its training
functions, the saved-model runners the serving path uses, ``mmpc.stacking``); no MLflow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from mmpc import stacking, text  # noqa: E402
from mmpc.catalog import SplitSpec  # noqa: E402
from mmpc.labels import LabelMap  # noqa: E402
from mmpc.models.runners import TextRunner  # noqa: E402
from mmpc.models.tfidf import TfidfRunner  # noqa: E402
from mmpc.recipe import Recipe, TextModelConfig, TfidfModelConfig, from_dict  # noqa: E402
from mmpc.training.level1 import RunOptions, train_text  # noqa: E402
from mmpc.training.metrics import macro_f1  # noqa: E402
from mmpc.training.tfidf import train_tfidf  # noqa: E402

log = logging.getLogger("quality")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "rakuten" / "translated_en" / "dev.csv"
DEFAULT_RECIPE = Path(__file__).resolve().parent / "quality.yaml"
COLUMNS = ("text", "prdtypecode")


class InputError(ValueError):
    """A CSV or the recipe is unusable; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------- inputs


def read_rows(path: Path) -> pd.DataFrame:
    """``text`` (cleaned) and ``prdtypecode`` (int) of a CSV; rows with an empty text are errors."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    frame = pd.read_csv(path, dtype={"text": "string"}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}")
    codes = pd.to_numeric(frame["prdtypecode"], errors="coerce")
    bad = np.flatnonzero(codes.isna().to_numpy() | (codes % 1 != 0).to_numpy())
    if len(bad):
        raise InputError(
            f"{path}: prdtypecode is not an integer on {len(bad)} row(s), first at data row {bad[0] + 1}"
        )
    texts = frame["text"].map(text.clean)
    empty = np.flatnonzero((texts == "").to_numpy())
    if len(empty):
        raise InputError(f"{path}: empty text on {len(empty)} row(s), first at data row {empty[0] + 1}")
    return pd.DataFrame({"text": texts.to_numpy(), "prdtypecode": codes.astype(np.int64).to_numpy()})


def row_keys(frame: pd.DataFrame) -> pd.Series:
    """What a row's split hashes: its text and code, so a row's split never depends on the others."""
    return frame["text"] + "\x1f" + frame["prdtypecode"].astype(str)


def split_rows(frame: pd.DataFrame, spec: SplitSpec) -> pd.Series:
    return spec.assign(row_keys(frame)).set_axis(frame.index)


def load_data(args: argparse.Namespace, bench: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if (args.train is None) != (args.test is None):
        raise InputError("give both --train and --test, or neither (to split the default data)")
    if args.train is not None:
        train, test = read_rows(args.train), read_rows(args.test)
        source = f"train {args.train} ({len(train)} rows), test {args.test} ({len(test)} rows)"
    else:
        rows = read_rows(args.data)
        fraction = float(bench["test_fraction"])
        spec = SplitSpec(train=1 - fraction, valid=0.0, stack=0.0, test=fraction, salt=bench["split_salt"])
        split = split_rows(rows, spec)
        train, test = rows[split == "train"], rows[split == "test"]
        source = (
            f"{args.data} split by a hash of each row (text and code, salt {bench['split_salt']!r}): "
            f"{len(train)} train rows ({1 - fraction:.0%}), {len(test)} test rows ({fraction:.0%})"
        )
    if args.limit:
        train = train.sample(min(args.limit, len(train)), random_state=args.seed)
        test = test.sample(min(max(args.limit // 4, 1), len(test)), random_state=args.seed)
        source += f"; --limit {args.limit}: a seeded sample of {len(train)} train and {len(test)} test rows"
    return train.reset_index(drop=True), test.reset_index(drop=True), source


def label_rows(frame: pd.DataFrame, labels: LabelMap, where: str) -> pd.DataFrame:
    unknown = sorted(set(frame["prdtypecode"]) - set(labels.codes))
    if unknown:
        raise InputError(f"{where}: code(s) {unknown} never appear in the train rows")
    return frame.assign(label=labels.indices(frame["prdtypecode"]))


def load_recipe(path: Path) -> tuple[Recipe, dict[str, Any]]:
    """mmpc's recipe, plus the benchmark's own ``bench`` section."""
    data = yaml.safe_load(path.read_text()) or {}
    bench = data.pop("bench", None)
    if not isinstance(bench, dict):
        raise InputError(
            f"{path}: a `bench` section (test_fraction, split_salt, reserve_minutes, ...) is needed"
        )
    recipe = from_dict(data)
    unusable = [n for n, m in recipe.models.items() if not isinstance(m, TextModelConfig | TfidfModelConfig)]
    if unusable:
        raise InputError(f"{path}: models {unusable} need images; this benchmark has text only")
    ref = bench.get("reference")
    if ref is not None and not isinstance(recipe.models.get(ref), TfidfModelConfig):
        raise InputError(f"{path}: bench.reference {ref!r} is not a tfidf model of the recipe")
    return recipe, bench


# -------------------------------------------------------------------------------------- training


def set_threads(n: int | None) -> int:
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def fit_level1(
    name: str, cfg, train: pd.DataFrame, valid: pd.DataFrame, codes: list[int], out: Path, seed: int
) -> dict[str, Any]:
    """One level-1 model trained by mmpc's own function into ``out``; its fit and wall time."""
    started = time.perf_counter()
    opts = RunOptions(torch.device("cpu"), seed, name)
    fitter = train_tfidf if isinstance(cfg, TfidfModelConfig) else train_text
    result = fitter(cfg, train, valid, codes, out, opts)
    return {
        "fit_s": time.perf_counter() - started,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "valid_macro_f1": result.best_valid_macro_f1,
    }


def predict(cfg, folder: Path, texts: list[str], batch_size: int) -> np.ndarray:
    """Class probabilities from the saved model, through the runner the serving path uses."""
    if isinstance(cfg, TfidfModelConfig):
        return TfidfRunner(folder).run(texts)
    return TextRunner(folder, torch.device("cpu"), batch_size).run(texts)[0]


def neural_minutes(
    own: float | None, budget_s: float, elapsed_s: float, reserve_s: float, left: int
) -> float:
    """A transformer fit's share of what is left of the budget (the recipe's own cap, if smaller)."""
    share = max(budget_s - elapsed_s - reserve_s, 0.0) / max(left, 1) / 60
    return max(min(share, own) if own else share, 0.05)


def fold_indices(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) per fold, stratified by code."""
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2 or smallest < folds:
        raise InputError(
            f"{folds} folds: need at least 2, and that many train rows of every code (rarest: {smallest})"
        )
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def run(args: argparse.Namespace) -> dict[str, Any]:
    recipe, bench = load_recipe(args.recipe)
    train_csv, test_csv, source = load_data(args, bench)
    print(f"data: {source}", flush=True)
    labels = LabelMap(tuple(sorted(int(c) for c in train_csv["prdtypecode"].unique())))
    codes = list(labels.codes)
    rows = label_rows(train_csv, labels, "train rows")
    test = label_rows(test_csv, labels, "test rows")
    y, y_test = rows["label"].to_numpy(), test["label"].to_numpy()
    folds = {kind: int(k) for kind, k in bench["folds"].items()}
    # Early stopping of a transformer uses a slice of its own fit rows, chosen by row hash.
    valid_spec = SplitSpec(
        train=1 - bench["valid_fraction"],
        valid=bench["valid_fraction"],
        stack=0.0,
        test=0.0,
        salt=bench["split_salt"] + "-valid",  # not the test split's hash: its rows are all train rows here
    )
    is_valid = (split_rows(rows, valid_spec) == "valid").to_numpy()
    if not is_valid.any() or is_valid.all():
        raise InputError(f"bench.valid_fraction {bench['valid_fraction']} leaves no valid or no fit rows")
    print(
        f"{len(rows)} train rows, {len(test)} test rows, {len(codes)} codes; out-of-fold level 1: "
        + ", ".join(f"{n} {folds[m.kind]} folds" for n, m in recipe.models.items())
        + f"; torch threads {set_threads(args.threads)}",
        flush=True,
    )

    budget_s = args.budget_minutes * 60
    reserve_s = float(bench["reserve_minutes"]) * 60
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mmpc-quality-")) if args.workdir is None else args.workdir
    batch = recipe.ensemble.batch_size * 4
    test_texts = test["text"].tolist()
    table_rows: dict[str, dict[str, Any]] = {}
    oof: dict[str, np.ndarray] = {}
    test_probs: dict[str, np.ndarray] = {}
    # Cheap TF-IDF models first: the transformer fits then share what is left of the budget.
    order = sorted(recipe.models, key=lambda n: isinstance(recipe.models[n], TextModelConfig))
    neural_left = sum(folds["text"] for m in recipe.models.values() if isinstance(m, TextModelConfig))
    for name in order:
        cfg = recipe.models[name]
        splits = fold_indices(y, folds[cfg.kind], recipe.seed)
        oof[name] = np.zeros((len(rows), len(codes)), dtype=np.float32)
        test_probs[name] = np.zeros((len(test), len(codes)), dtype=np.float32)
        fits = []
        own_cap = cfg.train.max_minutes if isinstance(cfg, TextModelConfig) else None
        for i, (fit_idx, held_idx) in enumerate(splits):
            if isinstance(cfg, TextModelConfig):
                cfg.train.max_minutes = neural_minutes(
                    own_cap, budget_s, time.perf_counter() - started, reserve_s, neural_left
                )
                neural_left -= 1
                print(
                    f"{name} fold {i + 1}: training for at most {cfg.train.max_minutes:.1f} min", flush=True
                )
                train, valid = rows.iloc[fit_idx[~is_valid[fit_idx]]], rows.iloc[fit_idx[is_valid[fit_idx]]]
            else:
                # TF-IDF makes no choice on valid rows: it fits every fit row; the held-out fold is
                # only scored.
                train, valid = rows.iloc[fit_idx], rows.iloc[held_idx]
            folder = workdir / name / f"fold{i + 1}"
            fit = fit_level1(f"{name}-fold{i + 1}", cfg, train, valid, codes, folder, recipe.seed)
            t = time.perf_counter()
            oof[name][held_idx] = predict(cfg, folder, rows["text"].iloc[held_idx].tolist(), batch)
            # Test rows: the mean of the fold models, each the same kind of model the stacker saw.
            test_probs[name] += predict(cfg, folder, test_texts, batch) / len(splits)
            fits.append({**fit, "predict_s": time.perf_counter() - t})
            print(
                f"{name} fold {i + 1}/{len(splits)}: valid macro-F1 {fit['valid_macro_f1']:.4f}, "
                f"fit {fit['fit_s']:.0f}s ({fit['epochs']} epoch(s))",
                flush=True,
            )
        table_rows[name] = {
            "kind": cfg.kind,
            "fit_s": sum(f["fit_s"] + f["predict_s"] for f in fits),
            "epochs": [f["epochs"] for f in fits],
            "oof_macro_f1": macro_f1(y, oof[name].argmax(1)),
            "test_macro_f1": macro_f1(y_test, test_probs[name].argmax(1)),
        }

    t = time.perf_counter()
    names = list(recipe.models)
    fitted = stacking.fit(stacking.features(oof, names, codes), y, recipe.stacking, len(codes), recipe.seed)
    stacked = fitted.booster.predict(stacking.features(test_probs, names, codes))
    table_rows["stack"] = {
        "kind": "lightgbm",
        "fit_s": time.perf_counter() - t,
        "epochs": fitted.best_rounds,
        "oof_macro_f1": fitted.cv_macro_f1,  # the stacker's own k-fold estimate
        "test_macro_f1": macro_f1(y_test, stacked.argmax(1)),
    }
    training_s = time.perf_counter() - started

    ref = bench.get("reference")
    if ref:
        # The single-model baseline: the same TF-IDF recipe fit once on every train row. Not part of
        # the stack, so not counted in its budget.
        cfg = recipe.models[ref]
        fit = fit_level1("reference", cfg, rows, rows.iloc[:0], codes, workdir / "reference", recipe.seed)
        probs = predict(cfg, workdir / "reference", test_texts, batch)
        table_rows["reference"] = {
            "kind": f"{cfg.kind}, one fit on all train rows",
            "fit_s": fit["fit_s"],
            "test_macro_f1": macro_f1(y_test, probs.argmax(1)),
        }
    return {
        "source": source,
        "rows": table_rows,
        "sizes": {"train": len(rows), "test": len(test)},
        "training_s": training_s,
        "budget_s": budget_s,
        "workdir": str(workdir),
    }


# --------------------------------------------------------------------------------------- report


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The paper's Table 1 layout, with the wall time of each fit."""
    head = "| model | kind | test macro-F1 | out-of-fold macro-F1 (train rows) | train wall s |"
    lines = [head, "|---|---|---|---|---|"]
    for name, r in rows.items():
        held = f"{r['oof_macro_f1']:.4f}" if "oof_macro_f1" in r else "-"
        lines.append(f"| {name} | {r['kind']} | {r['test_macro_f1']:.4f} | {held} | {r['fit_s']:.0f} |")
    return "\n".join(lines)


def figures(result: dict[str, Any], wall_s: float) -> dict[str, Any]:
    rows = result["rows"]
    out: dict[str, Any] = {f"{n}_macro_f1": round(r["test_macro_f1"], 4) for n, r in rows.items()}
    out.update({f"{n}_fit_s": round(r["fit_s"], 1) for n, r in rows.items()})
    best = max((n for n in rows if n not in ("stack", "reference")), key=lambda n: rows[n]["test_macro_f1"])
    out.update(
        best_level1=best,
        stack_gain_over_best_level1=round(rows["stack"]["test_macro_f1"] - rows[best]["test_macro_f1"], 4),
        stack_best_rounds=rows["stack"]["epochs"],
        training_s=round(result["training_s"], 1),
        budget_s=result["budget_s"],
        within_budget=result["training_s"] <= result["budget_s"],
        rows=result["sizes"],
        wall_s=round(wall_s, 1),
    )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, help="CSV with columns text, prdtypecode (with --test)")
    p.add_argument("--test", type=Path, help="CSV with columns text, prdtypecode; only scored")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="split 80/20 by row hash when no --train/--test"
    )
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="mmpc recipe + `bench` section (YAML)")
    p.add_argument("--budget-minutes", type=float, default=30.0, help="wall clock for the stack's training")
    p.add_argument("--limit", type=int, default=0, help="a seeded sample of N train and N/4 test rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where the models are saved (default: a temp dir)"
    )
    p.add_argument("--seed", type=int, default=0, help="the --limit sample")
    args = p.parse_args(argv)
    if args.budget_minutes <= 0:
        p.error("--budget-minutes must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    try:
        result = run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall_s = time.perf_counter() - started
    out = figures(result, wall_s)
    print()
    print(f"Test rows: {result['sizes']['test']}. {result['source']}.")
    print(table(result["rows"]))
    verdict = "within" if out["within_budget"] else "OVER"
    print(
        f"training {out['training_s']:.0f}s ({verdict} the {result['budget_s'] / 60:.0f} min budget; "
        f"the reference refit is extra); wall {wall_s:.0f}s; models in {result['workdir']}"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
