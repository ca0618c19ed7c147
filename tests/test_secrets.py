"""Secrets in the environment never reach what a run writes: ``mmpc train`` and ``mmpc stack`` run with
fake credentials of every kind set, then every file under the work folder (the MLflow SQLite store's
bytes, artifacts, registered models, logs), every run's params and tags, every version's tags and the
commands' output are searched for them."""

from __future__ import annotations

import base64
import subprocess
import sys
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient
from servers import user_env

from mmpc.demo_catalog import write_demo_catalog

# Distinctive fake values: none can occur by chance in a run's output.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEQ7X2Z9LEAKTEST",
    "AWS_SECRET_ACCESS_KEY": "fakeSecretKey/Qz81+LeakTest0wJalrXUtnFEMI",
    "AWS_SESSION_TOKEN": "FakeSessionToken0LeakTestIQoJb3JpZ2luX2VjEJr",
    "PGPASSWORD": "pg-pass-LeakTest-5521",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-LeakTest-9034",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-LeakTest-7781",
    "DATABASE_URL": "postgresql://mmpc:db-pass-LeakTest-3310@db.invalid:5432/mlflow",
    "MMPC_BACKEND_STORE_URI": "postgresql://mlflow:store-pass-LeakTest-4471@127.0.0.1/mlflow",
    "PREFECT_API_KEY": "pnu_FakePrefectKeyLeakTest6642",
    "HF_TOKEN": "hf_FakeHubTokenLeakTest2290",
    "GITHUB_TOKEN": "ghp_FakeGithubTokenLeakTest8817",
}
# The secret part of each value (a URL's password), which must not appear alone either.
NEEDLES = {
    **{k: v for k, v in SECRETS.items() if "://" not in v},
    "DATABASE_URL": "db-pass-LeakTest-3310",
    "MMPC_BACKEND_STORE_URI": "store-pass-LeakTest-4471",
}
MARKER = "424242"  # a recipe value that must reach the store: proves the search reads what was written


def _forms(value: str) -> set[bytes]:
    """The value as written raw, URL-quoted or base64-encoded."""
    raw = value.encode()
    return {raw, quote(value, safe="").encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)}


def _found(blob: bytes) -> list[str]:
    return [name for name, value in NEEDLES.items() if any(f in blob for f in _forms(value))]


@pytest.mark.slow
@pytest.mark.robustness(
    "security",
    "fake secrets in the environment (AWS keys and session token, database passwords in URLs and "
    "PGPASSWORD, MLflow, Prefect, Hugging Face and GitHub tokens) while mmpc train and mmpc stack run",
    "no value (raw, URL-quoted or base64) in any file under the work folder (MLflow DB, artifacts, "
    "logs), run params and tags, version tags or the commands' output",
)
def test_secrets_in_the_environment_are_never_written(tmp_path, observed):
    catalog = write_demo_catalog(tmp_path / "catalog", size=600, seed=1)
    workdir = tmp_path / "work"
    env = user_env(**SECRETS)
    common = ["--catalog", str(catalog), "--workdir", str(workdir), "--set", f"seed={MARKER}"]
    commands = [
        ["train", "tfidf", *common],
        ["stack", "--models", "tfidf=@candidate", *common, "--set", "stacking.num_boost_round=50"],
    ]
    output = b""
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "mmpc.cli", "-v", *argv],  # -v: debug logs are searched too
            env=env,
            capture_output=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        output += done.stdout + done.stderr
    assert not _found(output), f"secrets in the commands' output: {_found(output)}"

    files = [p for p in workdir.rglob("*") if p.is_file()]
    leaks = {str(p.relative_to(workdir)): _found(p.read_bytes()) for p in files}
    assert not {p: names for p, names in leaks.items() if names}
    store = workdir / "mlflow.db"
    assert MARKER.encode() in store.read_bytes()  # the search does see the store's contents

    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2
    written = [str(r.data.params) + str(r.data.tags) for r in runs]
    written += [str(mv.tags) for mv in client.search_model_versions()]
    written += [str(m.tags) for m in client.search_registered_models()]
    assert not _found("\n".join(written).encode())
    observed(
        "none found",
        f"{len(NEEDLES)} secrets searched in every file under the work folder, the runs' params and "
        "tags, every version's tags and the commands' output",
    )
