"""A published model carries the inference code it needs and names only the libraries that code
imports: it loads from the registry and answers in a process where ``import mmpc`` fails, and MLflow
writes a Dockerfile for it. Inference runs on the device a setting asks for."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch

from mmpc import packaging, serving

# Answers the first two products of the catalog, from the registry, where mmpc cannot be imported.
PROBE = """
import json, sys
try:
    import mmpc
except ImportError:
    pass
else:
    sys.exit("mmpc is importable here: " + mmpc.__file__)
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/mmpc-ensemble@champion")
out = model.predict(pd.read_json(sys.argv[1], orient="split"))  # a file: the request with its photos
print(json.dumps(out[["prdtypecode", "probability"]].to_dict(orient="list")))
"""


def _request(pipeline_run) -> pd.DataFrame:
    from mmpc.pipeline import request_example

    catalog = pipeline_run["catalog"]
    from mmpc.catalog import read_catalog

    return request_example(read_catalog(catalog).split("test"), n=2)


def _without_mmpc(tmp_path: Path, uri: str) -> dict[str, str]:
    """The venv's libraries but not mmpc: no site initialisation (so no editable-install hook), the
    venv's site-packages on the path, a working folder outside the checkout."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(site.getsitepackages()),
        "MLFLOW_TRACKING_URI": uri,
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow
def test_the_champion_answers_where_mmpc_is_not_installed(pipeline_run, e2e_store, tmp_path):
    request = _request(pipeline_run)
    expected = mlflow.pyfunc.load_model("models:/mmpc-ensemble@champion").predict(request)
    (tmp_path / "probe.py").write_text(PROBE)
    request.to_json(tmp_path / "request.json", orient="split")
    done = subprocess.run(
        [sys.executable, "-S", "probe.py", "request.json"],
        cwd=tmp_path,
        env=_without_mmpc(tmp_path, pipeline_run["uri"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["prdtypecode"] == expected["prdtypecode"].tolist()
    assert answer["probability"] == pytest.approx(expected["probability"].tolist(), rel=1e-6)


@pytest.mark.slow
def test_the_logged_model_holds_its_code_and_lean_requirements(pipeline_run, e2e_store, tmp_path):
    local = Path(
        mlflow.artifacts.download_artifacts("models:/mmpc-ensemble@champion", dst_path=str(tmp_path))
    )
    mlmodel = (local / "MLmodel").read_text()
    assert "code: code" in mlmodel
    assert (local / "code" / "mmpc" / "serving.py").is_file()
    assert (
        not (local / "code" / "mmpc" / "training").exists()
        and not (local / "code" / "mmpc" / "pipeline").exists()
    )
    names = {line.split("==")[0].lower() for line in (local / "requirements.txt").read_text().split()}
    assert {"torch", "transformers", "timm", "lightgbm", "mlflow", "pandas"} <= names
    assert not names & {"mmpc", "prefect", "boto3", "psycopg2-binary", "sqlalchemy", "fastapi"}


@pytest.mark.slow
def test_mlflow_writes_a_dockerfile_for_the_champion(pipeline_run, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": pipeline_run["uri"]}
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    done = subprocess.run(
        [str(mlflow_cli), "models", "generate-dockerfile", "-m", "models:/mmpc-ensemble@champion",
         "-d", str(tmp_path / "docker"), "--env-manager", "virtualenv"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    dockerfile = (tmp_path / "docker" / "Dockerfile").read_text()
    assert "mlflow" in dockerfile and (tmp_path / "docker" / "model_dir").is_dir()
    assert "requirements.txt" in "".join(p.name for p in (tmp_path / "docker" / "model_dir").rglob("*"))


def test_the_inference_closure_leaves_training_and_orchestration_behind(tmp_path):
    modules, libraries = packaging.inference_closure()
    assert "mmpc.serving" in modules and "mmpc.models.runners" in modules and "mmpc.models.tfidf" in modules
    assert not [m for m in modules if m.startswith(("mmpc.training", "mmpc.pipeline", "mmpc.scoring"))]
    assert not libraries & {"prefect", "boto3", "botocore", "psycopg2", "sqlalchemy", "filelock"}
    code = packaging.write_code(tmp_path)
    assert (code / "kinds" / "text.py").is_file() and not (code / "cli.py").exists()


def test_the_device_setting_forces_the_cpu_or_fails_clearly(monkeypatch):
    context = SimpleNamespace(model_config={"device": "cpu"})
    monkeypatch.setenv(serving.DEVICE_ENV, "cuda")
    assert serving._device(context) == torch.device("cpu")  # the load's own model_config wins
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            serving._device(SimpleNamespace(model_config={}))
    monkeypatch.setenv(serving.DEVICE_ENV, "cpu")
    assert serving._device(SimpleNamespace(model_config=None)) == torch.device("cpu")
    monkeypatch.delenv(serving.DEVICE_ENV)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert serving._device(SimpleNamespace(model_config={"device": "auto"})).type == expected


@pytest.mark.slow
def test_loading_a_model_in_mmpcs_own_process_leaves_its_imports_alone(e2e_store):
    """MLflow puts a model's code first on sys.path for good; mmpc's own loads (scoring, promotion)
    put the path back, so later imports and the worker processes a flow starts find mmpc itself."""
    path = list(sys.path)
    with packaging.own_imports():
        model = mlflow.pyfunc.load_model("models:/mmpc-ensemble@champion")
    assert sys.path == path and not any("artifacts/code" in p for p in sys.path)
    assert len(model.predict(pd.DataFrame({"designation": ["Livre"]}))) == 1
    import mmpc.models.pretrained  # not in the model's code: found in mmpc itself

    assert "artifacts" not in mmpc.models.pretrained.__file__


def test_each_work_folder_gets_its_own_store_in_one_process(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI: the store configure chose for one work
    folder must not stick to the next (a user's own MLFLOW_TRACKING_URI still wins)."""
    from mmpc import tracking

    first = tracking.configure(tmp_path / "a")
    assert tracking.configure(tmp_path / "b") != first and "/b/" in mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "user.db"))
    assert tracking.configure(tmp_path / "c") == "sqlite:///" + str(tmp_path / "user.db")
