"""Two retrains at once against one registry on a real MLflow tracking server: both finish, @champion
ends on the better ensemble, the other stays a candidate, and nothing is left torn (no version without
its tags, no lock left behind, no run left RUNNING).

Each contestant is one process running ``mmpc train`` then ``mmpc stack`` (promotion included) through
the command line's own entry point; they differ by the TF-IDF model's regularisation, so one is worse.
Promotion moves are serialised by the registry-side lease of ``mmpc.promotion`` (a tag on the
registered model, set then read back), the lock that works across machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient
from servers import BIN, background_server, user_env

from mmpc import tags as tag
from mmpc.demo_catalog import write_demo_catalog

CONTESTANT = r"""
import contextlib, io, json, sys
from mmpc.cli import main

common = sys.argv[1:]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["train", "tfidf", *common]) == 0
version = json.loads(out.getvalue()[out.getvalue().index("{"):])["version"]
sys.exit(main(["stack", "--models", f"tfidf={version}", *common, "--set", "stacking.num_boost_round=50"]))
"""


@pytest.fixture
def tracking_server(tmp_path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port: SQLite backend, artifacts served by the server."""
    argv = [
        str(BIN / "mlflow"),
        "server",
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    env = user_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with background_server(argv, "/health", env, tmp_path / "mlflow-server.log", "mlflow server") as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.robustness(
    "training",
    "two retrains at once on the same registry (a real MLflow server), one model worse",
    "both finish; @champion on the better ensemble, the other a candidate; every version tagged, no "
    "lock left, no run RUNNING",
)
def test_two_concurrent_retrains_leave_the_better_champion(tmp_path, tracking_server, observed):
    catalog = write_demo_catalog(tmp_path / "catalog", size=600, seed=1)
    env = user_env(MLFLOW_TRACKING_URI=tracking_server)
    contestants = {"good": [], "poor": ["--set", "models.tfidf.C=0.002"]}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONTESTANT,
                "--catalog",
                str(catalog),
                "--workdir",
                str(tmp_path / f"work-{name}"),
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, extra in contestants.items()
    }
    outputs = {name: p.communicate(timeout=900)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outputs[name][-4000:]}"

    client = MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    name = "mmpc-ensemble"
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 2 and all(v.status == "READY" for v in versions)
    for v in versions:  # no version without its tags
        assert {"test_macro_f1", tag.PUBLISH_KEY, "mmpc.member.tfidf", tag.RUN_ID} <= set(v.tags)
    scores = {v.version: float(v.tags["test_macro_f1"]) for v in versions}
    assert len(set(scores.values())) == 2, scores  # one contestant is really worse
    best = max(scores, key=scores.get)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == best
    other = next(v for v in scores if v != best)
    assert client.get_model_version_by_alias(name, "candidate").version in scores
    model = client.get_registered_model(name)
    assert tag.PROMOTION_LOCK not in model.tags  # the lease was given back
    assert json.loads(model.tags[tag.CHAMPION_HISTORY])[-1] == best
    assert len(client.search_model_versions("name = 'mmpc-tfidf'")) == 2

    runs = client.search_runs([client.get_experiment_by_name("mmpc/catalog").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    stack_runs = {r.info.run_id: r for r in runs if r.data.tags[tag.STEP] == "stack"}
    assert stack_runs[champion.run_id].data.tags[tag.PROMOTED] == "True"
    # The other one's decision is recorded too: promoted if it finished first, refused if second.
    assert stack_runs[client.get_model_version(name, other).run_id].data.tags[tag.PROMOTED] in (
        "True",
        "False",
    )
    observed(
        "both exit 0",
        "@champion on the better of the 2 ensembles, which both carry their tags; "
        "the lease released; 4 runs FINISHED",
    )
