"""Descriptions in the MLflow UI: the experiment, every retrain, level-1 and stack run, every registered
model and version; the champion named on ``mmpc-ensemble`` as it moves; the evaluation nested under
its retrain, and the promotion decision on the retrain run."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mmpc import descriptions as d
from mmpc import tags as tag
from mmpc import tracking
from mmpc.cli import main

ENSEMBLE = "mmpc-ensemble"
ML = "workflowType=machine_learning"  # the UI's machine-learning mode, in every link
LINK = "[{name} v{v}](#/models/{name}/versions/{v}?" + ML + ")"


def _link(name: str, version: str) -> str:
    return LINK.format(name=name, v=version)


# --- the markdown builders, without MLflow -----------------------------------------------------------


def _members() -> list[d.Scored]:
    return [
        d.Scored("flaubert", "mmpc-flaubert", "3", 0.71),
        d.Scored("tfidf", "mmpc-tfidf", "2", 0.64),
    ]


def test_a_version_lists_its_score_first_then_its_members_as_links():
    text = d.version_markdown(
        {"test macro-F1": 0.8123, "cross-validated macro-F1": 0.79},
        _members(),
        d.Data("demo", "abcdef1234567890", {"test": 200, "train": 600, "valid": 100}),
        d.RunRef("1", "r" * 32, "stack · seed 0"),
        {"demo.test": d.RunRef("1", "e" * 32, "evaluate mmpc-ensemble v4 test")},
    )
    first, *rest = text.splitlines()
    assert first == "**test macro-F1 0.8123** · cross-validated macro-F1 0.7900"
    body = "\n".join(rest)
    assert f"- {_link('mmpc-flaubert', '3')}: test macro-F1 0.7100" in body
    assert body.index("mmpc-flaubert") < body.index("mmpc-tfidf") < body.index("Data:")
    assert "catalog `demo`, fingerprint `abcdef123456`, splits train 600 · valid 100 · test 200" in body
    assert f"[evaluate mmpc-ensemble v4 test](#/experiments/1/runs/{'e' * 32}?{ML}) (demo.test)" in body
    assert body.index("Data:") < body.index("Evaluation:")


def test_the_ensemble_names_its_champion_and_its_score():
    champion = d.Scored(ENSEMBLE, ENSEMBLE, "2", 0.8)
    text = d.registered_model_markdown(ENSEMBLE, "the classifier.", champion, None, ["1", "2"])
    assert f"**@champion: {_link(ENSEMBLE, '2')}**, test macro-F1 **0.8000**" in text
    assert "Champions so far (oldest first): v1, v2." in text
    assert "**@champion: none yet.**" in d.registered_model_markdown(ENSEMBLE, "x", None, None)
    level1 = d.registered_model_markdown("mmpc-tfidf", "a level-1 model.", None, _members()[1])
    assert "@champion" not in level1 and f"@candidate (latest): {_link('mmpc-tfidf', '2')}" in level1


def test_a_retrain_holds_table1_and_the_decision_with_both_scores():
    rows = [*_members()]
    rows[1].reused = True
    stack = d.Scored("stack", ENSEMBLE, "4", 0.8123, d.RunRef("1", "s" * 32, "stack"))
    decision = d.Promotion(False, "test macro-F1 0.8123 < champion v3's 0.8200", "4", 0.8123, "3", "3", 0.82)
    text = d.retrain_markdown(d.Data("demo"), rows, stack, decision, d.RunRef("1", "e" * 32, "evaluate"))
    assert text.splitlines()[0].startswith(f"**Retrain**: {_link(ENSEMBLE, '4')}, test macro-F1 0.8123")
    assert "not promoted" in text.splitlines()[0]
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == ["model", "flaubert", "tfidf", "**stack**"]
    assert "reused (inputs unchanged)" in table[2] and "**0.8123**" in table[3]
    assert "**not promoted**: test macro-F1 0.8123 < champion v3's 0.8200." in text
    assert "candidate v4: test macro-F1 0.8123; champion before: v3, 0.8200." in text
    assert f"Champion now: {_link(ENSEMBLE, '3')}." in text
    assert f"[evaluate](#/experiments/1/runs/{'e' * 32}?{ML})" in text


def test_level1_and_stack_runs_say_what_they_trained_and_link_their_version():
    data = d.Data("demo", "f" * 64, {"train": 600})
    level1 = d.level1_run_markdown("fusion", "fusion kind", {"test_macro_f1": 0.7}, "5", _members(), data)
    assert f"Registered as {_link('mmpc-fusion', '5')}" in level1 and "test macro-F1 **0.7000**" in level1
    assert f"Reads the embeddings of {_link('mmpc-flaubert', '3')}" in level1
    stack = d.stack_run_markdown(_members(), 0.81, "4", data)
    assert "**Stack** of flaubert, tfidf" in stack and f"Registered as {_link(ENSEMBLE, '4')}" in stack
    assert "| **stack** |" in stack and "catalog `demo`" in stack


def test_the_experiment_says_what_it_holds_and_how_to_read_it():
    text = d.experiment_markdown("rakuten")
    assert "`rakuten`" in text and "Table 1" in text and "mmpc.step = pipeline" in text


def test_a_project_run_links_its_step_and_version():
    step = d.RunRef("2", "a" * 32, "flaubert · seed 0")
    text = d.project_run_markdown(step, "mmpc-flaubert", "3", 0.7, "")
    assert f"[flaubert · seed 0](#/experiments/2/runs/{'a' * 32}?{ML})" in text
    assert f"registered {_link('mmpc-flaubert', '3')} (test macro-F1 0.7000)." in text


# --- the champion named on mmpc-ensemble as it moves (a real store, the real CLI) --------------------


def _ensemble_description() -> str:
    return MlflowClient().get_registered_model(ENSEMBLE).description or ""


def test_the_ensemble_description_follows_promote_and_rollback(registry):
    add, workdir = registry
    v1, v2 = (str(add(score).version) for score in (0.8, 0.85))
    assert main(["promote", v1, "--workdir", str(workdir)]) == 0
    assert f"**@champion: {_link(ENSEMBLE, v1)}**, test macro-F1 **0.8000**" in _ensemble_description()
    assert main(["promote", v2, "--workdir", str(workdir)]) == 0
    text = _ensemble_description()
    assert f"**@champion: {_link(ENSEMBLE, v2)}**, test macro-F1 **0.8500**" in text
    assert "Champions so far (oldest first): v1, v2." in text
    assert main(["rollback", "--workdir", str(workdir)]) == 0
    assert f"**@champion: {_link(ENSEMBLE, v1)}**" in _ensemble_description()


def test_a_decision_recorded_on_a_run_reads_back(registry):
    _, workdir = registry
    with mlflow.start_run(experiment_id=tracking.experiment_id("demo", workdir)) as run:
        pass
    decision = d.Promotion(True, "no champion yet", "1", 0.8, "1")
    d.record_promotion(run.info.run_id, decision)
    assert d.read_promotion(MlflowClient().get_run(run.info.run_id), "1") == decision
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.tags[d.NOTE] == d.experiment_markdown("demo")


def test_a_project_run_is_described_with_its_outcome(registry):
    from mmpc import project
    from mmpc.pipeline import Level1Result

    _, workdir = registry
    experiment = tracking.experiment_id("demo", workdir)
    with mlflow.start_run(experiment_id=experiment, run_name="tfidf · seed 0") as step:
        pass
    with mlflow.start_run(experiment_id=experiment) as outer:
        pass
    result = Level1Result("tfidf", "2", step.info.run_id, {"test_macro_f1": 0.64, "valid_macro_f1": 0.6})
    project.record_training(outer.info.run_id, result, {})
    note = MlflowClient().get_run(outer.info.run_id).data.tags[d.NOTE]
    assert f"[tfidf · seed 0](#/experiments/{experiment}/runs/{step.info.run_id}?{ML})" in note
    assert f"{_link('mmpc-tfidf', '2')} (test macro-F1 0.6400)" in note


# --- a retrain of the demo catalog (the session's pipeline) ------------------------------------------


@pytest.fixture
def retrained(e2e_store, pipeline_run):
    client = MlflowClient()
    parent = client.get_run(pipeline_run["result"]["parent_run_id"])
    return client, parent, pipeline_run["result"]


@pytest.mark.slow
def test_the_experiment_and_every_run_of_a_retrain_have_a_description(retrained):
    client, parent, _ = retrained
    experiment = client.get_experiment(parent.info.experiment_id)
    assert "Table 1" in experiment.tags[d.NOTE]
    steps = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    trained = [r for r in steps if r.data.tags.get(tag.STEP) in ("level1", "stack")]
    assert len(trained) == 6, [r.info.run_name for r in steps]
    for run in trained:
        note = run.data.tags.get(d.NOTE, "")
        assert "Registered as [mmpc-" in note and "test macro-F1 **" in note, run.info.run_name


@pytest.mark.slow
def test_the_retrain_run_holds_table1_and_the_promotion_decision(retrained):
    _, parent, result = retrained
    note, tags = parent.data.tags[d.NOTE], parent.data.tags
    version = result["ensemble"]["version"]
    assert note.startswith(f"**Retrain**: {_link(ENSEMBLE, version)}")
    for name, res in result["level1"].items():
        assert f"| {name} | {_link('mmpc-' + name, res['version'])} |" in note
    assert "| **stack** |" in note and "**Promotion**:" in note
    assert tags[tag.PROMOTED] == "True" and tags[tag.PROMOTION_REASON] == "no champion yet"
    assert tags[tag.CHAMPION_VERSION] == version
    assert parent.data.metrics[d.CANDIDATE_F1] == pytest.approx(result["ensemble"]["scores"]["stack"])


@pytest.mark.slow
def test_the_evaluation_run_is_nested_under_its_retrain(retrained):
    client, parent, result = retrained
    evaluation = client.get_run(result["ensemble"]["evaluation"]["run_id"])
    assert evaluation.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert evaluation.info.run_id in parent.data.tags[d.NOTE]


@pytest.mark.slow
def test_every_registered_model_and_version_has_a_description(retrained):
    client, _, result = retrained
    for model in client.search_registered_models():
        assert model.description, model.name
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            assert mv.description and mv.description.startswith("**test macro-F1 "), (mv.name, mv.version)
    champion = client.get_model_version_by_alias(ENSEMBLE, "champion")
    assert (
        f"**@champion: {_link(ENSEMBLE, champion.version)}**"
        in client.get_registered_model(ENSEMBLE).description
    )
    published = client.get_model_version(ENSEMBLE, result["ensemble"]["version"])
    for name, res in result["level1"].items():
        assert f"- {_link('mmpc-' + name, res['version'])}: test macro-F1" in published.description
    assert result["ensemble"]["evaluation"]["run_id"] in published.description
