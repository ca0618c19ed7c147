"""Level-1 networks: pure torch / transformers / timm (no MLflow, no Prefect)."""
