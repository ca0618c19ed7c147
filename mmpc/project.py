"""MLflow Projects: what the entry points of ``mlflow run . -e <entry> -P ...`` add to a step.

The entry points (``MLproject``) are ``mmpc train|stack`` and ``python -m flows retrain``, parsed and
reported by mmpc's entry layer (``mmpc.cli``, ``mmpc.arguments``); this module nests their runs.

``mlflow run`` creates a run before it starts an entry point and hands its id over in
``MLFLOW_RUN_ID``. Left there, the first ``mlflow.start_run`` of the step would adopt that run
whatever experiment it lives in, and every later one would open a fresh run: a step's params,
metrics and model would land in the project's experiment (``Default`` unless ``--experiment-name``
was given) instead of the catalog's, and a pipeline's steps would lose their parent. So mmpc keeps
its own runs, exactly as ``mmpc train`` / ``python -m flows retrain`` make them, and nests them
under the project run:

- ``MLFLOW_RUN_ID`` is taken out of the environment;
- ``MLFLOW_RUN_CONTEXT`` adds ``mlflow.parentRunId`` (and ``mmpc.project_run_id``) to each run the
  step opens without a parent of its own (a pipeline's step runs keep the pipeline run as parent);
- when the step ends, the project run gets the outcome: the step's run id, the registered
  version, its test figures as metrics.

The project run is thus never empty (``mlflow run`` logs the ``-P`` parameters and the source
version; mmpc adds the outcome), and nothing is left RUNNING: ``mlflow run`` ends the project run
with the entry point's exit status. Run with ``--experiment-name mmpc/<catalog folder name>`` to see
the project run with its steps nested in the MLflow UI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mmpc import tags as tag

_RUN_ID, _CONTEXT = "MLFLOW_RUN_ID", "MLFLOW_RUN_CONTEXT"


@contextmanager
def project_run() -> Iterator[str | None]:
    """Within: runs opened without a parent nest under the ``mlflow run`` run (None outside one)."""
    run_id = os.environ.pop(_RUN_ID, None)
    if not run_id:
        yield None
        return
    previous = os.environ.get(_CONTEXT)
    context = {**json.loads(previous or "{}"), "mlflow.parentRunId": run_id, tag.PROJECT_RUN_ID: run_id}
    os.environ[_CONTEXT] = json.dumps(context)
    try:
        yield run_id
    finally:
        if previous is None:
            os.environ.pop(_CONTEXT, None)
        else:
            os.environ[_CONTEXT] = previous


def record_outcome(
    run_id: str | None, tags: Mapping[str, str], metrics: Mapping[str, float], note: str = ""
) -> None:
    """The step's outcome on the project run: where its results are, its headline figures, and a
    description linking the step's run and the version it registered (``note`` ends its sentence)."""
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    from mmpc import descriptions

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    step = tags.get(tag.STEP_RUN_ID) or tags.get(tag.PIPELINE_RUN_ID, "")
    score = metrics.get("test_macro_f1", metrics.get("stack_test_macro_f1"))
    name, version = tags[tag.REGISTERED_MODEL], tags[tag.REGISTERED_VERSION]
    descriptions.describe_project_run(run_id, step, name, version, score, note)


def record_training(run_id: str | None, result: Any, inputs: Mapping[str, str]) -> None:
    """A level-1 training's run, registered version, inputs and valid/test macro-F1."""
    from mmpc import tracking

    record_outcome(
        run_id,
        {
            tag.STEP_RUN_ID: result.run_id,
            tag.REGISTERED_MODEL: tracking.registered_name(result.name),
            tag.REGISTERED_VERSION: result.version,
            **{tag.input_version(n): v for n, v in inputs.items()},
        },
        {k: v for k, v in result.metrics.items() if k in ("valid_macro_f1", "test_macro_f1")},
    )


def record_stacking(run_id: str | None, result: Any, members: Mapping[str, str]) -> None:
    """A stacking's run, published ensemble version, its members and the stack's test macro-F1."""
    from mmpc import tracking

    record_outcome(
        run_id,
        {
            tag.STEP_RUN_ID: result.run_id,
            tag.REGISTERED_MODEL: tracking.registered_name("ensemble"),
            tag.REGISTERED_VERSION: result.version,
            tag.PROMOTED: str(result.promoted),
            **{tag.member(n): v for n, v in members.items()},
        },
        {"test_macro_f1": result.scores["stack"]},
        _promotion_note(result.promoted, result.reason),
    )


def record_pipeline(run_id: str | None, result: Mapping[str, Any]) -> None:
    """A ``retrain`` flow's pipeline run and the ensemble it published (or reused)."""
    published = result["ensemble"]
    record_outcome(
        run_id,
        {
            tag.PIPELINE_RUN_ID: result["parent_run_id"],
            tag.REGISTERED_MODEL: "mmpc-ensemble",
            tag.REGISTERED_VERSION: published["version"],
            tag.PROMOTED: str(published["promoted"]),
        },
        {"stack_test_macro_f1": published["scores"]["stack"]},
        _promotion_note(published["promoted"], published["reason"]),
    )


def _promotion_note(promoted: bool, reason: str) -> str:
    return f", {'promoted to @champion' if promoted else 'not promoted'}: {reason}"


def refs(text: str) -> dict[str, str]:
    """``"flaubert=3 camembert=@candidate"`` -> ``{"flaubert": "3", "camembert": "@candidate"}``."""
    from mmpc.arguments import words
    from mmpc.recipe import parse_refs

    return parse_refs(words(text))


def resolve_versions(wanted: Mapping[str, str]) -> dict[str, str]:
    """Version numbers of the named registered models; a missing one is bad input naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mmpc import outages, tracking
    from mmpc.recipe import RecipeError

    out = {}
    for name, ref in wanted.items():
        try:
            out[name] = str(tracking.resolve(name, ref).version)
        except MlflowException as exc:
            if outages.outage_message(exc):  # an unreachable registry is not a missing version
                raise
            raise RecipeError(
                f"{tracking.registered_name(name)} has no version {ref!r} in the registry at "
                f"{mlflow.get_registry_uri()}: train it first ({exc.message})"
            ) from None
    return out
