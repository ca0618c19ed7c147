"""bench/quality.py end to end on a tiny generated catalog: it trains, stacks, prints Table 1 and
ends with one JSON line; bad CSVs get errors naming the file and what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmpc.catalog import read_catalog
from mmpc.demo_catalog import write_demo_catalog

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "quality.py"


@pytest.fixture(scope="module")
def csvs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quality")
    catalog = read_catalog(write_demo_catalog(root / "catalog", size=500, seed=5))
    rows = catalog.frame[["text", "prdtypecode"]]
    train, test = root / "train.csv", root / "test.csv"
    rows.iloc[:400].to_csv(train, index=False)
    rows.iloc[400:].to_csv(test, index=False)
    return train, test


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory) -> Path:
    """The benchmark's own recipe with a tiny transformer, so the test is about wiring, not speed."""
    data = yaml.safe_load((REPO / "bench" / "quality.yaml").read_text())
    data["bench"].update(folds={"tfidf": 3, "text": 2}, valid_fraction=0.15, reserve_minutes=0.1)
    tr = data["models"]["transformer"]
    tr["backbone_config"] = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 70,
    }
    tr["tokenizer"]["train_vocab_size"] = 500
    tr["train"]["epochs"] = 2
    data["models"]["tfidf"]["calibration_folds"] = 2
    data["stacking"].update(num_boost_round=30, early_stopping_rounds=5, folds=2)
    path = tmp_path_factory.mktemp("recipe") / "quality.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_runs_end_to_end_and_ends_with_json(csvs, tiny_recipe, tmp_path):
    train, test = csvs
    proc = _run(
        "--train",
        train,
        "--test",
        test,
        "--recipe",
        tiny_recipe,
        "--budget-minutes",
        "2",
        "--threads",
        "1",
        "--workdir",
        tmp_path / "models",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in (
        "stack_macro_f1",
        "tfidf_macro_f1",
        "transformer_macro_f1",
        "reference_macro_f1",
        "stack_fit_s",
        "tfidf_fit_s",
        "transformer_fit_s",
        "training_s",
        "within_budget",
        "wall_s",
    ):
        assert key in figures, key
    for key in ("stack_macro_f1", "tfidf_macro_f1", "transformer_macro_f1", "reference_macro_f1"):
        assert 0.0 <= figures[key] <= 1.0
    # The generated catalog is easy for word n-grams: a working pipeline scores far above chance (1/27).
    assert figures["tfidf_macro_f1"] > 0.3 and figures["stack_macro_f1"] > 0.3
    assert figures["rows"] == {"train": 400, "test": 100}
    assert figures["within_budget"] is True
    # Table 1: one row per level-1 model, the stack, and the reference
    table = [line for line in lines if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == [
        "model",
        "tfidf",
        "transformer",
        "stack",
        "reference",
    ]
    # the models were saved by mmpc's own training functions
    assert sorted(p.name for p in (tmp_path / "models" / "tfidf").iterdir()) == ["fold1", "fold2", "fold3"]
    assert (tmp_path / "models" / "tfidf" / "fold1" / "model.safetensors").is_file()
    assert (tmp_path / "models" / "transformer" / "fold2" / "tokenizer").is_dir()
    assert (tmp_path / "models" / "reference" / "model.safetensors").is_file()


def test_default_split_is_announced(csvs, tiny_recipe, tmp_path):
    train, _ = csvs
    proc = _run(
        "--data", train, "--recipe", tiny_recipe, "--budget-minutes", "1", "--threads", "1", "--limit", "300"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "split by a hash of each row" in proc.stdout and "--limit 300" in proc.stdout
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert rows["train"] == 300 and 0 < rows["test"] <= 75


def test_bad_csv_names_file_and_column(csvs, tmp_path):
    train, test = csvs
    bad = tmp_path / "bad.csv"
    bad.write_text("title,prdtypecode\nsomething,10\n")
    proc = _run("--train", bad, "--test", test)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "missing column(s) ['text']" in proc.stderr
    proc = _run("--train", train)
    assert proc.returncode == 2 and "both --train and --test" in proc.stderr
