"""Models-from-code definition of the published ensemble (see mmpc.serving.EnsembleModel)."""

import mlflow

from mmpc.serving import EnsembleModel

mlflow.models.set_model(EnsembleModel())
