"""The paper's recipe shape on checkpoint folders, end to end and offline: CamemBERT and FlauBERT
checkpoints (real classes, tiny size) and local image weights, trained through ``mmpc train``, stacked
and published through ``mmpc stack``, and the champion served by ``mlflow models serve``."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from checkpoints import camembert_checkpoint, flaubert_checkpoint, timm_weights
from e2e import check_predictions, serve
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from servers import user_env
from transformers import CamembertTokenizer, FlaubertTokenizer

from mmpc.demo_catalog import write_demo_catalog
from mmpc.models.tokenizer import load_tokenizer
from mmpc.recipe import resolve_path

# The module trains five models through the real command line: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TEXT_TRAIN = {"batch_size": 16, "epochs": 2, "lr": 5.0e-4, "head_lr": 3.0e-3, "patience": 2}


def _recipe(folder: Path, ckpts: dict[str, Path]) -> Path:
    """The demo recipe with the paper's two checkpoints and local ImageNet-style weights."""
    data = yaml.safe_load(resolve_path("demo").read_text())
    data["name"] = "checkpoints"
    models = data["models"]
    for name in ("flaubert", "camembert"):
        models[name] = {
            "kind": "text",
            "pretrained": str(ckpts[name]),
            "backbone_type": name,
            "head": "flaubert" if name == "flaubert" else "cls",
            "max_len": 64,
            "train": TEXT_TRAIN,
        }
    del models["tfidf"]
    models["seresnext"].update(
        pretrained=str(ckpts["image"]), train={**models["seresnext"]["train"], "epochs": 2}
    )
    models["fusion"]["train"]["epochs"] = 3
    data["stacking"]["num_boost_round"] = 60
    path = folder / "checkpoints.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _mmpc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "mmpc.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    catalog = write_demo_catalog(root / "catalog", size=600, seed=11)
    x = pd.read_csv(catalog / "X_train_update.csv", keep_default_na=False)
    texts = (x["designation"] + " " + x["description"]).tolist()
    ckpts = {
        "camembert": camembert_checkpoint(root / "hub" / "camembert-base", texts, hidden=48, vocab=800),
        "flaubert": flaubert_checkpoint(root / "hub" / "flaubert_base_cased", texts, dim=48, vocab=1200),
        "image": timm_weights(root / "hub" / "test_byobnet.safetensors", "test_byobnet"),
    }
    recipe, work = _recipe(root, ckpts), root / "work"
    env = user_env(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}")
    common = ["--catalog", str(catalog), "--recipe", str(recipe), "--workdir", str(work)]
    for name in ("flaubert", "camembert", "seresnext"):
        _mmpc("train", name, *common, env=env)
    inputs = ["flaubert=@candidate", "camembert=@candidate", "seresnext=@candidate"]
    _mmpc("train", "fusion", *common, "--inputs", *inputs, env=env)
    stack = _mmpc("stack", *common, env=env)
    return {"root": root, "catalog": catalog, "work": work, "env": env, "ckpts": ckpts, "stack": stack.stdout}


def _client(published: dict) -> MlflowClient:
    # Explicit URIs: another test of the session may have set mlflow's global registry URI.
    uri = published["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _download(published: dict, name: str, version: str) -> Path:
    """A registered version's model folder, read through this module's own store."""
    client = _client(published)
    source = client.get_model_version(f"mmpc-{name}", version).source  # models:/m-<logged model id>
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    dst = published["root"] / f"dl-{name}"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst)))


def test_each_text_model_is_registered_with_its_checkpoint_tokenizer(published):
    """The registered folder holds the checkpoint's own tokenizer: same class, same vocabulary, same ids."""
    client = _client(published)
    sample = "Coussin décoratif velours 45x45, l'ensemble du salon"
    for name, cls in (("flaubert", FlaubertTokenizer), ("camembert", CamembertTokenizer)):
        version = client.get_model_version_by_alias(f"mmpc-{name}", "candidate")
        run = client.get_run(version.run_id)
        assert run.data.params["pretrained"] == str(published["ckpts"][name])
        folder = _download(published, name, version.version)
        served, original = (
            load_tokenizer(next(folder.rglob("tokenizer"))),
            load_tokenizer(published["ckpts"][name]),
        )
        assert isinstance(served, cls) and served.get_vocab() == original.get_vocab()
        assert served(sample)["input_ids"] == original(sample)["input_ids"]
        meta = json.loads(next(folder.rglob("meta.json")).read_text())
        assert meta["backbone"] == str(published["ckpts"][name])


def test_the_ensemble_is_published_and_beats_chance(published):
    table = published["stack"]
    assert "| stack" in table and ": promoted (" in table
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in table.splitlines()[2:]
        if "|" in line
    }
    assert set(rows) >= {"flaubert", "camembert", "seresnext", "fusion", "stack"}
    assert rows["stack"] > 1 / 27 * 3


def test_image_model_started_from_the_local_weights(published):
    """Its convolutions stay near the file's after a short training, far from another random start."""
    import timm

    client = _client(published)
    version = client.get_model_version_by_alias("mmpc-seresnext", "candidate")
    folder = _download(published, "seresnext", version.version)
    trained = load_file(str(next(folder.rglob("model.safetensors"))))
    start = load_file(str(published["ckpts"]["image"]))
    other = timm.create_model("test_byobnet", pretrained=False, num_classes=0).state_dict()
    convs = [k for k, v in start.items() if v.ndim == 4]
    assert convs and all(f"backbone.{k}" in trained for k in convs)

    def distance(a, b) -> float:
        return float(sum((a[k] - b[k]).norm() / b[k].norm() for k in convs) / len(convs))

    moved = distance({k: trained[f"backbone.{k}"] for k in convs}, start)
    assert moved < 0.5 < distance(other, start)


def test_served_champion_answers_from_the_checkpoints(published):
    image = sorted((published["catalog"] / "images" / "image_train").glob("*.jpg"))[0]
    payload = {
        "dataframe_split": {
            "columns": ["designation", "description", "image"],
            "data": [
                [
                    "Coussin décoratif velours 45x45, l'ensemble",
                    "Housse élégante",
                    base64.b64encode(image.read_bytes()).decode(),
                ],
                ["Console de jeux portable", None, None],
            ],
        }
    }
    uri = published["env"]["MLFLOW_TRACKING_URI"]
    with serve("models:/mmpc-ensemble@champion", uri, published["work"]) as server:
        resp = server.invoke(payload)
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    check_predictions(predictions, k=3)
    assert [p["image_status"] for p in predictions] == ["ok", "missing"]
