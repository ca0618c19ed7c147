"""What every benchmark sets before MLflow, transformers or Prefect are imported: offline and quiet
(a variable already set by the caller wins)."""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


def prepare() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
