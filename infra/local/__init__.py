"""PostgreSQL, S3 (SeaweedFS), an MLflow server and a Prefect server on 127.0.0.1, without containers:
``python -m infra.local up|down|status|env [--root DIR]``."""

from infra.local.processes import ServiceError
from infra.local.topology import Topology

__all__ = ["ServiceError", "Topology"]
