"""Quality benchmark: mmpc's CPU-friendly level-1 text kinds and their LightGBM stack on real text.

Trains, on the CPU and within a wall-clock budget, the level-1 models of the recipe
(``bench/quality.yaml``: a TF-IDF + linear SVM model, a small transformer trained from scratch with
a WordPiece tokenizer trained on the train text, and a pretrained English encoder fine-tuned from
its checkpoint; ``--models`` picks some of them), stacks them with mmpc's LightGBM stacker and
prints the paper's Table 1 layout on the test rows: macro-F1 per model and for the stack, with wall
times. The last printed line is one JSON object with every figure.

Rows are honest. Level 1 runs out of fold on the train CSV (k folds per model): every train row gets
probabilities from models that never saw it, so the stacker learns from all train rows (k-fold CV
on them picks its rounds), and a transformer's early stopping uses a slice of its own fit rows. The
test CSV is only scored: each model's test probabilities are the mean of its fold models. A
``reference`` row is the recipe's TF-IDF model fit once on every train row: the single model a user
would otherwise deploy.

    python bench/quality.py --train train.csv --test test.csv
    python bench/quality.py                    # splits ../shared/data/rakuten/translated_en/dev.csv 80/20
    python bench/quality.py --limit 4000       # a quick run on a sample
    python bench/quality.py --models tfidf,transformer   # without the pretrained member

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
from dataclasses import dataclass, field
from importlib import resources
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

from mmpc import kinds, stacking, text  # noqa: E402
from mmpc.catalog import SplitSpec  # noqa: E402
from mmpc.kinds.text import TextModelConfig  # noqa: E402
from mmpc.kinds.tfidf import TfidfModelConfig  # noqa: E402
from mmpc.labels import LabelMap  # noqa: E402
from mmpc.metrics import macro_f1  # noqa: E402
from mmpc.models import pretrained  # noqa: E402
from mmpc.models.batching import TextCollator  # noqa: E402
from mmpc.models.text import TextClassifier, build_backbone  # noqa: E402
from mmpc.models.tokenizer import load_tokenizer  # noqa: E402
from mmpc.recipe import Recipe, from_dict  # noqa: E402
from mmpc.training.level1 import RunOptions  # noqa: E402

log = logging.getLogger("quality")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "rakuten" / "translated_en" / "dev.csv"
DEFAULT_RECIPE = Path(__file__).resolve().parent / "quality.yaml"
COLUMNS = ("text", "prdtypecode")
# A checkpoint shipped inside an installed Python package: ``package:<module>/<folder in it>``.
PACKAGE_PREFIX = "package:"
Level1Config = TextModelConfig | TfidfModelConfig


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


def select_members(recipe: Recipe, names: Sequence[str] | None, where: Path) -> dict[str, Level1Config]:
    """The level-1 models a run stacks, in recipe order: ``names``, or every model of the recipe.
    Only these have their checkpoints resolved and checked: a run without a pretrained member needs
    none installed."""
    unknown = [n for n in names or () if n not in recipe.models]
    if unknown:
        raise InputError(f"{where}: --models {unknown} are not in the recipe; it has {list(recipe.models)}")
    members = {n: m for n, m in recipe.models.items() if not names or n in names}
    for name, cfg in members.items():
        resolve_checkpoint(name, cfg)
    return members


def package_folder(ref: str, where: str) -> str:
    """``package:<module>/<folder>`` -> that folder inside the installed package; other refs as they are."""
    if not ref.startswith(PACKAGE_PREFIX):
        return ref
    module, _, inner = ref[len(PACKAGE_PREFIX) :].partition("/")
    try:
        return str(resources.files(module) / inner)
    except (ModuleNotFoundError, ValueError, TypeError):
        raise InputError(f"{where}: {ref}: the Python package {module!r} is not installed") from None


def resolve_checkpoint(name: str, cfg: Level1Config) -> None:
    """A text model's ``package:`` references made paths, then its checkpoint checked by mmpc before
    any training (config, weights, tokenizer, max_len), so a wrong one fails in seconds."""
    if not isinstance(cfg, TextModelConfig) or not cfg.pretrained:
        return
    cfg.pretrained = package_folder(cfg.pretrained, f"models.{name}.pretrained")
    if cfg.tokenizer.pretrained:
        cfg.tokenizer.pretrained = package_folder(cfg.tokenizer.pretrained, f"models.{name}.tokenizer")
    try:
        pretrained.check(name, cfg)
    except pretrained.CheckpointError as exc:
        raise InputError(str(exc)) from exc


# -------------------------------------------------------------------------------------- training


@dataclass
class Rows:
    """The labelled train and test rows, and the train rows that steer a transformer's early stopping."""

    train: pd.DataFrame
    test: pd.DataFrame
    is_valid: np.ndarray
    codes: list[int]

    @property
    def y(self) -> np.ndarray:
        return self.train["label"].to_numpy()

    @property
    def y_test(self) -> np.ndarray:
        return self.test["label"].to_numpy()


@dataclass
class Budget:
    """The wall clock of the stack's training, shared among the neural fold fits.

    Every fold fit gets an equal share of what is left, after keeping ``reserve_s`` (the stacker and
    slack) and the predictions still to come: each fold model scores its held-out rows and every
    test row, which for a pretrained encoder is a large part of its cost.
    """

    total_s: float
    reserve_s: float
    started: float = field(default_factory=time.perf_counter)
    folds_left: dict[str, int] = field(default_factory=dict)
    predict_s: dict[str, float] = field(default_factory=dict)  # one fold model's predictions, expected

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fit_minutes(self, own_cap: float | None) -> float:
        """A neural fold fit's share (the recipe's own ``max_minutes``, if smaller)."""
        available = max(self.total_s - self.elapsed() - self.reserve_s, 0.0)
        # At most half is kept: an estimate timed while other jobs hog the cores must not starve the fits.
        kept = min(sum(n * self.predict_s.get(m, 0.0) for m, n in self.folds_left.items()), available / 2)
        left = max(sum(self.folds_left.values()), 1)
        share = (available - kept) / left / 60
        return max(min(share, own_cap) if own_cap else share, 0.05)

    def fold_done(self, name: str, predict_s: float) -> None:
        self.folds_left[name] -= 1
        self.predict_s[name] = predict_s  # the next folds of this model score as many rows


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
    result = kinds.train(cfg, train, valid, codes, out, opts, {})
    return {
        "fit_s": time.perf_counter() - started,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "valid_macro_f1": result.best_valid_macro_f1,
    }


def predict(cfg, folder: Path, texts: list[str], batch_size: int) -> np.ndarray:
    """Class probabilities from the saved model, loaded by its kind as the serving path loads it."""
    return kinds.load(folder, torch.device("cpu"), batch_size).predict_proba(texts, [None] * len(texts))


@torch.inference_mode()
def probe_predict_s(cfg: Level1Config, texts: list[str], n_rows: int, n_codes: int) -> float:
    """Expected seconds for one fold model of a checkpoint to score ``n_rows`` texts, timed on
    ``texts`` before any training. A model from scratch is timed on its first fold instead (0 until then)."""
    if not isinstance(cfg, TextModelConfig) or not cfg.pretrained or not texts:
        return 0.0
    tokenizer = load_tokenizer(cfg.tokenizer.pretrained or cfg.pretrained)
    model = TextClassifier(build_backbone(cfg.pretrained, None, {}), n_codes, cfg.head, cfg.max_len).eval()
    ids = sorted(tokenizer(texts, truncation=True, max_length=cfg.max_len)["input_ids"], key=len)
    collate = TextCollator(tokenizer.pad_token_id)
    # Length-sorted batches, as the runner makes them.
    batches = [collate([{"input_ids": x} for x in ids[i : i + 64]]) for i in range(0, len(ids), 64)]
    model(**batches[-1])  # untimed: the first pass pays one-off allocations
    started = time.perf_counter()
    for batch in batches:
        model(**batch)
    return (time.perf_counter() - started) / len(ids) * n_rows


def fold_indices(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) per fold, stratified by code."""
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2 or smallest < folds:
        raise InputError(
            f"{folds} folds: need at least 2, and that many train rows of every code (rarest: {smallest})"
        )
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fold_count(bench: dict[str, Any], name: str, cfg: Level1Config) -> int:
    """``bench.folds`` by model name, else by kind."""
    folds = bench["folds"]
    return int(folds[name] if name in folds else folds[cfg.kind])


def fold_rows(
    cfg: Level1Config, rows: Rows, fit_idx: np.ndarray, held_idx: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fold's fit and valid rows: a transformer stops early on a slice of its own fit rows; TF-IDF
    makes no choice on valid rows, so it fits every fit row and the held-out fold is only scored."""
    if isinstance(cfg, TextModelConfig):
        is_valid = rows.is_valid[fit_idx]
        return rows.train.iloc[fit_idx[~is_valid]], rows.train.iloc[fit_idx[is_valid]]
    return rows.train.iloc[fit_idx], rows.train.iloc[held_idx]


def fit_member(
    name: str,
    cfg: Level1Config,
    splits: list,
    rows: Rows,
    budget: Budget,
    workdir: Path,
    opts: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One level-1 model out of fold: its Table 1 row, out-of-fold and test probabilities."""
    oof = np.zeros((len(rows.train), len(rows.codes)), dtype=np.float32)
    test_probs = np.zeros((len(rows.test), len(rows.codes)), dtype=np.float32)
    test_texts = rows.test["text"].tolist()
    fits = []
    own_cap = cfg.train.max_minutes if isinstance(cfg, TextModelConfig) else None
    for i, (fit_idx, held_idx) in enumerate(splits):
        if isinstance(cfg, TextModelConfig):
            cfg.train.max_minutes = budget.fit_minutes(own_cap)
            print(f"{name} fold {i + 1}: training for at most {cfg.train.max_minutes:.1f} min", flush=True)
        train, valid = fold_rows(cfg, rows, fit_idx, held_idx)
        folder = workdir / name / f"fold{i + 1}"
        fit = fit_level1(f"{name}-fold{i + 1}", cfg, train, valid, rows.codes, folder, opts["seed"])
        t = time.perf_counter()
        oof[held_idx] = predict(cfg, folder, rows.train["text"].iloc[held_idx].tolist(), opts["batch"])
        # Test rows: the mean of the fold models, each the same kind of model the stacker saw.
        test_probs += predict(cfg, folder, test_texts, opts["batch"]) / len(splits)
        fits.append({**fit, "predict_s": time.perf_counter() - t})
        if isinstance(cfg, TextModelConfig):
            budget.fold_done(name, fits[-1]["predict_s"])
        print(
            f"{name} fold {i + 1}/{len(splits)}: valid macro-F1 {fit['valid_macro_f1']:.4f}, "
            f"fit {fit['fit_s']:.0f}s ({fit['epochs']} epoch(s)), predict {fits[-1]['predict_s']:.0f}s",
            flush=True,
        )
    checkpoint = isinstance(cfg, TextModelConfig) and cfg.pretrained
    row = {
        "kind": f"{cfg.kind}, fine-tuned from a checkpoint" if checkpoint else cfg.kind,
        "fit_s": sum(f["fit_s"] + f["predict_s"] for f in fits),
        "epochs": [f["epochs"] for f in fits],
        "oof_macro_f1": macro_f1(rows.y, oof.argmax(1)),
        "test_macro_f1": macro_f1(rows.y_test, test_probs.argmax(1)),
    }
    return row, oof, test_probs


def prepare_rows(args: argparse.Namespace, bench: dict[str, Any]) -> tuple[Rows, str]:
    train_csv, test_csv, source = load_data(args, bench)
    labels = LabelMap(tuple(sorted(int(c) for c in train_csv["prdtypecode"].unique())))
    train = label_rows(train_csv, labels, "train rows")
    # Early stopping of a transformer uses a slice of its own fit rows, chosen by row hash.
    valid_spec = SplitSpec(
        train=1 - bench["valid_fraction"],
        valid=bench["valid_fraction"],
        stack=0.0,
        test=0.0,
        salt=bench["split_salt"] + "-valid",  # not the test split's hash: its rows are all train rows here
    )
    is_valid = (split_rows(train, valid_spec) == "valid").to_numpy()
    if not is_valid.any() or is_valid.all():
        raise InputError(f"bench.valid_fraction {bench['valid_fraction']} leaves no valid or no fit rows")
    test = label_rows(test_csv, labels, "test rows")
    return Rows(train, test, is_valid, list(labels.codes)), source


def start_budget(
    args: argparse.Namespace, bench: dict[str, Any], members: dict[str, Level1Config], rows: Rows, folds: dict
) -> Budget:
    """The budget starts before the checkpoints' inference probes: they are part of the training."""
    budget = Budget(args.budget_minutes * 60, float(bench["reserve_minutes"]) * 60)
    sample = rows.test["text"].head(256).tolist()
    for name, cfg in members.items():
        if isinstance(cfg, TextModelConfig):
            budget.folds_left[name] = folds[name]
            per_fold = len(rows.train) // folds[name] + len(rows.test)
            budget.predict_s[name] = probe_predict_s(cfg, sample, per_fold, len(rows.codes))
            if budget.predict_s[name]:
                print(f"{name}: scoring {per_fold} rows a fold, about {budget.predict_s[name]:.0f}s (probe)")
    return budget


def stack(members: list[str], oof: dict, test_probs: dict, rows: Rows, recipe: Recipe) -> dict[str, Any]:
    t = time.perf_counter()
    codes = rows.codes
    fitted = stacking.fit(
        stacking.features(oof, members, codes), rows.y, recipe.stacking, len(codes), recipe.seed
    )
    stacked = fitted.booster.predict(stacking.features(test_probs, members, codes))
    return {
        "kind": "lightgbm",
        "fit_s": time.perf_counter() - t,
        "epochs": fitted.best_rounds,
        "oof_macro_f1": fitted.cv_macro_f1,  # the stacker's own k-fold estimate
        "test_macro_f1": macro_f1(rows.y_test, stacked.argmax(1)),
    }


def reference_row(cfg: TfidfModelConfig, rows: Rows, workdir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The single-model baseline: the TF-IDF recipe fit once on every train row. Not part of the
    stack, so not counted in its budget."""
    fit = fit_level1(
        "reference", cfg, rows.train, rows.train.iloc[:0], rows.codes, workdir / "reference", opts["seed"]
    )
    probs = predict(cfg, workdir / "reference", rows.test["text"].tolist(), opts["batch"])
    return {
        "kind": f"{cfg.kind}, one fit on all train rows",
        "fit_s": fit["fit_s"],
        "test_macro_f1": macro_f1(rows.y_test, probs.argmax(1)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    recipe, bench = load_recipe(args.recipe)
    members = select_members(recipe, args.models, args.recipe)
    rows, source = prepare_rows(args, bench)
    print(f"data: {source}", flush=True)
    folds = {name: fold_count(bench, name, cfg) for name, cfg in members.items()}
    print(
        f"{len(rows.train)} train rows, {len(rows.test)} test rows, {len(rows.codes)} codes; out-of-fold "
        "level 1: "
        + ", ".join(f"{n} {folds[n]} folds" for n in members)
        + f"; torch threads {set_threads(args.threads)}",
        flush=True,
    )
    budget = start_budget(args, bench, members, rows, folds)
    workdir = Path(tempfile.mkdtemp(prefix="mmpc-quality-")) if args.workdir is None else args.workdir
    opts = {"seed": recipe.seed, "batch": recipe.ensemble.batch_size * 4}
    table_rows: dict[str, dict[str, Any]] = {}
    oof: dict[str, np.ndarray] = {}
    test_probs: dict[str, np.ndarray] = {}
    # Cheap TF-IDF models first: the neural fits then share what is left of the budget.
    for name in sorted(members, key=lambda n: isinstance(members[n], TextModelConfig)):
        splits = fold_indices(rows.y, folds[name], recipe.seed)
        table_rows[name], oof[name], test_probs[name] = fit_member(
            name, members[name], splits, rows, budget, workdir, opts
        )
    table_rows["stack"] = stack(list(members), oof, test_probs, rows, recipe)
    training_s = budget.elapsed()
    if bench.get("reference"):
        table_rows["reference"] = reference_row(recipe.models[bench["reference"]], rows, workdir, opts)
    return {
        "source": source,
        "rows": table_rows,
        "members": list(members),
        "sizes": {"train": len(rows.train), "test": len(rows.test)},
        "training_s": training_s,
        "budget_s": budget.total_s,
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
        level1=result["members"],
        training_s=round(result["training_s"], 1),
        budget_s=result["budget_s"],
        within_budget=result["training_s"] <= result["budget_s"],
        rows=result["sizes"],
        wall_s=round(wall_s, 1),
    )
    return out


def model_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected model names, e.g. tfidf,transformer")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, help="CSV with columns text, prdtypecode (with --test)")
    p.add_argument("--test", type=Path, help="CSV with columns text, prdtypecode; only scored")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="split 80/20 by row hash when no --train/--test"
    )
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="mmpc recipe + `bench` section (YAML)")
    p.add_argument(
        "--models",
        type=model_names,
        default=None,
        help="level-1 models of the recipe to stack, comma-separated (default: all of them)",
    )
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
