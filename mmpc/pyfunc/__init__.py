"""Models-from-code entry files: MLflow copies one of these into each logged model."""
