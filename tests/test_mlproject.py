"""MLflow Projects: the MLproject's typed entry points (each an mmpc command, parsed by the entry
layer), its environment files against pyproject's pins, and ``mlflow run . -e <entry> --env-manager
local`` for every level-1 model, fusion and stacking on a small catalog (the ``retrain`` entry runs
against the servers in tests/test_infra_local.py)."""

from __future__ import annotations

import json
import shlex
import tomllib

import pytest
import yaml
from mlflow.projects import _project_spec
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from servers import REPO, mlflow_run, user_env

from flows.__main__ import COMMANDS as flows_commands
from mmpc import arguments as a
from mmpc import cli, project, run_names
from mmpc.demo_catalog import write_demo_catalog
from mmpc.recipe import RecipeError

LEVEL1 = ("flaubert", "camembert", "seresnext")
ENTRIES_NO_EPOCHS = ("tfidf",)  # models without epochs
ENTRIES = {*LEVEL1, *ENTRIES_NO_EPOCHS, "fusion", "stack", "retrain", "train", "main"}


def _pins() -> list[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return sorted(str(Requirement(d)) for d in deps)


def test_conda_and_python_env_files_carry_pyprojects_pins():
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(str(Requirement(r)) for r in pip) == _pins()
    assert "python=3.11" in conda["dependencies"]
    python_env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert sorted(str(Requirement(r)) for r in python_env["dependencies"]) == _pins()
    assert python_env["python"] == "3.11"


def test_mlproject_has_typed_entry_points_for_every_step():
    spec = _project_spec.load_project(str(REPO))
    assert spec.env_type == "conda_env" and spec.env_config_path.endswith("conda.yaml")
    assert set(spec._entry_points) == ENTRIES
    for name in ENTRIES:
        entry = spec.get_entry_point(name)
        params = entry.parameters
        assert params["catalog"].type == "path" and params["catalog"].default is None, name
        assert {"recipe", "workdir", "overrides", "device"} <= set(params), name
        # every declared parameter reaches the command
        assert all("{" + p + "}" in entry.command for p in params), name
    for name in (*LEVEL1, "fusion", "train"):
        assert spec.get_entry_point(name).parameters["epochs"].type == "float"
    command = spec.get_entry_point("fusion").compute_command(
        {"catalog": str(REPO), "overrides": "models.fusion.mode=add stacking.folds=3"}, str(REPO)
    )
    assert "--overrides 'models.fusion.mode=add stacking.folds=3'" in command


def _parsed(entry: str, params: dict[str, str]) -> object:
    """An entry point's command as mmpc's entry layer parses it: the command's typed arguments."""
    spec = _project_spec.load_project(str(REPO)).get_entry_point(entry)
    argv = shlex.split(spec.compute_command({"catalog": str(REPO), **params}, str(REPO)))
    assert argv[:2] == ["python", "-m"] and argv[2] in ("mmpc.cli", "flows"), argv
    commands = flows_commands if argv[2] == "flows" else cli.COMMANDS
    namespace = cli.build_parser(commands).parse_args(argv[3:])
    return a.from_namespace(commands[namespace.command].args, namespace)


def test_entry_points_are_mmpc_commands_with_their_typed_arguments():
    args = _parsed("flaubert", {"overrides": "a.b=1 c='x y'", "epochs": "2", "device": "cuda"})
    assert isinstance(args, a.TrainArgs) and (args.model, args.recipe) == ("flaubert", "demo")
    assert args.recipe_overrides() == {
        "a.b": 1,
        "c": "x y",
        "device": "cuda",
        "models.flaubert.train.epochs": 2,
    }
    assert _parsed("tfidf", {}).recipe_overrides() == {}
    assert _parsed("train", {"model": "tfidf"}).model == "tfidf"
    with pytest.raises(a.ArgumentError, match="whole number"):
        _parsed("flaubert", {"epochs": "1.5"}).recipe_overrides()
    with pytest.raises(RecipeError, match=r"expected key\.path=value"):
        _parsed("flaubert", {"overrides": "epochs"}).recipe_overrides()
    assert _parsed("fusion", {"inputs": "flaubert=3 seresnext=@champion"}).inputs == [
        "flaubert=3",
        "seresnext=@champion",
    ]
    assert _parsed("fusion", {}).inputs is None  # "": every input at @candidate
    stack = _parsed("stack", {"promote": "false", "models": "tfidf=1"})
    assert isinstance(stack, a.StackArgs) and not stack.promotes and stack.models == ["tfidf=1"]
    assert _parsed("stack", {}).promotes and _parsed("stack", {}).models is None
    for entry in ("retrain", "main"):
        retrain = _parsed(entry, {"models": "flaubert seresnext", "device": "cpu"})
        assert isinstance(retrain, a.RetrainArgs)
        params = retrain.flow_parameters()
        assert params["models"] == ["flaubert", "seresnext"] and params["overrides"] == {"device": "cpu"}
    assert _parsed("retrain", {}).flow_parameters()["overrides"] is None
    assert project.refs("flaubert=3 seresnext=@champion") == {"flaubert": "3", "seresnext": "@champion"}
    with pytest.raises(RecipeError, match="NAME=VERSION"):
        project.refs("flaubert")


def test_project_run_id_is_taken_out_of_the_environment_and_becomes_the_parent(monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "a" * 32)
    monkeypatch.setenv("MLFLOW_RUN_CONTEXT", json.dumps({"team": "catalog"}))
    import os

    with project.project_run() as parent:
        assert parent == "a" * 32 and "MLFLOW_RUN_ID" not in os.environ
        context = json.loads(os.environ["MLFLOW_RUN_CONTEXT"])
        assert context == {"team": "catalog", "mlflow.parentRunId": parent, "mmpc.project_run_id": parent}
    assert json.loads(os.environ["MLFLOW_RUN_CONTEXT"]) == {"team": "catalog"}
    with project.project_run() as parent:  # outside `mlflow run`: nothing to nest under
        assert parent is None


# -- mlflow run, for real --------------------------------------------------------------------------
FAST = "models.fusion.train.patience=1 stacking.num_boost_round=40 stacking.folds=3"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every step through ``mlflow run``, in pipeline order, into one SQLite store."""
    root = tmp_path_factory.mktemp("mlproject")
    catalog = write_demo_catalog(root / "catalog", size=300, seed=3)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = user_env(MLFLOW_TRACKING_URI=uri)
    base = {"catalog": catalog, "workdir": root / "work", "overrides": FAST}
    done = {}
    for entry in (*LEVEL1, "fusion"):
        done[entry] = mlflow_run(entry, {**base, "epochs": 1}, env, experiment="mmpc/catalog")
    done["tfidf"] = mlflow_run("tfidf", base, env, experiment="mmpc/catalog")
    done["stack"] = mlflow_run("stack", base, env, experiment="mmpc/catalog")
    # a mistake in the parameters: the entry point fails with a message, and says where
    done["bad"] = mlflow_run(
        "seresnext", {**base, "overrides": "models.seresnext.train.epoch=1"}, env, experiment="mmpc/catalog"
    )
    for entry, proc in done.items():
        if entry != "bad":
            assert proc.returncode == 0, f"{entry}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {"procs": done, "client": MlflowClient(uri, registry_uri=uri), "uri": uri}


def _project_runs(client: MlflowClient, status: str = "FINISHED") -> dict[str, object]:
    """The project runs (those ``mlflow run`` made) of one status, by entry point."""
    exp = client.get_experiment_by_name("mmpc/catalog")
    found = client.search_runs([exp.experiment_id], f"attributes.status = '{status}'", max_results=1000)
    return {
        r.data.tags["mlflow.project.entryPoint"]: r
        for r in found
        if "mlflow.project.entryPoint" in r.data.tags
    }


@pytest.mark.slow
def test_each_entry_point_nests_its_own_run_under_the_project_run(runs):
    client = runs["client"]
    projects = _project_runs(client)
    assert set(projects) == {*LEVEL1, *ENTRIES_NO_EPOCHS, "fusion", "stack"}
    for name in (*LEVEL1, "fusion"):
        proj = projects[name]
        assert proj.data.params["epochs"] == "1" and proj.data.params["recipe"] == "demo"
        step = client.get_run(proj.data.tags["mmpc.step_run_id"])
        assert step.info.status == "FINISHED" and run_names.what(step.info.run_name) == name
        assert step.data.tags["mlflow.parentRunId"] == proj.info.run_id
        assert step.data.tags["mmpc.project_run_id"] == proj.info.run_id
        assert step.info.experiment_id == proj.info.experiment_id
        # the step's run holds the recipe and the figures; the project run, its outcome
        assert step.data.params["model"] == name and "test_macro_f1" in step.data.metrics
        assert proj.data.metrics["test_macro_f1"] == pytest.approx(step.data.metrics["test_macro_f1"])
        mv = client.get_model_version(f"mmpc-{name}", proj.data.tags["mmpc.registered_version"])
        assert mv.run_id == step.info.run_id and proj.data.tags["mmpc.registered_model"] == f"mmpc-{name}"
        assert client.get_model_version_by_alias(f"mmpc-{name}", "candidate").version == mv.version


@pytest.mark.slow
def test_fusion_and_stack_entry_points_take_the_candidates(runs):
    client = runs["client"]
    fusion = client.get_model_version_by_alias("mmpc-fusion", "candidate")
    for name in LEVEL1:
        assert fusion.tags[f"mmpc.input.{name}"] == str(
            client.get_model_version_by_alias(f"mmpc-{name}", "candidate").version
        )
    champion = client.get_model_version_by_alias("mmpc-ensemble", "champion")
    for name in (*LEVEL1, *ENTRIES_NO_EPOCHS, "fusion"):
        assert champion.tags[f"mmpc.member.{name}"] == "1"
    stack_project = _project_runs(client)["stack"]
    assert stack_project.data.tags["mmpc.promoted"] == "True"
    assert stack_project.data.tags["mmpc.registered_version"] == str(champion.version)
    assert "| stack" in runs["procs"]["stack"].stdout


@pytest.mark.slow
def test_no_run_is_left_running_or_empty(runs):
    client = runs["client"]
    everything = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert {r.info.status for r in everything} <= {"FINISHED", "FAILED"}
    # one project run and one step run per successful entry point, the failed project run alone
    assert len(everything) == 2 * 6 + 1
    for run in everything:
        assert run.data.params, f"run {run.info.run_id} has no params"


@pytest.mark.slow
def test_a_bad_parameter_fails_the_project_run_with_a_message_naming_it(runs):
    proc = runs["procs"]["bad"]
    assert proc.returncode != 0
    assert "error: " in proc.stderr and "models.seresnext.train.epoch" in proc.stderr
    failed = _project_runs(runs["client"], "FAILED")
    assert list(failed) == ["seresnext"] and "mmpc.step_run_id" not in failed["seresnext"].data.tags
