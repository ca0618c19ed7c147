"""Prefect flows over mmpc's pipeline steps: the only place Prefect is imported."""

import os

# mmpc's own log lines (epochs, scores, registrations) belong in the flow run's logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mmpc")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
