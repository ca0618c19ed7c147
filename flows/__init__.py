"""Prefect flows over mmpc's pipeline steps: the only place Prefect is imported."""

import logging
import os

# mmpc's own log lines (epochs, scores, reuse decisions, registrations) belong in the flow run's
# logs; Prefect forwards the loggers named here to its handlers (set before Prefect is imported).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mmpc")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
logging.getLogger("mmpc").setLevel(os.environ.get("MMPC_LOG_LEVEL", "INFO"))
