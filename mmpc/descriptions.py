"""The descriptions people read in the MLflow UI: the experiment, each retrain, level-1 and stack run,
each registered model and each version, in markdown.

Builders (``*_markdown``) are pure: plain values in, markdown out. Writers (``describe_*``) read what
a builder needs from the tracking store and set the description: the ``mlflow.note.content`` tag of
an experiment or a run (the UI shows it as the description), the ``description`` field of a
registered model or a version. Links are relative to the UI's address (``#/models/...``), so they
work wherever the UI is served.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlflow.entities import Experiment, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mmpc import tags as tag
from mmpc import tracking

NOTE = "mlflow.note.content"  # what the MLflow UI shows as an experiment's or a run's description
ENSEMBLE = tracking.registered_name("ensemble")
_ROWS = "data.rows."  # the run params holding each split's size (tracking.log_catalog)
_SPLIT_ORDER = ("train", "valid", "stack", "test")


@dataclass
class RunRef:
    """A run, for a link: its experiment, id and name."""

    experiment: str
    run_id: str
    name: str = ""


@dataclass
class Scored:
    """A registered version and its score: one line of Table 1 or of a version's members."""

    model: str  # flaubert, ..., or "stack"
    name: str  # the registered model, mmpc-<model>
    version: str
    score: float | None  # test macro-F1
    run: RunRef | None = None
    reused: bool = False


@dataclass
class Data:
    """What a run trained or was scored on."""

    catalog: str
    fingerprint: str = ""
    rows: dict[str, int] = field(default_factory=dict)  # by split


@dataclass
class Promotion:
    """A promotion decision and the two scores it compared."""

    promoted: bool
    reason: str
    candidate: str  # version
    candidate_score: float | None
    champion: str | None  # the champion after the decision
    compared: str | None = None  # the champion before the decision, if any
    compared_score: float | None = None


# --- pure builders ---------------------------------------------------------------------------------


def run_md(run: RunRef) -> str:
    return f"[{run.name or 'run ' + run.run_id[:8]}]({tracking.run_route(run.experiment, run.run_id)})"


def version_md(name: str, version: str) -> str:
    return f"[{name} v{version}]({tracking.version_route(name, version)})"


def _f1(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.4f}"


def data_md(data: Data) -> str:
    """``catalog `demo`, fingerprint `abc123def456`, splits train 600 · valid 100``."""
    text = f"catalog `{data.catalog}`"
    if data.fingerprint:
        text += f", fingerprint `{data.fingerprint[:12]}`"
    if data.rows:
        order = sorted(data.rows, key=lambda s: (*_SPLIT_ORDER, s).index(s))
        text += ", splits " + " · ".join(f"{s} {data.rows[s]}" for s in order)
    return text


def experiment_markdown(catalog: str) -> str:
    return "\n".join(
        [
            f"**mmpc on the product catalog `{catalog}`**: every run that trained, stacked, evaluated or "
            "scored a model on it (one experiment per catalog).",
            "",
            "How to read the runs:",
            "- **retrain** runs (`mmpc.step = pipeline`) are the pipeline: the description of each holds "
            "Table 1 (test macro-F1 of every model and of the stack) and the promotion decision; compare "
            "retrains on its `stack_test_macro_f1` metric. Its steps are nested under it:",
            "  - one run per level-1 model (`mmpc.step = level1`: the text, image, TF-IDF and fusion "
            "models of the recipe), each registering a version of `mmpc-<model>`;",
            "  - the **stack** run (`mmpc.step = stack`): the LightGBM stacker over those models' "
            "probabilities, registering a version of `mmpc-ensemble`;",
            "  - the **evaluation** run (`mmpc.step = evaluate`) of the published ensemble on the test "
            "split.",
            "- `mmpc-ensemble@champion` is the model served; `@candidate` is each model's latest version. "
            "See the [registered models](#/models).",
        ]
    )


def table1_markdown(rows: Sequence[Scored], stack: Scored) -> str:
    """Table 1: each level-1 model's test macro-F1, then the stack's, with versions and runs."""
    lines = ["| model | version | test macro-F1 | this retrain |", "|---|---|---|---|"]
    for r in [*rows, stack]:
        done = "reused (inputs unchanged)" if r.reused else ("published" if r is stack else "trained")
        if r.run is not None:
            done += f", {run_md(r.run)}"
        model, score = (f"**{r.model}**", f"**{_f1(r.score)}**") if r is stack else (r.model, _f1(r.score))
        lines.append(f"| {model} | {version_md(r.name, r.version)} | {score} | {done} |")
    return "\n".join(lines)


def decision_markdown(p: Promotion) -> str:
    """The promotion decision, its reason and the two scores compared."""
    what = "**promoted to @champion**" if p.promoted else "**not promoted**"
    line = f"{version_md(ENSEMBLE, p.candidate)} {what}: {p.reason}."
    scores = [f"candidate v{p.candidate}: test macro-F1 {_f1(p.candidate_score)}"]
    if p.compared:
        scores.append(f"champion before: v{p.compared}, {_f1(p.compared_score)}")
    champion = version_md(ENSEMBLE, p.champion) if p.champion else "none"
    return "\n".join([line, "", "; ".join(scores) + ".", "", f"Champion now: {champion}."])


def retrain_markdown(
    data: Data, rows: Sequence[Scored], stack: Scored, promotion: Promotion, evaluation: RunRef | None
) -> str:
    """A finished retrain: the decision in one line, Table 1, the decision's why, the evaluation."""
    verdict = "promoted to @champion" if promotion.promoted else "not promoted"
    lines = [
        f"**Retrain**: {version_md(ENSEMBLE, stack.version)}, test macro-F1 {_f1(stack.score)}, {verdict}.",
        "",
        f"Data: {data_md(data)}.",
        "",
        "**Table 1**: test macro-F1",
        "",
        table1_markdown(rows, stack),
        "",
        "**Promotion**: " + decision_markdown(promotion),
    ]
    if evaluation is not None:
        lines += ["", f"**Evaluation** of v{stack.version} on the test split: {run_md(evaluation)}."]
    return "\n".join(lines)


def failed_retrain_markdown(data: Data) -> str:
    return (
        f"**Retrain failed** before it published an ensemble. Data: {data_md(data)}. The nested runs "
        "show the step that failed (`mmpc.failed_reason`)."
    )


def level1_run_markdown(
    model: str, kind: str, scores: Mapping[str, float], version: str, inputs: Sequence[Scored], data: Data
) -> str:
    """A level-1 training run: what it trained, its scores, the version it registered."""
    name = tracking.registered_name(model)
    lines = [
        f"**{model}** ({kind}): test macro-F1 **{_f1(scores.get('test_macro_f1'))}**, valid macro-F1 "
        f"{_f1(scores.get('valid_macro_f1'))}. Registered as {version_md(name, version)}.",
    ]
    if inputs:
        links = ", ".join(version_md(i.name, i.version) for i in inputs)
        lines += ["", f"Reads the embeddings of {links}."]
    lines += ["", f"Trained on {data_md(data)}."]
    return "\n".join(lines)


def stack_run_markdown(members: Sequence[Scored], score: float | None, version: str, data: Data) -> str:
    """A stacking run: the LightGBM stacker over its members, Table 1, the version it registered."""
    lines = [
        f"**Stack** of {', '.join(m.model for m in members)}: LightGBM over their probabilities, fitted "
        f"on the `stack` split: test macro-F1 **{_f1(score)}**. Registered as "
        f"{version_md(ENSEMBLE, version)}.",
        "",
        "| model | version | test macro-F1 |",
        "|---|---|---|",
        *[f"| {m.model} | {version_md(m.name, m.version)} | {_f1(m.score)} |" for m in members],
        f"| **stack** | {version_md(ENSEMBLE, version)} | **{_f1(score)}** |",
        "",
        f"Data: {data_md(data)}.",
    ]
    return "\n".join(lines)


def version_markdown(
    scores: Mapping[str, float],  # by label ("test macro-F1"), the headline first
    members: Sequence[Scored],
    data: Data,
    trained_by: RunRef | None,
    evaluations: Mapping[str, RunRef],
    members_title: str = "Members",
) -> str:
    """A version: its scores first, then its members (or inputs) as links, its data, its evaluation."""
    shown = [f"{label} {value:.4f}" for label, value in scores.items()]
    lines = [" · ".join([f"**{shown[0]}**", *shown[1:]]) if shown else "No scores recorded."]
    if members:
        lines += ["", f"{members_title}:"]
        lines += [f"- {version_md(m.name, m.version)}: test macro-F1 {_f1(m.score)}" for m in members]
    lines += ["", f"Data: {data_md(data)}."]
    evaluated = [f"{run_md(r)} ({split})" for split, r in evaluations.items()]
    if trained_by is not None:
        evaluated.insert(0, f"{run_md(trained_by)} (the run that trained it)")
    if evaluated:
        lines += ["", "Evaluation: " + "; ".join(evaluated) + "."]
    return "\n".join(lines)


def registered_model_markdown(
    name: str,
    what: str,
    champion: Scored | None,
    candidate: Scored | None,
    history: Sequence[str] = (),
) -> str:
    """A registered model: what it is, and for the ensemble which version is @champion, its score."""
    lines = [f"**{name}**: {what}"]
    if name == ENSEMBLE:
        if champion is None:
            lines += ["", "**@champion: none yet.**"]
        else:
            lines += [
                "",
                f"**@champion: {version_md(name, champion.version)}**, test macro-F1 "
                f"**{_f1(champion.score)}**. Serving loads `models:/{name}@champion`.",
            ]
        if history:
            lines += ["", "Champions so far (oldest first): " + ", ".join(f"v{v}" for v in history) + "."]
    if candidate is not None:
        link = version_md(name, candidate.version)
        lines += ["", f"@candidate (latest): {link}, test macro-F1 {_f1(candidate.score)}."]
    return "\n".join(lines)


# --- writers ---------------------------------------------------------------------------------------


def describe_experiment(experiment: Experiment, catalog: str) -> None:
    """The experiment's description, once: one a person edited in the UI is kept."""
    tracking.set_experiment_tag_once(experiment, NOTE, experiment_markdown(catalog))


def describe_run(run_id: str, markdown: str) -> None:
    MlflowClient().set_tag(run_id, NOTE, markdown)


def run_ref(run: Run) -> RunRef:
    return RunRef(run.info.experiment_id, run.info.run_id, run.info.run_name or "")


def run_data(run: Run) -> Data:
    """The catalog, fingerprint and split sizes a run recorded (tracking.log_catalog)."""
    params, tags = run.data.params, run.data.tags
    rows = {k.removeprefix(_ROWS): int(v) for k, v in params.items() if k.startswith(_ROWS) and v.isdigit()}
    return Data(tags.get(tag.CATALOG, "?"), tags.get(tag.DATA_FINGERPRINT, ""), rows)


def _score(tags: Mapping[str, str]) -> float | None:
    value = tags.get("test_macro_f1")
    return float(value) if value else None


def _scored(name: str, version: str, client: MlflowClient) -> Scored:
    """A registered version and its test macro-F1 (its tag), for a link with a score."""
    model = name.removeprefix(tracking.REGISTRY_PREFIX)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:  # deleted since: still named, without a score
        return Scored(model, name, version, None)
    return Scored(model, name, version, _score(mv.tags))


def _linked(mv: ModelVersion, prefix: str, client: MlflowClient) -> list[Scored]:
    """The versions a version names by tag (an ensemble's members, a fusion model's inputs)."""
    refs = {k.removeprefix(prefix): v for k, v in mv.tags.items() if k.startswith(prefix)}
    return [_scored(tracking.registered_name(n), v, client) for n, v in refs.items()]


def _evaluations(mv: ModelVersion, client: MlflowClient) -> dict[str, RunRef]:
    """The evaluation runs named on the version (``mmpc.evaluation.<catalog>.<split>``)."""
    out = {}
    for key, run_id in sorted(mv.tags.items()):
        if key.startswith(tag.EVALUATION_PREFIX):
            try:
                out[key.removeprefix(tag.EVALUATION_PREFIX)] = run_ref(client.get_run(run_id))
            except MlflowException:  # the run was deleted
                continue
    return out


# A version's score tags, in the order its description lists them, and how they read.
_SCORE_TAGS = {
    "test_macro_f1": "test macro-F1",
    "valid_macro_f1": "valid macro-F1",
    "cv_macro_f1": "cross-validated macro-F1",
}


def _version_scores(mv: ModelVersion) -> dict[str, float]:
    return {label: float(mv.tags[k]) for k, label in _SCORE_TAGS.items() if mv.tags.get(k)}


def describe_version(mv: ModelVersion, run: Run | None = None) -> None:
    """A version's description: scores, members or inputs as links, data, evaluation runs."""
    client = MlflowClient()
    if run is None and mv.run_id:
        run = client.get_run(mv.run_id)
    members = _linked(mv, tag.MEMBER_PREFIX, client)
    title = "Members" if members else "Inputs"
    members = members or _linked(mv, tag.INPUT_PREFIX, client)
    data = (
        run_data(run) if run else Data(mv.tags.get(tag.CATALOG, "?"), mv.tags.get(tag.DATA_FINGERPRINT, ""))
    )
    text = version_markdown(
        _version_scores(mv), members, data, run_ref(run) if run else None, _evaluations(mv, client), title
    )
    client.update_model_version(mv.name, mv.version, description=text)


def _kind_summary(kind: str) -> str:
    """The first line of the kind's module docstring (``The text kind: a transformer encoder ...``)."""
    from mmpc import kinds  # the registry of kinds, only when a level-1 model is described

    try:
        doc = sys.modules[kinds.get(kind).config.__module__].__doc__ or ""
    except KeyError:
        return f"kind `{kind}`"
    first = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""
    return first[:1].lower() + first[1:] if first else f"kind `{kind}`"


def _what(name: str, kind: str | None) -> str:
    if name == ENSEMBLE:
        return (
            "mmpc's product-type classifier: a LightGBM stacker over the level-1 models' class "
            "probabilities (each version names its members below)."
        )
    model = name.removeprefix(tracking.REGISTRY_PREFIX)
    summary = _kind_summary(kind) if kind else "a level-1 model"
    return f"level-1 model `{model}` of mmpc ({summary}). Ensembles name the versions they stack."


def _alias(name: str, alias: str, client: MlflowClient) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def describe_registered_model(name: str) -> None:
    """A registered model's description; for ``mmpc-ensemble`` it names the current @champion."""
    client = MlflowClient()
    champion = _alias(name, tracking.CHAMPION, client)
    candidate = _alias(name, tracking.CANDIDATE, client)
    scored = [
        None if v is None else Scored(name, name, str(v.version), _score(v.tags))
        for v in (champion, candidate)
    ]
    history = client.get_registered_model(name).tags.get(tag.CHAMPION_HISTORY)
    kind = (candidate or champion).tags.get(tag.KIND) if (candidate or champion) else None
    text = registered_model_markdown(name, _what(name, kind), *scored, _history(history))
    client.update_registered_model(name, description=text)


def _history(raw: str | None) -> list[str]:
    """The champion history tag's versions, oldest first."""
    try:
        return [str(v) for v in json.loads(raw or "[]")]
    except ValueError:
        return []


def describe_training_run(mv: ModelVersion, run: Run) -> None:
    """The description of the level-1 or stack run that registered ``mv``."""
    client = MlflowClient()
    data, metrics = run_data(run), run.data.metrics
    members = _linked(mv, tag.MEMBER_PREFIX, client)
    if mv.name == ENSEMBLE:
        for m in members:  # the member's score on this test split, as the stacking run measured it
            m.score = metrics.get(f"test_macro_f1.{m.model}", m.score)
        score = metrics.get("test_macro_f1.stack", _score(mv.tags))
        text = stack_run_markdown(members, score, str(mv.version), data)
    else:
        model = mv.name.removeprefix(tracking.REGISTRY_PREFIX)
        kind = _kind_summary(mv.tags.get(tag.KIND, "")) if mv.tags.get(tag.KIND) else "level-1 model"
        inputs = _linked(mv, tag.INPUT_PREFIX, client)
        text = level1_run_markdown(model, kind, metrics, str(mv.version), inputs, data)
    describe_run(run.info.run_id, text)


def describe_registered(mv: ModelVersion) -> ModelVersion:
    """A newly registered version: its description, its run's and its registered model's."""
    run = MlflowClient().get_run(mv.run_id) if mv.run_id else None
    if run is not None:
        describe_training_run(mv, run)
    describe_version(mv, run)
    describe_registered_model(mv.name)
    return MlflowClient().get_model_version(mv.name, mv.version)


# --- the promotion decision and the retrain run ------------------------------------------------------

CANDIDATE_F1 = "promotion.candidate_test_macro_f1"  # metrics of a run that carries a decision
COMPARED_F1 = "promotion.champion_test_macro_f1"  # the champion's score it was compared with


def record_promotion(run_id: str, p: Promotion) -> None:
    """The decision on a run (the stack run, the retrain run): tags, and the two scores as metrics."""
    client = MlflowClient()
    tags = {
        tag.PROMOTED: str(p.promoted),
        tag.PROMOTION_REASON: p.reason,
        tag.CHAMPION_VERSION: p.champion or "",
        tag.PREVIOUS_CHAMPION: p.compared or "",
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    scores = {CANDIDATE_F1: p.candidate_score, COMPARED_F1: p.compared_score}
    for key, value in scores.items():
        if value is not None:
            client.log_metric(run_id, key, value)


def read_promotion(run: Run, candidate: str) -> Promotion | None:
    """The decision ``record_promotion`` wrote on ``run``, or None when there is none."""
    tags, metrics = run.data.tags, run.data.metrics
    if tag.PROMOTED not in tags:
        return None
    return Promotion(
        tags[tag.PROMOTED] == "True",
        tags.get(tag.PROMOTION_REASON, ""),
        candidate,
        metrics.get(CANDIDATE_F1),
        tags.get(tag.CHAMPION_VERSION) or None,
        tags.get(tag.PREVIOUS_CHAMPION) or None,
        metrics.get(COMPARED_F1),
    )


def _row(model: str, result: Mapping, score: float | None, client: MlflowClient) -> Scored:
    """One line of Table 1 from a step's result (``Level1Result`` / ``PublishResult`` as a dict)."""
    run = None
    if result.get("run_id"):
        try:
            run = run_ref(client.get_run(result["run_id"]))
        except MlflowException:
            run = None
    name = tracking.registered_name("ensemble" if model == "stack" else model)
    return Scored(model, name, str(result["version"]), score, run, bool(result.get("reused")))


def describe_retrain(run_id: str, level1: Mapping[str, Mapping], published: Mapping | None) -> None:
    """A retrain run's description: Table 1 and the promotion decision, or that it failed."""
    client = MlflowClient()
    run = client.get_run(run_id)
    if not published:
        describe_run(run_id, failed_retrain_markdown(run_data(run)))
        return
    rows = [_row(n, r, r.get("metrics", {}).get("test_macro_f1"), client) for n, r in level1.items()]
    stack = _row("stack", published, published["scores"].get("stack"), client)
    decision = read_promotion(run, stack.version) or Promotion(
        bool(published.get("promoted")),
        published.get("reason", ""),
        stack.version,
        stack.score,
        published.get("champion_version"),
    )
    ev = published.get("evaluation")
    evaluation = run_ref(client.get_run(ev["run_id"])) if ev else None
    describe_run(run_id, retrain_markdown(run_data(run), rows, stack, decision, evaluation))


# --- the run ``mlflow run`` creates around an entry point --------------------------------------------


def project_run_markdown(step: RunRef | None, name: str, version: str, score: float | None, note: str) -> str:
    """An MLflow Project run: the run its entry point made, and the version it registered."""
    made = run_md(step) if step else "its step's run"
    return (
        f"**MLflow Project run**: the entry point ran {made}, which registered {version_md(name, version)} "
        f"(test macro-F1 {_f1(score)}){note}."
    )


def describe_project_run(
    run_id: str, step_run_id: str, name: str, version: str, score: float | None, note: str = ""
) -> None:
    client = MlflowClient()
    try:
        step = run_ref(client.get_run(step_run_id))
    except MlflowException:
        step = None
    describe_run(run_id, project_run_markdown(step, name, version, score, note))
