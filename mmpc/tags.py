"""Every MLflow run and model-version tag mmpc writes, by name: one home, so writers and readers agree.

Tags whose name ends in a model or split name are built by the functions below.
"""

from __future__ import annotations

# What a run is: the pipeline step, its recipe, seed and code, the catalog and data it read.
STEP = "mmpc.step"
RECIPE = "mmpc.recipe"
SEED = "mmpc.seed"
CODE_VERSION = "mmpc.code_version"
CATALOG = "mmpc.catalog"
DATA_FINGERPRINT = "mmpc.data_fingerprint"
FINGERPRINT_PREFIX = "mmpc.fingerprint."  # + split: the content fingerprint of that split
TEST_FINGERPRINT = FINGERPRINT_PREFIX + "test"  # what promotion compares: the same test split
MODEL = "mmpc.model"
KIND = "mmpc.kind"
RUN_ID = "mmpc.run_id"  # on a model version: the run that trained it

# Reuse and resume: what a level-1 training or a published ensemble depends on.
TRAIN_KEY = "mmpc.train_key"
PUBLISH_KEY = "mmpc.publish_key"
CHECKPOINT = "mmpc.checkpoint"  # a level-1 run's checkpoint key, set when the run is created

# Composition: the versions a fusion model or an ensemble was built from.
INPUT_PREFIX = "mmpc.input."
MEMBER_PREFIX = "mmpc.member."

# Promotion.
PROMOTED = "mmpc.promoted"
PROMOTION_REASON = "mmpc.promotion_reason"
CHAMPION_VERSION = "mmpc.champion_version"  # on a run carrying a decision: the champion after it
PREVIOUS_CHAMPION = "mmpc.previous_champion"  # ... and the champion it was compared with
PROMOTION_LOCK = "mmpc.promotion_lock"
CHAMPION_HISTORY = "mmpc.champion_history"

# Runs of the MLproject entry points and flows, and what they registered.
PROJECT_RUN_ID = "mmpc.project_run_id"
PIPELINE_RUN_ID = "mmpc.pipeline_run_id"
STEP_RUN_ID = "mmpc.step_run_id"
REGISTERED_MODEL = "mmpc.registered_model"
REGISTERED_VERSION = "mmpc.registered_version"
ENSEMBLE_VERSION = "mmpc.ensemble_version"

# Evaluation runs.
EVALUATED_MODEL = "mmpc.evaluated_model"
EVALUATED_VERSION = "mmpc.evaluated_version"
EVALUATED_RUN = "mmpc.evaluated_run"
SPLIT = "mmpc.split"
EVALUATION_PREFIX = "mmpc.evaluation."  # + catalog.split: a version's evaluation run on that split

# Scoring runs: the version that scored and where its output is.
SCORED_MODEL = "mmpc.scored_model"
SCORED_VERSION = "mmpc.scored_version"
SCORING_OUTPUT = "mmpc.scoring_output"

# Runs of processes that died: who ran them, and why they were failed.
HOST = "mmpc.host"
PID = "mmpc.pid"
PID_START = "mmpc.pid_start"
FAILED_REASON = "mmpc.failed_reason"


def fingerprint(split: str) -> str:
    return FINGERPRINT_PREFIX + split


def input_version(name: str) -> str:
    return INPUT_PREFIX + name


def member(name: str) -> str:
    return MEMBER_PREFIX + name
