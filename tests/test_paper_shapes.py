"""The paper's architectures at their published sizes run end to end on the CPU.

``mlproject/paper-shapes.yaml`` builds FlauBERT-base-cased, CamemBERT-base with the ``flatten`` head
over 256 tokens, SE-ResNeXt-50 at 224 px and the Conv1d fusion from configs, with random weights. Each
trains for 2 steps on a small generated catalog through the real ``mmpc`` command, then the stack is
fit and published and ``mlflow models serve`` answers a real request: every real-size shape is tried
before a GPU run. About 520 CPU-seconds (6 to 10 minutes on 2 cores); one command peaks at ~9 GB.
"""

from __future__ import annotations

import base64
import json
import math
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from e2e import check_predictions
from mlflow.tracking import MlflowClient
from safetensors import safe_open
from servers import BIN, served_model, user_env

from mmpc.recipe import load_recipe

# The first test carries the whole real-size pipeline (about 10 minutes on 2 cores, more when busy).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

RECIPE = "paper-shapes"
# Few products, yet the recipe's splits give the stack split 26 of the 27 classes (72 rows).
CATALOG_SIZE = 150
LEVEL1 = ("flaubert", "camembert", "seresnext")
STEP_TIMEOUT = 600  # seconds for one command; the whole module needs about 10 minutes on 2 cores

# The published checkpoints' config.json values the backbones must be built with.
BACKBONE_CONFIGS = {
    "flaubert": {
        "emb_dim": 768,
        "n_layers": 12,
        "n_heads": 12,
        "max_position_embeddings": 512,
        "vocab_size": 68729,
        "gelu_activation": True,
        "sinusoidal_embeddings": False,
        "layer_norm_eps": 1e-6,
    },
    "camembert": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 514,
        "vocab_size": 32005,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
    },
}
# Tensor shapes that only the real sizes give (27 product type codes).
TENSOR_SHAPES = {
    "flaubert": {
        "backbone.embeddings.weight": [68729, 768],
        "backbone.position_embeddings.weight": [512, 768],
        "head.net.1.weight": [27, 768],
    },
    "camembert": {
        "backbone.embeddings.word_embeddings.weight": [32005, 768],
        "backbone.embeddings.position_embeddings.weight": [514, 768],
        "head.net.1.weight": [768, 256 * 768],  # the flatten head: Linear(256 * 768, 768)
        "head.net.4.weight": [27, 768],
    },
    "seresnext": {"head.1.weight": [27, 2048]},
    "fusion": {"project.weight": [768, 2048, 1], "classifier.1.weight": [27, 3 * 768]},
}
# Values in each saved tensor file: FlauBERT-base 138M, CamemBERT-base 110M + the flatten head's
# 151M, SE-ResNeXt-50 25.6M (with its batch-norm statistics), the fusion head 1.6M.
TENSOR_ELEMENTS = {
    "flaubert": 138_253_851,
    "camembert": 261_047_835,
    "seresnext": 25_634_496,
    "fusion": 1_635_867,
}


@dataclass
class Platform:
    catalog: Path
    workdir: Path
    logs: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def client(self) -> MlflowClient:
        # Explicit URIs: another test of the session may have set mlflow's global tracking URI.
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def _mmpc(platform: Platform, step: str, *args: str) -> None:
    """One ``mmpc`` command as a user runs it; its output goes to a log named after the step."""
    log = platform.logs / f"{step}.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(
            [str(BIN / "mmpc"), *args],
            env=user_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=STEP_TIMEOUT,
        )
    platform.seconds[step] = time.perf_counter() - started
    assert done.returncode == 0, f"mmpc {' '.join(args)} failed:\n{log.read_text()[-4000:]}"


def _pipeline(platform: Platform) -> None:
    """Catalog, the three level-1 models, fusion over their @candidate versions, stack and publish."""
    common = ["--catalog", str(platform.catalog), "--recipe", RECIPE, "--workdir", str(platform.workdir)]
    _mmpc(
        platform, "catalog", "demo-catalog", "--size", str(CATALOG_SIZE), "--seed", "0", str(platform.catalog)
    )
    for name in LEVEL1:
        _mmpc(platform, name, "train", name, *common)
    inputs = [f"{name}=@candidate" for name in LEVEL1]
    _mmpc(platform, "fusion", "train", "fusion", *common, "--inputs", *inputs)
    _mmpc(platform, "stack", "stack", *common)


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    """The pipeline run once; its several GB of weights are removed afterwards."""
    root = tmp_path_factory.mktemp("paper-shapes")
    result = Platform(root / "catalog", root / "work", root / "logs")
    result.logs.mkdir()
    started = time.perf_counter()
    _pipeline(result)
    result.seconds["pipeline"] = time.perf_counter() - started
    yield result
    shutil.rmtree(result.workdir, ignore_errors=True)


def _members(client: MlflowClient) -> Path:
    """The champion ensemble's level-1 folders (a local store's artifacts are read in place)."""
    champion = client.get_model_version_by_alias("mmpc-ensemble", "champion")
    location = client.get_logged_model(champion.source.removeprefix("models:/")).artifact_location
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location))
    return local / "artifacts" / "ensemble" / "members"


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Names and shapes from the safetensors header, without loading the weights."""
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict


def test_every_model_trained_two_steps_and_registered(platform):
    client, recipe = platform.client(), load_recipe(RECIPE)
    for name in (*LEVEL1, "fusion"):
        mv = client.get_model_version_by_alias(f"mmpc-{name}", "candidate")
        run = client.get_run(mv.run_id)
        metrics = run.data.metrics
        assert run.info.status == "FINISHED"
        assert run.data.params["train.max_steps"] == "2", name
        assert metrics["epochs_run"] == 1 and math.isfinite(metrics["epoch_train_loss"]), name
        if recipe.model(name).train.schedule == "linear":  # the decay spans the 2 steps, all taken
            assert metrics["epoch_lr"] == 0.0, name
        platform.seconds[f"{name} fit"] = metrics["train_seconds"]
    champion = client.get_model_version_by_alias("mmpc-ensemble", "champion")
    assert {champion.tags[f"mmpc.member.{n}"] for n in (*LEVEL1, "fusion")} == {"1"}


def test_published_models_have_the_papers_shapes(platform):
    members = _members(platform.client())
    for name, expected in BACKBONE_CONFIGS.items():
        config = json.loads((members / name / "backbone" / "config.json").read_text())
        assert {k: config[k] for k in expected} == expected, name
    meta = {name: json.loads((members / name / "meta.json").read_text()) for name in TENSOR_SHAPES}
    assert (meta["camembert"]["head"], meta["camembert"]["max_len"]) == ("flatten", 256)
    assert (meta["flaubert"]["head"], meta["flaubert"]["max_len"]) == ("flaubert", 256)
    image = meta["seresnext"]
    assert (image["arch"], image["num_features"], image["transform"]["img_size"]) == (
        "legacy_seresnext50_32x4d",
        2048,
        224,
    )
    assert meta["fusion"]["image_dim"] == 2048 and meta["fusion"]["text_dims"] == [768, 768]
    for name, shapes in TENSOR_SHAPES.items():
        saved = _tensor_shapes(members / name / "model.safetensors")
        assert {k: saved[k] for k in shapes} == shapes, name
        assert sum(math.prod(s) for s in saved.values()) == TENSOR_ELEMENTS[name], name


def test_served_ensemble_answers_a_request(platform):
    image = next((platform.catalog / "images" / "image_train").glob("*.jpg"))
    rows = [
        {
            "designation": "Coussin décoratif velours 45x45",
            "description": "<p>Housse &eacute;l&eacute;gante</p>",
        },
        {"designation": "Lot de 3 romans policiers", "image": base64.b64encode(image.read_bytes()).decode()},
    ]
    env = user_env(MLFLOW_TRACKING_URI=platform.uri)
    started = time.perf_counter()
    with served_model(
        "models:/mmpc-ensemble@champion", env, platform.logs / "serve.log", timeout=300
    ) as server:
        platform.seconds["serve start"] = time.perf_counter() - started
        resp = server.invoke({"dataframe_records": rows, "params": {"top_k": 3}})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert len(predictions) == len(rows)
    check_predictions(predictions, k=3)
    assert [p["image_status"] for p in predictions] == ["missing", "ok"]
    _report(platform)


def _report(platform: Platform) -> None:
    """Wall time per step and the largest child process's peak memory, for the CI log."""
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    lines = [f"  {step:16s} {seconds:7.1f} s" for step, seconds in platform.seconds.items()]
    print("paper shapes on the CPU:", *lines, f"  peak memory of one command: {peak_gb:.1f} GB", sep="\n")
